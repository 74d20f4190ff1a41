"""Peak resident memory of each stage of a benchmark, measured in its one process.

Linux keeps a process's peak resident set (``VmHWM`` in ``/proc/self/status``) and lets the process
reset it to the current size (``5`` written to ``/proc/self/clear_refs``), so each stage's peak is
its own even though the stages share a process. Where that is unavailable the figure is the
process's peak so far (``ru_maxrss``), which only grows; :attr:`StagePeaks.per_stage` says which.

The reset also resets what the kernel reports as the process's maximum when it exits (``ru_maxrss``,
the figure ``/usr/bin/time -v`` prints), which then covers the last stage only: the process's peak is
the largest stage peak.
"""

from __future__ import annotations

import contextlib
import resource
from collections.abc import Iterator
from pathlib import Path

__all__ = ["StagePeaks", "format_peaks", "peak_rss_gb"]

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _reset_peak() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def peak_rss_gb() -> float:
    """The process's peak resident memory since the last reset (or since it started), in GB (10^9 bytes)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


class StagePeaks:
    """``with peaks.stage("ppo"): ...`` records the stage's peak resident memory in ``peaks.gb["ppo"]`` (the largest if repeated)."""

    def __init__(self) -> None:
        self.gb: dict[str, float] = {}
        self.per_stage = True

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.per_stage = _reset_peak() and self.per_stage
        try:
            yield
        finally:
            self.gb[name] = max(self.gb.get(name, 0.0), peak_rss_gb())


def format_peaks(gb: dict[str, float], per_stage: bool = True) -> str:
    """One line: each stage's peak, the largest first named."""
    if not gb:
        return ""
    cells = " · ".join(f"{name} {value:.1f}" for name, value in gb.items())
    how = "each stage's own peak" if per_stage else "the process's peak so far at the end of each stage"
    return f"Peak resident memory per stage (GB, {how}): {cells}; largest {max(gb.values()):.1f} GB ({max(gb, key=gb.__getitem__)})."
