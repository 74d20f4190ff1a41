"""Reward functions: pure batch functions over completions, usable offline and by the envs.

This package imports nothing else of toolenv's and no torch, so any process can score stored
data with it.
"""

from rewards.math import TRICE_SCORES, extract_number, numeric_match, round2_equal, trice_score, uses_tool

__all__ = ["TRICE_SCORES", "extract_number", "numeric_match", "round2_equal", "trice_score", "uses_tool"]
