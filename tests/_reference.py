"""A float64 NumPy reference of Fromage, written straight from the paper's update rule.

For every tensor W with gradient g and learning rate η:
  1. W' = W − η·(‖W‖/‖g‖)·g   if ‖W‖ > 0 and ‖g‖ > 0, else W' = W − η·g
  2. W' ← W' / √(1 + η²)
  3. with p_bound = p: if ‖W'‖ > p·‖W₀‖, W' ← W'·p‖W₀‖/‖W'‖
"""

from __future__ import annotations

import numpy as np


def _norm(x: np.ndarray, axes: tuple[int, ...] | None) -> np.ndarray:
    return np.sqrt(np.sum(np.square(x), axis=axes, keepdims=True))


def reference_step(param, grad, learning_rate, p_bound=None, initial_param=None, layer_axes=()):
    """One Fromage step for one tensor, in float64; per slice along `layer_axes`."""
    w = np.asarray(param, np.float64)
    g = np.asarray(grad, np.float64)
    eta = float(learning_rate)
    axes = tuple(a for a in range(w.ndim) if a not in layer_axes)
    w_norm, g_norm = _norm(w, axes), _norm(g, axes)
    use_ratio = (w_norm > 0) & (g_norm > 0)
    ratio = np.where(use_ratio, w_norm / np.where(use_ratio, g_norm, 1.0), 1.0)
    new = (w - eta * ratio * g) / np.sqrt(1.0 + eta**2)
    if p_bound is not None:
        bound = p_bound * _norm(np.asarray(initial_param, np.float64), axes)
        new_norm = _norm(new, axes)
        exceeds = new_norm > bound
        new = np.where(exceeds, new * bound / np.where(exceeds, new_norm, 1.0), new)
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


def relative_error(actual, expected) -> float:
    """‖actual − expected‖ / ‖expected‖ (absolute error when expected is 0)."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    scale = np.linalg.norm(expected.ravel())
    error = np.linalg.norm((actual - expected).ravel())
    return float(error / scale) if scale > 0 else float(error)
