"""Reward functions: pure batch functions over completions, usable offline and by the envs.

This package imports nothing else of toolenv's and no torch, so any process can score stored
data with it.
"""

from rewards.math import TRICE_SCORES, extract_number, numeric_match, round2_equal, trice_score, uses_tool
from rewards.preference import llm_preference, rule_preference, win_rate
from rewards.steps import (
    STEPTOOL_JUDGE_PROMPT,
    TASK_STATUS,
    Judge,
    call_succeeded,
    calls_match,
    contribution,
    format_steps,
    llm_judge,
    load_steptool_annotations,
    parse_judge_reply,
    parse_task_status,
    rescore,
    rule_judge,
    run_judge,
    step_rewards,
    steptool_step_terms,
    task_status,
)

__all__ = [
    "STEPTOOL_JUDGE_PROMPT",
    "TASK_STATUS",
    "TRICE_SCORES",
    "Judge",
    "call_succeeded",
    "calls_match",
    "contribution",
    "extract_number",
    "format_steps",
    "llm_judge",
    "llm_preference",
    "rule_preference",
    "win_rate",
    "load_steptool_annotations",
    "numeric_match",
    "parse_judge_reply",
    "parse_task_status",
    "rescore",
    "round2_equal",
    "rule_judge",
    "run_judge",
    "step_rewards",
    "steptool_step_terms",
    "task_status",
    "trice_score",
    "uses_tool",
]
