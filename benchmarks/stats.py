"""Confidence for every benchmark table: bootstrap intervals, paired comparisons, claim lines.

One way of stating uncertainty across ``bench trice``, ``bench steptool`` and ``bench ste``:

- a system's metric is the mean of per-episode outcomes, with a percentile **bootstrap 95 %
  interval** (:func:`bootstrap_ci`). Outcomes are a vector over test tasks, or a ``[seeds, tasks]``
  matrix when there are several training seeds: then seeds *and* tasks are resampled (a two-way
  bootstrap), so the interval covers both the choice of tasks and the training noise;
- a metric averaged over several datasets (TRICE's "average" row) resamples within each dataset
  (:func:`bootstrap_ci` with ``strata``);
- two systems evaluated on the same tasks are compared **paired** (:func:`compare`): the mean
  difference with its paired bootstrap interval, and a p-value — the exact McNemar test on the
  discordant pairs for 0/1 outcomes, a sign-flip permutation test otherwise;
- a **claim** (:func:`claim_line`) is a sentence from a paper with the comparison that tests it,
  read as ``holds`` (interval above zero, p < 0.05), ``reversed`` (below zero, p < 0.05) or
  ``not shown`` (the difference is within noise at this sample size).

Every resampling uses a fixed seed, so a table is the same each time it is printed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["RESAMPLES", "Comparison", "bootstrap_ci", "claim_line", "compare", "format_ci", "mcnemar_exact", "paired_bootstrap_ci",
           "permutation_p", "unpaired_compare"]

#: Bootstrap resamples behind every interval (the percentiles move by < 0.3 points between seeds at this count).
RESAMPLES = 5000
ALPHA = 0.05


def _as_matrix(values: Any) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"Expected outcomes as a non-empty vector [tasks] or matrix [seeds, tasks], got shape {np.shape(values)}.")
    return x


def _resampled_means(x: np.ndarray, rng: np.random.Generator, resamples: int) -> np.ndarray:
    """Means of ``resamples`` two-way bootstrap resamples of ``x`` [seeds, tasks]."""
    s, t = x.shape
    rows = rng.integers(0, s, size=(resamples, s)) if s > 1 else np.zeros((resamples, 1), dtype=np.int64)
    cols = rng.integers(0, t, size=(resamples, t))
    if s == 1:
        return x[0][cols].mean(axis=1)
    picked = x[rows]  # [resamples, s, t]
    return np.take_along_axis(picked, np.broadcast_to(cols[:, None, :], picked.shape), axis=2).mean(axis=(1, 2))


def _strata_means(strata: Sequence[Any], rng: np.random.Generator, resamples: int) -> tuple[float, np.ndarray]:
    """Mean over strata of each stratum's mean, and its bootstrap distribution (each stratum resampled alone)."""
    mats = [_as_matrix(s) for s in strata]
    point = float(np.mean([m.mean() for m in mats]))
    dist = np.mean([_resampled_means(m, rng, resamples) for m in mats], axis=0)
    return point, dist


def bootstrap_ci(values: Any, *, strata: Sequence[Any] | None = None, resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float, float]:
    """Mean and percentile bootstrap 95 % interval of per-episode outcomes.

    Args:
        values: Outcomes over test tasks ``[tasks]``, or ``[seeds, tasks]`` (both resampled).
            Ignored when ``strata`` is given.
        strata: Several such arrays (e.g. one per dataset): the statistic is the mean of their
            means, each resampled within itself.
        resamples: Bootstrap resamples.
        seed: Seed of the resampling (the same numbers every run).

    Returns:
        ``(mean, low, high)``.

    >>> bootstrap_ci([1.0] * 8)
    (1.0, 1.0, 1.0)
    >>> m, lo, hi = bootstrap_ci([0, 1] * 50)
    >>> m, lo < 0.45 and hi > 0.55
    (0.5, True)
    """
    rng = np.random.default_rng(seed)
    if strata is not None:
        point, dist = _strata_means(strata, rng, resamples)
    else:
        x = _as_matrix(values)
        point, dist = float(x.mean()), _resampled_means(x, rng, resamples)
    return point, float(np.percentile(dist, 2.5)), float(np.percentile(dist, 97.5))


