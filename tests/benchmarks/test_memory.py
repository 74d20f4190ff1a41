"""Per-stage peak memory: each stage's peak is its own, not the process's largest so far."""

from __future__ import annotations

import numpy as np
import pytest

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


_FRAGMENT = """
import sys
import numpy as np
from benchmarks.memory import cap_heap_retention

applied = cap_heap_retention(float(sys.argv[1]))
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
block = np.ones(2 * 2**20)  # a 16 MB block, mapped; freeing it raises glibc's mapping threshold to 16 MB
del block
blocks = [np.ones(2**20) for _ in range(40)]  # 40 blocks of 8 MB, touched
before = rss_mb()
del blocks[::2]  # free every other one: each freed block sits between two live ones
print(applied, before - rss_mb())
"""


def test_capped_heap_retention_returns_freed_blocks_between_live_ones() -> None:
    """glibc keeps freed heap blocks that sit between live ones; blocks mapped on their own go back on free."""
    import subprocess
    import sys

    def returned_mb(threshold_mb: float) -> tuple[bool, float]:
        out = subprocess.run([sys.executable, "-c", _FRAGMENT, str(threshold_mb)], capture_output=True, text=True, check=True).stdout.split()
        return out[0] == "True", float(out[1])

    applied, capped = returned_mb(4)
    if not applied:
        pytest.skip("not glibc: the allocator's thresholds cannot be set")
    default_applied, default = returned_mb(0)
    assert not default_applied
    assert capped > 150  # the 20 freed 8 MB blocks went back to the system
    assert default < 50  # under glibc's raised threshold they stayed in the heap
