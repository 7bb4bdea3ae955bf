"""Per-tensor (or per-layer-slice) Frobenius norms: exact, overflow-proof and fast.

Fromage needs, for every tensor W with update g, ‖W‖, ‖g‖ and (for p_bound)
the cosine ⟨W, g⟩ / (‖W‖‖g‖). This module computes them

* **in one read of each tensor** in the common case: plain sums of squares,
  accumulated in at least float32 (bfloat16/float16 inputs are upcast);
* **without overflow or underflow** for any scale: a sum of squares that is not
  comfortably inside the floating-point range (it overflowed, or is so small
  that flushed subnormal squares could matter, or is zero) is recomputed with
  every tensor first scaled by a power of two taken from its max-abs value.
  That fallback sits behind one `lax.cond` for the whole tree (and one per
  group inside it), so it costs nothing unless a tensor needs it;
* **with few kernels** for trees of many small tensors: small tensors of the
  same shape and dtype are stacked and reduced together;
* **per layer slice** when `layer_axes` names axes that index separate layers,
  and **globally** across devices when `axis_names` names mesh axes (the sums
  are `psum`-ed, the max-abs values `pmax`-ed).

Every norm comes back with `keepdims=True` shapes (size 1 on the reduced axes),
so it broadcasts against its tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

# Tensors with at most this many elements are stacked with same-shaped peers
# and reduced together: for small tensors the per-kernel overhead dominates,
# for large ones stacking would cost a copy.
GROUP_MAX_SIZE = 1 << 16


class PairStats(NamedTuple):
    """Norms of a parameter tensor and its update, and their cosine."""

    param_norm: jax.Array
    update_norm: jax.Array
    cosine: jax.Array | None


def accumulation_dtype(dtype) -> jnp.dtype:
    """The dtype norms are accumulated in: float32, or the input's if wider."""
    return jnp.promote_types(dtype, jnp.float32)


def _psum(x, axis_names):
    return lax.psum(x, axis_names) if axis_names else x


def _pmax(x, axis_names):
    return lax.pmax(x, axis_names) if axis_names else x


def _power_of_two_scale(max_abs):
    """2**-e with max_abs * 2**-e in [0.5, 1), kept inside the normal range."""
    info = jnp.finfo(max_abs.dtype)
    _, exponent = jnp.frexp(max_abs)
    exponent = jnp.clip(exponent, info.minexp + 2, info.maxexp - 2)
    return jnp.ldexp(jnp.ones_like(max_abs), -exponent)


def _safe_range(dtype):
    """Sums of squares in [low, inf) are trusted; anything else is recomputed."""
    info = jnp.finfo(dtype)
    # 2**62 above the smallest normal: even 2**30 flushed subnormal squares
    # change such a sum by less than 2**-32 of its value.
    return float(info.tiny) * 2.0**62


class _Group(NamedTuple):
    indices: tuple[int, ...]
    reduce_axes: tuple[int, ...]
    axis_names: tuple[str, ...]
    stacked: bool


def _layout_key(x, position: int):
    """What two tensors must share to be stacked without moving data between devices.

    Under a mesh with Explicit axes the layout is part of the type: tensors with
    the same PartitionSpec stack in place (others would not even type-check).
    Under Auto axes of size > 1 (classic jit + NamedSharding) the layout is not
    known while tracing, and stacking differently laid out tensors would make XLA
    reshard one of them, so such tensors are not stacked. Without a mesh, or on
    the local shards inside shard_map, any tensors stack.
    """
    typeof = getattr(jax, "typeof", None)  # jax >= 0.6
    try:
        sharding = getattr(typeof(x), "sharding", None) if typeof is not None else None
    except TypeError:
        return None
    mesh = getattr(sharding, "mesh", None)
    if mesh is None or getattr(mesh, "empty", True):
        return None
    auto_axes = set(getattr(mesh, "auto_axes", ()))
    if any(size > 1 for name, size in mesh.shape.items() if name in auto_axes):
        return ("not stacked", position)
    return sharding.spec


def _make_groups(
    tensors: Sequence[jax.Array],
    partners: Sequence[jax.Array] | None,
    layer_axes: Sequence[tuple[int, ...]],
    axis_names: Sequence[tuple[str, ...]],
) -> list[_Group]:
    buckets: dict[tuple, list[int]] = {}
    singles: list[int] = []
    for i, x in enumerate(tensors):
        if x.size <= GROUP_MAX_SIZE:
            key = (
                x.shape,
                x.dtype,
                None if partners is None else partners[i].dtype,
                layer_axes[i],
                axis_names[i],
                _layout_key(x, i),
                None if partners is None else _layout_key(partners[i], i),
            )
            buckets.setdefault(key, []).append(i)
        else:
            singles.append(i)
    groups = []
    for i in singles:
        axes = tuple(a for a in range(tensors[i].ndim) if a not in layer_axes[i])
        groups.append(_Group((i,), axes, axis_names[i], stacked=False))
    for (shape, *_), members in buckets.items():
        first = members[0]
        axes = tuple(a for a in range(len(shape)) if a not in layer_axes[first])
        if len(members) == 1:
            groups.append(_Group((first,), axes, axis_names[first], stacked=False))
        else:
            shifted = tuple(a + 1 for a in axes)
            groups.append(_Group(tuple(members), shifted, axis_names[first], stacked=True))
    return groups


def _group_input(group: _Group, tensors: Sequence[jax.Array]) -> jax.Array:
    if group.stacked:
        return jnp.stack([tensors[i] for i in group.indices])
    return tensors[group.indices[0]]