def paired_bootstrap_ci(diffs: Any, *, resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """A percentile bootstrap 95 % interval of the mean of paired differences (seeded: the same numbers every run).

    >>> paired_bootstrap_ci([0.0] * 10)
    (0.0, 0.0)
    """
    _, lo, hi = bootstrap_ci(diffs, resamples=resamples, seed=seed)
    return lo, hi


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs (episodes only one side solves).

    >>> mcnemar_exact(0, 16), mcnemar_exact(4, 8), mcnemar_exact(3, 3)
    (3.0517578125e-05, 0.3876953125, 1.0)
    """
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)


def permutation_p(diffs: Any, *, resamples: int = RESAMPLES, seed: int = 0) -> float:
    """Two-sided sign-flip permutation p-value of the mean of paired differences (exact up to 12 pairs).

    >>> permutation_p([1.0, 1.0, 1.0])
    0.25
    """
    d = np.asarray(diffs, dtype=np.float64).ravel()
    d = d[d != 0]
    if d.size == 0:
        return 1.0
    observed = abs(d.mean())
    if d.size <= 12:  # every sign pattern
        signs = np.array([[1 - 2 * ((k >> i) & 1) for i in range(d.size)] for k in range(2**d.size)], dtype=np.float64)
        return float(np.mean(np.abs((signs * d).mean(axis=1)) >= observed - 1e-12))
    rng = np.random.default_rng(seed)
    signs = rng.choice((-1.0, 1.0), size=(resamples, d.size))
    return float((1 + np.sum(np.abs((signs * d).mean(axis=1)) >= observed - 1e-12)) / (resamples + 1))


@dataclass(frozen=True)
class Comparison:
    """System ``a`` against system ``b`` on the same episodes (``a − b``)."""

    a: str
    b: str
    n: int  # paired episodes
    difference: float
    low: float
    high: float
    p: float
    test: str  # "McNemar" or "permutation" (or "bootstrap" for unpaired samples)
    only_a: int | None = None  # 0/1 outcomes: episodes only a solves
    only_b: int | None = None

    @property
    def verdict(self) -> str:
        """``"better"``, ``"worse"`` or ``"noise"`` at 95 %."""
        if self.p < ALPHA and self.low > 0:
            return "better"
        if self.p < ALPHA and self.high < 0:
            return "worse"
        return "noise"

    def as_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "n": self.n, "difference": self.difference, "ci95": [self.low, self.high], "p": self.p,
                "test": self.test, "only_a": self.only_a, "only_b": self.only_b, "verdict": self.verdict}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Comparison:
        """The inverse of :meth:`as_dict` (extra keys, such as a ``"metric"`` label, are ignored)."""
        return cls(d["a"], d["b"], d["n"], d["difference"], d["ci95"][0], d["ci95"][1], d["p"], d["test"], d["only_a"], d["only_b"])


def _binary(x: np.ndarray) -> bool:
    return bool(np.all((x == 0) | (x == 1)))


def compare(a: Any, b: Any, *, names: tuple[str, str] = ("a", "b"), strata: Sequence[tuple[Any, Any]] | None = None) -> Comparison:
    """Paired comparison of two systems' outcomes on the same episodes.

    Args:
        a, b: Outcomes of the same shape (``[tasks]`` or ``[seeds, tasks]``, episode ``i`` of one
            paired with episode ``i`` of the other). Ignored when ``strata`` is given.
        names: The systems' names, for the report.
        strata: Pairs ``(a_k, b_k)`` per dataset: the difference is that of the mean of dataset
            means, resampled within each dataset; the test pools every pair.

    Returns:
        A :class:`Comparison`: difference ``mean(a) − mean(b)``, its paired bootstrap 95 %
        interval and a p-value (exact McNemar for 0/1 outcomes, sign-flip permutation otherwise).

    >>> c = compare([1, 1, 1, 1, 1, 1, 0, 1], [0, 0, 0, 0, 0, 0, 0, 1], names=("bc", "zero-shot"))
    >>> c.difference, c.only_a, c.only_b, round(c.p, 4), c.verdict
    (0.75, 6, 0, 0.0312, 'better')
    """
    if strata is not None:
        pairs = [(_as_matrix(x), _as_matrix(y)) for x, y in strata]
        for x, y in pairs:
            if x.shape != y.shape:
                raise ValueError(f"Expected paired outcomes of equal shape, got {x.shape} and {y.shape}.")
        point, lo, hi = bootstrap_ci(None, strata=[x - y for x, y in pairs])
        xa = np.concatenate([x.ravel() for x, _ in pairs])
        xb = np.concatenate([y.ravel() for _, y in pairs])
    else:
        ma, mb = _as_matrix(a), _as_matrix(b)
        if ma.shape != mb.shape:
            raise ValueError(f"Expected paired outcomes of equal shape, got {ma.shape} and {mb.shape}.")
        point, lo, hi = bootstrap_ci(ma - mb)
        xa, xb = ma.ravel(), mb.ravel()
    if _binary(xa) and _binary(xb):
        only_a = int(np.sum((xa == 1) & (xb == 0)))
        only_b = int(np.sum((xa == 0) & (xb == 1)))
        return Comparison(names[0], names[1], int(xa.size), point, lo, hi, mcnemar_exact(only_a, only_b), "McNemar", only_a, only_b)
    return Comparison(names[0], names[1], int(xa.size), point, lo, hi, permutation_p(xa - xb), "permutation")


def unpaired_compare(a: Sequence[float], b: Sequence[float], *, names: tuple[str, str] = ("a", "b"), resamples: int = RESAMPLES,
                     seed: int = 0) -> Comparison:
    """``mean(a) − mean(b)`` for two independent samples: bootstrap interval and permutation p-value.

    For outcomes on *different* episodes (e.g. tool use on questions the base model answers
    right against those it gets wrong).

    >>> c = unpaired_compare([0.0] * 20, [1.0] * 20)
    >>> c.difference, c.verdict
    (-1.0, 'worse')
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.size == 0 or y.size == 0:
        return Comparison(names[0], names[1], 0, float("nan"), float("nan"), float("nan"), 1.0, "bootstrap")
    rng = np.random.default_rng(seed)
    dist = (x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
            - y[rng.integers(0, y.size, size=(resamples, y.size))].mean(axis=1))
    observed = x.mean() - y.mean()
    pooled = np.concatenate([x, y])
    perm = np.array([rng.permutation(pooled) for _ in range(min(resamples, 2000))])
    null = perm[:, : x.size].mean(axis=1) - perm[:, x.size:].mean(axis=1)
    p = float((1 + np.sum(np.abs(null) >= abs(observed) - 1e-12)) / (null.size + 1))
    return Comparison(names[0], names[1], int(x.size + y.size), float(observed), float(np.percentile(dist, 2.5)),
                      float(np.percentile(dist, 97.5)), p, "bootstrap")


def format_ci(mean: float, low: float, high: float, *, scale: float = 100.0, digits: int = 1) -> str:
    """``"49.2 [44.0, 54.5]"`` (percent by default).

    >>> format_ci(0.5, 0.4, 0.6)
    '50.0 [40.0, 60.0]'
    """
    if math.isnan(mean):
        return "–"
    return f"{scale * mean:.{digits}f} [{scale * low:.{digits}f}, {scale * high:.{digits}f}]"


def format_comparison(c: Comparison, *, label: str = "", scale: float = 100.0, unit: str = "pts") -> str:
    """One table row's cells: ``a − b (label) | n | diff | interval | discordant | p | reading``."""
    name = f"{c.a} − {c.b}" + (f" ({label})" if label else "")
    discordant = f"{c.only_a} / {c.only_b}" if c.only_a is not None else "–"
    reading = {"better": f"{c.a} better", "worse": f"{c.a} worse", "noise": "noise: no difference this run can see"}[c.verdict]
    if math.isnan(c.difference):
        return f"| {name} | {c.n} | – | – | – | – | no episodes |"
    return (f"| {name} | {c.n} | {scale * c.difference:+.1f} {unit} | [{scale * c.low:+.1f}, {scale * c.high:+.1f}] | "
            f"{discordant} | {c.p:.2g} ({c.test}) | {reading} |")


COMPARISON_HEADER = ("| comparison | episodes | difference | 95 % interval | only first / only second | p (test) | reading |\n"
                     "|---|---:|---:|---:|---:|---:|---|")


def claim_line(claim: str, c: Comparison, *, source: str = "") -> str:
    """A paper's claim and whether this run shows it at 95 % confidence.

    >>> claim_line("BC beats zero-shot", compare([1] * 10, [0] * 10, names=("bc", "zero-shot")), source="TRICE")
    '- **holds**: BC beats zero-shot (TRICE) — bc − zero-shot = +100.0 pts [+100.0, +100.0], p = 0.002.'
    """
    word = {"better": "**holds**", "worse": "**reversed**", "noise": "**not shown**"}[c.verdict]
    where = f" ({source})" if source else ""
    if math.isnan(c.difference):
        return f"- **not testable**: {claim}{where} — no episodes on one side."
    return (f"- {word}: {claim}{where} — {c.a} − {c.b} = {100 * c.difference:+.1f} pts [{100 * c.low:+.1f}, {100 * c.high:+.1f}], "
            f"p = {c.p:.2g}.")
