"""Tests for benchmarks/stats.py: t intervals of means over seeds, paired differences."""

import math

import numpy as np
import pytest

from benchmarks import stats


def test_interval_is_students_t():
    values = [1.25, 1.5, 1.0, 1.75, 1.5]
    summary = stats.mean_interval(values)
    # t(0.975, 4) = 2.776445 (tables); s = sample std.
    half = 2.776445 * np.std(values, ddof=1) / math.sqrt(5)
    assert summary["mean"] == pytest.approx(1.4)
    assert summary["half_width"] == pytest.approx(half, rel=1e-6)
    assert (summary["low"], summary["high"]) == pytest.approx((1.4 - half, 1.4 + half))
    assert stats.t_quantile(0.975, 2) == pytest.approx(4.302653, rel=1e-6)


def test_one_seed_has_no_interval_and_a_diverged_run_no_mean():
    one = stats.mean_interval([2.0])
    assert one["mean"] == 2.0 and math.isnan(one["half_width"])
    assert stats.format_interval(one) == "2.000"
    diverged = stats.mean_interval([1.0, math.nan, 1.2])
    assert math.isnan(diverged["mean"]) and math.isnan(diverged["half_width"])
    with pytest.raises(ValueError, match="at least one value"):
        stats.mean_interval([])


def test_paired_difference_uses_common_seeds_only():
    a = {0: 1.30, 1: 1.35, 2: 1.25, 3: 9.0}
    b = {0: 1.20, 1: 1.26, 2: 1.14}
    paired = stats.paired_difference(a, b)
    assert paired["seeds"] == [0, 1, 2]
    assert paired["values"] == pytest.approx([0.10, 0.09, 0.11])
    # Pairing removes what a seed shares: the interval is far narrower than unpaired ones.
    assert paired["half_width"] < stats.mean_interval(list(b.values()))["half_width"] / 2
    assert stats.format_interval(paired, sign=True) == f"+0.100 ± {paired['half_width']:.3f}"
    with pytest.raises(ValueError, match="no seed in common"):
        stats.paired_difference({0: 1.0}, {1: 1.0})


def test_verdict_needs_an_interval_that_excludes_zero():
    assert stats.verdict(stats.mean_interval([-0.3, -0.2, -0.25])) == "lower"
    assert stats.verdict(stats.mean_interval([0.3, 0.2, 0.25])) == "higher"
    assert stats.verdict(stats.mean_interval([-0.3, 0.2, 0.05])) == "inside the noise"
    assert stats.verdict(stats.mean_interval([-0.3])) == "inside the noise"  # one seed
