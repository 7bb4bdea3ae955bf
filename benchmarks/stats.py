"""Means with their 95 % intervals, for results over seeds.

An interval is Student's t interval of the mean, ``mean ± t(0.975, n − 1) · s/√n``
with the sample standard deviation ``s``: for a few seeds it is wide, as it
should be. A paired comparison (two optimisers on the same seeds, so the same
initial params and batches) takes the interval of the per-seed differences,
which removes what the seeds share.

Example:
  >>> summary = mean_interval([1.0, 2.0, 3.0])
  >>> summary["mean"], round(summary["half_width"], 3), summary["n"]
  (2.0, 2.484, 3)
  >>> paired_difference({0: 1.5, 1: 2.0}, {0: 1.0, 1: 1.25, 2: 9.0})["values"]
  [0.5, 0.75]
  >>> verdict(mean_interval([0.1, 0.2, 0.15]))
  'higher'
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

LEVEL = 0.95


def t_quantile(probability: float, degrees_of_freedom: int) -> float:
    """The `probability` quantile of Student's t with `degrees_of_freedom` (scipy's)."""
    from scipy import stats

    return float(stats.t.ppf(probability, degrees_of_freedom))


def mean_interval(values: Sequence[float], level: float = LEVEL) -> dict:
    """Mean, sample std and the `level` t interval of the mean of `values`.

    Returns a dict with ``mean``, ``std``, ``half_width``, ``low``, ``high``,
    ``n`` and ``values``. With one value the std and interval are NaN (one seed
    says nothing about the spread); a non-finite value (a diverged run) makes
    the mean non-finite, so it cannot pass for a result.
    """
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        raise ValueError("mean_interval needs at least one value")
    mean = math.fsum(values) / n
    if n == 1 or not math.isfinite(mean):
        std = half = math.nan
    else:
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
        half = t_quantile(0.5 + level / 2, n - 1) * std / math.sqrt(n)
    return {
        "mean": mean,
        "std": std,
        "half_width": half,
        "low": mean - half,
        "high": mean + half,
        "n": n,
        "values": values,
    }


def paired_difference(a: Mapping[int, float], b: Mapping[int, float], level: float = LEVEL) -> dict:
    """`mean_interval` of ``a[seed] − b[seed]`` over the seeds both have, with ``seeds``."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError(f"no seed in common: {sorted(a)} and {sorted(b)}")
    return mean_interval([a[s] - b[s] for s in seeds], level) | {"seeds": seeds}


def format_interval(summary: Mapping, digits: int = 3, sign: bool = False) -> str:
    """``mean ± half_width`` (just the mean when there is no interval)."""
    spec = f"{'+' if sign else ''}.{digits}f"
    text = format(summary["mean"], spec)
    if math.isfinite(summary["half_width"]):
        text += f" ± {summary['half_width']:.{digits}f}"
    return text


def verdict(difference: Mapping) -> str:
    """ "lower", "higher" or "inside the noise": where the interval of a difference lies.

    "inside the noise" when the interval contains 0 or there is none (one
    seed, a diverged run): only an interval that excludes 0 decides.
    """
    low, high = difference["low"], difference["high"]
    if not (math.isfinite(low) and math.isfinite(high)) or low <= 0 <= high:
        return "inside the noise"
    return "lower" if high < 0 else "higher"
