"""Per-stage peak memory: each stage's peak is its own, not the process's largest so far."""

from __future__ import annotations

import numpy as np

from benchmarks.memory import StagePeaks, format_peaks, peak_rss_gb


def test_a_small_stage_after_a_large_one_reports_its_own_peak() -> None:
    peaks = StagePeaks()
    with peaks.stage("large"):
        block = np.ones(400_000_000 // 8)  # 0.4 GB, touched
        del block
    with peaks.stage("small"):
        block = np.ones(50_000_000 // 8)
        del block
    assert peaks.gb["large"] >= peak_rss_gb() - 0.01 and peaks.gb["large"] > 0.35
    if peaks.per_stage:  # Linux: the peak was reset at the stage's start
        assert peaks.gb["small"] < peaks.gb["large"] - 0.25
    else:
        assert peaks.gb["small"] >= peaks.gb["large"]
    line = format_peaks(peaks.gb, peaks.per_stage)
    assert line.startswith("Peak resident memory per stage") and "large" in line.split("largest")[1]
