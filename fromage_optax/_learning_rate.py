"""The learning rate η at a step, and the norm-control factors derived from it."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
import optax


def learning_rate_at(learning_rate: optax.ScalarOrSchedule, count: Any) -> Any:
    """η at this step: the constant itself (kept a Python float if it is one) or schedule(count)."""
    return learning_rate(count) if callable(learning_rate) else learning_rate


class NormControl(NamedTuple):
    """a = 1/√(1+η²) and a − 1, the latter without cancellation for small η."""

    shrink: Any
    shrink_minus_one: Any


def norm_control(learning_rate: Any, dtype) -> NormControl:
    """Factors of step 2, W' ← W'/√(1+η²), in `dtype`."""
    eta = jnp.asarray(learning_rate, dtype)
    root = jnp.sqrt(1 + eta * eta)
    # 1/√(1+η²) − 1 = −η² / (√(1+η²)·(1 + √(1+η²))): exact to a few ulps even
    # for η = 1e-6, where the naive difference keeps no significant digits.
    return NormControl(1 / root, -(eta * eta) / (root * (1 + root)))
