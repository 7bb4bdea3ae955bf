"""Two Fromage steps, each one elementwise pass a·W + b·g per tensor after one norm pass.

They exist to measure a design question, not to be used: should the step keep a
conditional for the norms' overflow fallback, or accumulate every sum of squares
at three power-of-two scales in the one read and pick, per tensor, the one in
range (no conditional at all)?

* ``plain_sums_step``: one plain Σx² per tensor and source, no fallback. The
  fastest a step of this shape can be, but wrong outside the moderate range (a
  sum that over- or underflows gives a wrong step); the bound for any exact one.
* ``three_scale_step``: Σx², Σ(x·2⁻⁶⁴)² and Σ(x·2⁶⁴)² in the same read, the plain
  one where it is in range: exact at every scale and branch-free.

Both group and stack tensors exactly as the library does (`_batching`) and take
the plain step ``W − ηg`` where a norm is 0; they differ from `fromage_optax.fromage`
in the norm pass and in forming b = −η‖W‖/(‖g‖√(1+η²)) directly (the library splits
off a power of two so that it cannot under- or overflow, which costs nothing
measurable). No p_bound, no layer axes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jax import lax

from fromage_optax import _batching


def _three_scale_norms(x, axes):
    # The scales go through a barrier: XLA would otherwise rewrite (x·2⁶⁴)² as x²·2¹²⁸.
    down, up = lax.optimization_barrier((jnp.float32(2.0**-64), jnp.float32(2.0**64)))
    plain = jnp.sum(x * x, axis=axes, keepdims=True)
    large = jnp.sum(jnp.square(x * down), axis=axes, keepdims=True)
    small = jnp.sum(jnp.square(x * up), axis=axes, keepdims=True)
    low = float(jnp.finfo(jnp.float32).tiny) * 2.0**62
    in_range = (plain >= low) & (plain < jnp.inf)
    return jnp.where(
        in_range,
        jnp.sqrt(plain),
        jnp.where(plain < low, jnp.sqrt(small) * down, jnp.sqrt(large) * up),
    )


def _plain_norms(x, axes):
    return jnp.sqrt(jnp.sum(x * x, axis=axes, keepdims=True))


def _norm_scaled_step(learning_rate: float, norms) -> optax.GradientTransformation:
    eta = learning_rate
    shrink = 1 / (1 + eta * eta) ** 0.5

    def update_fn(updates, state, params):
        w_leaves, treedef = jax.tree.flatten(params)
        g_leaves = jax.tree.leaves(updates)
        count = len(w_leaves)
        groups = _batching.make_groups(w_leaves, g_leaves, [()] * count, [()] * count)
        new = [None] * count
        for group in groups:
            w, g = (
                x.astype(_batching.accumulation_dtype(x.dtype))
                for x in _batching.group_inputs(group, [w_leaves, g_leaves])
            )
            w_norm, g_norm = norms(w, group.reduce_axes), norms(g, group.reduce_axes)
            use = (w_norm > 0) & (g_norm > 0)
            ratio = jnp.where(use, w_norm / jnp.where(use, g_norm, 1), 1)
            coefficients = lax.optimization_barrier(
                jnp.stack(jnp.broadcast_arrays(shrink - 1.0, -shrink * eta * ratio))
            )
            for position, i in enumerate(group.indices):
                a, b = (coefficients[:, position] if group.stacked else coefficients)[:2]
                new[i] = b * g_leaves[i] + a * w_leaves[i]
        return jax.tree.unflatten(treedef, new), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def plain_sums_step(learning_rate: float) -> optax.GradientTransformation:
    """The Fromage step from plain sums of squares only (inexact at extreme scales)."""
    return _norm_scaled_step(learning_rate, _plain_norms)


def three_scale_step(learning_rate: float) -> optax.GradientTransformation:
    """The Fromage step from sums at three power-of-two scales in one read (branch-free)."""
    return _norm_scaled_step(learning_rate, _three_scale_norms)
