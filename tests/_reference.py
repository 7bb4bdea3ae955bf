"""A float64 reference of Fromage, written straight from the paper's update rule.

For every tensor W with gradient g and learning rate η:
  1. W' = W − η·(‖W‖/‖g‖)·g   if ‖W‖ > 0 and ‖g‖ > 0, else W' = W − η·g
  2. W' ← W' / √(1 + η²)
  3. with p_bound = p: if ‖W'‖ > p·‖W₀‖, W' ← W'·p‖W₀‖/‖W'‖

Every function takes the array module as ``xp``: NumPy (the default) for values,
or ``jax.numpy`` under float64 (``jax_enable_x64``) for the derivatives and the
batched forms the composability battery compares against. Each step is written
once, for one tensor; the building blocks (steps 1, 2 and 3 on their own) are
here too, since the library ships them as transforms of their own.
"""

from __future__ import annotations

import numpy as np


def _norm(x, axes, xp=np):
    """‖x‖ over `axes` (keepdims), with derivative 0 (not NaN) where x is 0."""
    sum_of_squares = xp.sum(xp.square(x), axis=axes, keepdims=True)
    positive = sum_of_squares > 0
    return xp.where(positive, xp.sqrt(xp.where(positive, sum_of_squares, 1.0)), 0.0)


def _reduced_axes(x, layer_axes):
    return tuple(a for a in range(x.ndim) if a not in layer_axes)


def reference_scale(param, grad, layer_axes=(), xp=np):
    """Step 1's direction: g·‖W‖/‖g‖, or g where either norm is 0."""
    w, g = xp.asarray(param, xp.float64), xp.asarray(grad, xp.float64)
    axes = _reduced_axes(w, layer_axes)
    w_norm, g_norm = _norm(w, axes, xp), _norm(g, axes, xp)
    use_ratio = (w_norm > 0) & (g_norm > 0)
    ratio = xp.where(use_ratio, w_norm / xp.where(use_ratio, g_norm, 1.0), 1.0)
    return ratio * g


def reference_control(new_param, learning_rate, xp=np):
    """Step 2: W' / √(1 + η²)."""
    return xp.asarray(new_param, xp.float64) / xp.sqrt(1.0 + xp.square(learning_rate))


def reference_bound(new_param, initial_param, p_bound, layer_axes=(), xp=np):
    """Step 3: W' scaled back to p·‖W₀‖ where its norm exceeds that."""
    new = xp.asarray(new_param, xp.float64)
    axes = _reduced_axes(new, layer_axes)
    bound = p_bound * _norm(xp.asarray(initial_param, xp.float64), axes, xp)
    new_norm = _norm(new, axes, xp)
    exceeds = new_norm > bound
    return xp.where(exceeds, new * bound / xp.where(exceeds, new_norm, 1.0), new)


def reference_step(
    param, grad, learning_rate, p_bound=None, initial_param=None, layer_axes=(), xp=np
):
    """One Fromage step for one tensor, in float64; per slice along `layer_axes`."""
    w = xp.asarray(param, xp.float64)
    new = reference_control(
        w - learning_rate * reference_scale(w, grad, layer_axes, xp), learning_rate, xp
    )
    if p_bound is not None:
        new = reference_bound(new, initial_param, p_bound, layer_axes, xp)
    return new


def reference_tree_step(params, grads, learning_rate, p_bound=None, initial_params=None):
    """`reference_step` over matching dicts of arrays."""
    return {
        k: reference_step(
            params[k],
            grads[k],
            learning_rate,
            p_bound,
            None if initial_params is None else initial_params[k],
        )
        for k in params
    }


def reference_relative_update_norm(param, update, layer_axes=(), xp=np):
    """‖ΔW‖/‖W‖ (per slice along `layer_axes`, squeezed to their shape)."""
    w, u = xp.asarray(param, xp.float64), xp.asarray(update, xp.float64)
    axes = _reduced_axes(w, layer_axes)
    ratio = _norm(u, axes, xp) / _norm(w, axes, xp)
    return xp.reshape(ratio, tuple(w.shape[a] for a in layer_axes))


def relative_error(actual, expected) -> float:
    """‖actual − expected‖ / ‖expected‖ (absolute error when expected is 0)."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    scale = np.linalg.norm(expected.ravel())
    error = np.linalg.norm((actual - expected).ravel())
    return float(error / scale) if scale > 0 else float(error)
