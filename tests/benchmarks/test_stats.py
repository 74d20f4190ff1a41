"""The statistics behind every benchmark table, checked against values computed by hand or by brute force."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from benchmarks.stats import (
    bootstrap_ci,
    claim_line,
    compare,
    mcnemar_exact,
    paired_bootstrap_ci,
    permutation_p,
    unpaired_compare,
)


def test_mcnemar_equals_the_binomial_tail() -> None:
    # two-sided exact McNemar = 2 * P(Binomial(n, 1/2) <= min(b, c)), capped at 1
    for b, c in [(2, 0), (0, 16), (4, 8), (7, 4), (3, 3), (10, 1)]:
        n = b + c
        tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
        assert mcnemar_exact(b, c) == pytest.approx(min(1.0, 2 * tail))
    assert mcnemar_exact(0, 0) == 1.0
    # the held-out figure: 7 tasks only BC solves, 4 only RRHF -> p = 0.55
    assert round(mcnemar_exact(7, 4), 2) == 0.55


def test_permutation_p_is_exact_for_few_pairs() -> None:
    d = [0.5, 1.0, -0.25, 2.0, 0.0]
    nonzero = [x for x in d if x]
    observed = abs(np.mean(nonzero))
    flips = [abs(np.mean([s * x for s, x in zip(signs, nonzero)])) >= observed - 1e-12
             for signs in itertools.product((1, -1), repeat=len(nonzero))]
    assert permutation_p(d) == pytest.approx(np.mean(flips))
    assert permutation_p([0.0, 0.0]) == 1.0


def test_bootstrap_interval_matches_its_definition_and_is_seeded() -> None:
    x = np.array([1, 0, 1, 1, 0, 1, 0, 1, 1, 1], dtype=float)
    mean, lo, hi = bootstrap_ci(x, resamples=2000, seed=3)
    rng = np.random.default_rng(3)
    cols = rng.integers(0, x.size, size=(2000, x.size))
    means = x[cols].mean(axis=1)
    assert (mean, lo, hi) == (x.mean(), np.percentile(means, 2.5), np.percentile(means, 97.5))
    assert bootstrap_ci(x) == bootstrap_ci(x)  # the same numbers every time
    assert paired_bootstrap_ci([0.0] * 5) == (0.0, 0.0)


def test_two_way_bootstrap_covers_seed_spread() -> None:
    # three seeds that disagree entirely: resampling seeds widens the interval over the task-only one
    seeds = np.array([[1.0] * 20, [0.0] * 20, [1.0] * 20])
    _, lo, hi = bootstrap_ci(seeds)
    _, lo_tasks, hi_tasks = bootstrap_ci(seeds.mean(axis=0))
    assert lo_tasks == hi_tasks == pytest.approx(2 / 3)  # task resampling alone sees no spread
    assert lo <= 1 / 3 + 1e-9 and hi == 1.0


def test_strata_average_of_dataset_means() -> None:
    a, b = [1.0] * 10, [0.0, 1.0] * 20
    mean, lo, hi = bootstrap_ci(None, strata=[a, b])
    assert mean == pytest.approx(0.75)  # mean of the dataset means, not of the pooled episodes (0.6)
    assert lo < 0.75 < hi and hi <= 1.0


def test_compare_reads_differences_and_noise() -> None:
    better = compare([1] * 12, [0] * 10 + [1] * 2, names=("rl", "bc"))
    assert (better.only_a, better.only_b, better.test, better.verdict) == (10, 0, "McNemar", "better")
    noise = compare([1, 0, 1, 0, 1, 0], [0, 1, 0, 1, 1, 0])
    assert noise.verdict == "noise" and noise.p == 1.0
    worse = compare([0.0] * 30, [0.5] * 30)
    assert worse.test == "permutation" and worse.verdict == "worse"
    with pytest.raises(ValueError, match="equal shape"):
        compare([1, 0], [1, 0, 1])


def test_unpaired_and_claim_lines() -> None:
    c = unpaired_compare([1.0] * 30, [0.0] * 30, names=("on wrong", "on right"))
    assert c.difference == 1.0 and c.verdict == "better"
    assert claim_line("X", c).startswith("- **holds**: X")
    assert claim_line("X", unpaired_compare([0.0] * 30, [1.0] * 30)).startswith("- **reversed**")
    assert claim_line("X", compare([1, 0], [0, 1])).startswith("- **not shown**")
    assert claim_line("X", unpaired_compare([], [1.0])).startswith("- **not testable**")
