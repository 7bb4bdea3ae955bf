"""The learning rate η at a step."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import optax


def learning_rate_at(learning_rate: optax.ScalarOrSchedule, count: Any, name: str) -> Any:
    """η at this step: the constant itself (kept a Python float if it is one) or schedule(count).

    Raises a ValueError if the value is not a scalar: Fromage's η is one relative
    step size, and a vector would broadcast differently for every group of tensors.
    """
    eta = learning_rate(count) if callable(learning_rate) else learning_rate
    if jnp.ndim(eta) != 0:
        source = "the learning-rate schedule returned" if callable(learning_rate) else "got"
        raise ValueError(
            f"{name}: learning_rate must be a scalar; {source} an array of shape "
            f"{jnp.shape(eta)}. Use a schedule that returns one number per step (for per-tensor "
            "rates, give each group of tensors its own optimiser with optax.multi_transform)."
        )
    if jnp.iscomplexobj(eta):
        raise TypeError(f"{name}: learning_rate must be real, got a complex value.")
    return eta