def _fast_sums(xs, reduce_axes, axis_names, with_dot):
    """Sums of squares (and the inner product) of 1 or 2 same-shaped tensors."""
    acc = [x.astype(accumulation_dtype(x.dtype)) for x in xs]
    sums = [jnp.sum(a * a, axis=reduce_axes, keepdims=True) for a in acc]
    if with_dot:
        sums.append(jnp.sum(acc[0] * acc[1], axis=reduce_axes, keepdims=True))
    return [_psum(s, axis_names) for s in sums]


def _needs_rescaling(sums_of_squares) -> jax.Array:
    bad = [~((s >= _safe_range(s.dtype)) & (s < jnp.inf)) for s in sums_of_squares]
    return jnp.any(jnp.stack([jnp.any(b) for b in bad]))


def _stats_from_sums(sums, with_dot):
    norms = [jnp.sqrt(s) for s in sums[: len(sums) - int(with_dot)]]
    if with_dot:
        cosine = sums[-1] / norms[0] / norms[1]
        return norms, cosine
    return norms, None


def _rescaled_stats(xs, reduce_axes, axis_names, with_dot):
    """Norms (and cosine) of tensors scaled by powers of two before squaring."""
    scaled, scales = [], []
    for x in xs:
        a = x.astype(accumulation_dtype(x.dtype))
        max_abs = _pmax(jnp.max(jnp.abs(a), axis=reduce_axes, keepdims=True), axis_names)
        scale = _power_of_two_scale(max_abs)
        scaled.append(a * scale)
        scales.append(scale)
    sums = [_psum(jnp.sum(s * s, axis=reduce_axes, keepdims=True), axis_names) for s in scaled]
    norms = [jnp.sqrt(s) / scale for s, scale in zip(sums, scales)]
    if with_dot:
        dot = _psum(jnp.sum(scaled[0] * scaled[1], axis=reduce_axes, keepdims=True), axis_names)
        cosine = dot / jnp.sqrt(sums[0]) / jnp.sqrt(sums[1])
        return norms, cosine
    return norms, None


def _cond(predicate, true_fn, false_fn, *operands):
    """`lax.cond`, or a plain Python branch when the predicate is already known.

    Outside `jit` the predicate is a concrete array: branching in Python avoids
    compiling both branches on every eager call.
    """
    if isinstance(predicate, jax.core.Tracer):
        return lax.cond(predicate, true_fn, false_fn, *operands)
    return true_fn(*operands) if bool(predicate) else false_fn(*operands)


def _grouped_stats(tensors, partners, layer_axes, axis_names, with_dot):
    """Norms of `tensors` (and `partners`, and their cosines), one entry per leaf."""
    groups = _make_groups(tensors, partners, layer_axes, axis_names)
    inputs, fast = [], []
    for group in groups:
        xs = [_group_input(group, tensors)]
        if partners is not None:
            xs.append(_group_input(group, partners))
        inputs.append(xs)
        fast.append(_fast_sums(xs, group.reduce_axes, group.axis_names, with_dot))

    def from_fast(group_sums):
        return [_stats_from_sums(sums, with_dot) for sums in group_sums]

    def with_rescaling(group_sums):
        results = []
        for group, xs, sums in zip(groups, inputs, group_sums):
            squares = sums[: len(sums) - int(with_dot)]
            results.append(
                _cond(
                    _needs_rescaling(squares),
                    lambda xs=xs, group=group: _rescaled_stats(
                        xs, group.reduce_axes, group.axis_names, with_dot
                    ),
                    lambda sums=sums: _stats_from_sums(sums, with_dot),
                )
            )
        return results

    if groups:
        squares = [s for sums in fast for s in sums[: len(sums) - int(with_dot)]]
        stats = _cond(_needs_rescaling(squares), with_rescaling, from_fast, fast)
    else:
        stats = []

    per_leaf: list = [None] * len(tensors)
    for group, (norms, cosine) in zip(groups, stats):
        for position, leaf_index in enumerate(group.indices):
            pick = (lambda v: v[position]) if group.stacked else (lambda v: v)
            per_leaf[leaf_index] = (
                [pick(n) for n in norms],
                None if cosine is None else pick(cosine),
            )
    return per_leaf


def paired_norm_stats(
    params: Sequence[jax.Array],
    updates: Sequence[jax.Array],
    layer_axes: Sequence[tuple[int, ...]],
    axis_names: Sequence[tuple[str, ...]],
    with_cosine: bool,
) -> list[PairStats]:
    """‖W‖, ‖g‖ (and cos(W, g) if asked) for every leaf pair, per layer slice.

    Args:
      params: parameter leaves W.
      updates: update leaves g, same shapes as `params`.
      layer_axes: per leaf, the axes indexing separate layers (empty: one layer).
      axis_names: per leaf, mesh axes to sum over (empty: not sharded).
      with_cosine: also compute ⟨W, g⟩ / (‖W‖‖g‖) (NaN where a norm is 0).

    Returns:
      One `PairStats` per leaf; every array has the leaf's rank with size 1 on
      the reduced axes, in the accumulation dtype.
    """
    stats = _grouped_stats(params, updates, layer_axes, axis_names, with_cosine)
    return [PairStats(norms[0], norms[1], cosine) for norms, cosine in stats]


def tensor_norms(
    tensors: Sequence[jax.Array],
    layer_axes: Sequence[tuple[int, ...]],
    axis_names: Sequence[tuple[str, ...]],
) -> list[jax.Array]:
    """‖W‖ for every leaf (per layer slice), overflow-proof, keepdims shapes."""
    stats = _grouped_stats(tensors, None, layer_axes, axis_names, with_dot=False)
    return [norms[0] for norms, _ in stats]
