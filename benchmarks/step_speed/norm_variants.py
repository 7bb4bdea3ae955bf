"""Three Fromage steps, each one elementwise pass a·W + b·g per tensor after one norm pass.

They exist to measure a design question, not to be used: what does the exactness
of the norms at every scale cost on a given platform, and is a conditional (the
library's overflow fallback) or a branch-free norm pass the cheaper way to it?

* ``plain_sums_step``: one plain Σx² per tensor and source, no fallback. The
  fastest a step of this shape can be, but wrong outside the moderate range (a
  sum that over- or underflows gives a wrong step); the bound for any exact one.
* ``gated_plain_sums_step``: the same plain sums, with the fallback the library
  has: one `lax.cond` for the whole tree that, when some sum is out of range,
  recomputes every norm after scaling each tensor by a power of two. Exact at
  every scale; against ``plain_sums_step`` it measures what a conditional between
  the norms and the steps costs.
* ``three_scale_step``: Σx², Σ(x·2⁻⁶⁴)² and Σ(x·2⁶⁴)² in the same read, the plain
  one where it is in range: exact at every scale and branch-free.

All three group and stack tensors exactly as the library does (`_batching`) and
take the plain step ``W − ηg`` where a norm is 0; they differ from
`fromage_optax.fromage` in the norm pass and in forming b = −η‖W‖/(‖g‖√(1+η²))
directly (the library splits off a power of two so that it cannot under- or
overflow, which costs nothing measurable). No p_bound, no layer axes. A tensor
that is a group of its own gets its two numbers as scalars of their own: on
XLA:CPU a step that reads them through a slice of one stacked array ran 0.4x
SGD slower on 100 tensors of 2 MB, which would hide what the norm pass costs.
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
    return jnp.sqrt(_sum_of_squares(x, axes))


def _sum_of_squares(x, axes):
    return jnp.sum(x * x, axis=axes, keepdims=True)


def _gated_norms(groups, inputs):
    """Every group's norms behind one `lax.cond`: from the plain sums where all of them are
    in range, else (for the whole tree) after scaling each tensor by a power of two."""
    sums = [
        [_sum_of_squares(x, group.reduce_axes) for x in xs] for group, xs in zip(groups, inputs)
    ]
    trusted = jnp.all(jnp.stack([jnp.all(_batching.safe(s)) for pair in sums for s in pair]))
    return lax.cond(
        trusted,
        lambda sums, _: [[jnp.sqrt(s) for s in pair] for pair in sums],
        lambda _, inputs: [
            [_batching.rescaled_norms(group, [x], False)[0] for x in xs]
            for group, xs in zip(groups, inputs)
        ],
        sums,
        inputs,
    )


def _norm_scaled_step(
    learning_rate: float, norms=None, gated=False
) -> optax.GradientTransformation:
    eta = learning_rate
    shrink = 1 / (1 + eta * eta) ** 0.5

    def update_fn(updates, state, params):
        w_leaves, treedef = jax.tree.flatten(params)
        g_leaves = jax.tree.leaves(updates)
        count = len(w_leaves)
        groups = _batching.make_groups(w_leaves, g_leaves, [()] * count, [()] * count)
        inputs = [
            [
                x.astype(_batching.accumulation_dtype(x.dtype))
                for x in _batching.group_inputs(group, [w_leaves, g_leaves])
            ]
            for group in groups
        ]
        if gated:
            norm_pairs = _gated_norms(groups, inputs)
        else:
            norm_pairs = [
                [norms(x, group.reduce_axes) for x in xs] for group, xs in zip(groups, inputs)
            ]
        new = [None] * count
        for group, (w_norm, g_norm) in zip(groups, norm_pairs):
            use = (w_norm > 0) & (g_norm > 0)
            ratio = jnp.where(use, w_norm / jnp.where(use, g_norm, 1), 1)
            a, b = jnp.broadcast_arrays(shrink - 1.0, -shrink * eta * ratio)
            if group.stacked:
                coefficients = lax.optimization_barrier(jnp.stack([a, b]))
            for position, i in enumerate(group.indices):
                if group.stacked:
                    a, b = coefficients[:, position]
                new[i] = b * g_leaves[i] + a * w_leaves[i]
        return jax.tree.unflatten(treedef, new), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def plain_sums_step(learning_rate: float) -> optax.GradientTransformation:
    """The Fromage step from plain sums of squares only (inexact at extreme scales)."""
    return _norm_scaled_step(learning_rate, _plain_norms)


def gated_plain_sums_step(learning_rate: float) -> optax.GradientTransformation:
    """The Fromage step from plain sums, with the library's one-conditional fallback (exact)."""
    return _norm_scaled_step(learning_rate, gated=True)


def three_scale_step(learning_rate: float) -> optax.GradientTransformation:
    """The Fromage step from sums at three power-of-two scales in one read (branch-free)."""
    return _norm_scaled_step(learning_rate, _three_scale_norms)
