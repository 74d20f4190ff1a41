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
import ctypes
import ctypes.util
import resource
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["StagePeaks", "add_mmap_threshold_argument", "cap_heap_retention", "check_mmap_threshold", "format_peaks", "peak_rss_gb"]

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


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def cap_heap_retention(threshold_mb: float) -> bool:
    """Serve every allocation of ``threshold_mb`` MB or more from its own mapping, unmapped when freed.

    glibc maps large blocks itself and unmaps them on free, but each time a mapped block is freed
    it raises that threshold to the block's size (up to 32 MB), so that after a few steps a
    training loop's activations and logit chunks come from the heap, whose freed space the process
    keeps: ``bench steptool``'s DPO stage held 6.7 GB at its peak for about 2 GB of live tensors.
    Fixing the threshold (``mallopt(M_MMAP_THRESHOLD)``, which also stops the raising, and
    ``M_TRIM_THRESHOLD``, the same as the ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``
    variables but settable after start) keeps the peak near the live size, at the cost of a page
    fault per fresh page of each large block. Returns whether it applied: ``False`` without glibc
    or for ``threshold_mb <= 0`` (the allocator's default).
    """
    if threshold_mb <= 0:
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    size = int(threshold_mb * 2**20)
    return bool(mallopt(_M_MMAP_THRESHOLD, size)) and bool(mallopt(_M_TRIM_THRESHOLD, size))


def add_mmap_threshold_argument(parser: Any, preset_default: str) -> None:
    """``--mmap-threshold-mb`` of a benchmark's command line (``None`` when not given: the preset's)."""
    parser.add_argument("--mmap-threshold-mb", type=int, default=None,
                        help=f"allocations from this size (MB) up are returned to the system when freed ({preset_default}; 0: glibc's default)")


def check_mmap_threshold(value: int | None) -> None:
    """A one-line error for a negative ``--mmap-threshold-mb``."""
    if value is not None and value < 0:
        raise ValueError(f"Expected --mmap-threshold-mb >= 0 (0: glibc's default), got {value}.")


def format_peaks(gb: dict[str, float], per_stage: bool = True) -> str:
    """One line: each stage's peak, the largest first named."""
    if not gb:
        return ""
    cells = " · ".join(f"{name} {value:.1f}" for name, value in gb.items())
    how = "each stage's own peak" if per_stage else "the process's peak so far at the end of each stage"
    return f"Peak resident memory per stage (GB, {how}): {cells}; largest {max(gb.values()):.1f} GB ({max(gb, key=gb.__getitem__)})."
