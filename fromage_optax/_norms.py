"""Per-tensor (or per-layer-slice) Frobenius norms: exact, overflow-proof and fast.

Fromage needs, for every tensor W with update g, ‖W‖, ‖g‖ and (for p_bound)
the cosine ⟨W, g⟩ / (‖W‖‖g‖). This module computes them

* **in one read of each tensor** in the common case: plain sums of squares
  (a pattern XLA compiles to its fastest reduction), accumulated in at least
  float32 — bfloat16/float16 inputs are upcast;
* **without overflow or underflow** at any scale: when a sum of squares is not
  safely inside the floating-point range (it overflowed, or is so small that
  flushed subnormal squares could matter), every norm is recomputed after
  scaling each tensor (or slice) by a power of two read off its max-abs value.
  That fallback sits behind a single branch (`lax.switch`) for the whole tree,
  so it runs only when needed (on a CPU the branch point still costs some
  overlap between the reductions and the step; the numbers are in the README);
* **with the inner product only when asked**: ⟨W, g⟩ (for p_bound's ‖W'‖) can
  be made conditional on a caller's test of the plain norms, as a third branch
  of the same switch, sparing a pass over the tensors on other steps;
* **with few kernels** for trees of many small tensors: small tensors of the
  same shape, dtype and layout are stacked (up to 64 at a time) and reduced
  together;
* **per layer slice** when `layer_axes` names axes that index separate layers,
  and **globally** across devices when `axis_names` names mesh axes (sums are
  `psum`-ed, max-abs values `pmax`-ed).

A zero sum of squares is checked too (every square may have underflowed),
except for parameter slices that p_bound holds at zero.

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
# At most this many tensors per stack: a stack is a concatenation fused into the
# reduction, and XLA's compile time for such a fusion grows with its operand count.
GROUP_MAX_MEMBERS = 64


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


def _reciprocal_power_of_two(max_abs):
    """1/2**e for the power of two 2**e at or below max_abs (1 for 0, inf or NaN).

    Read straight off the exponent bits: exact, and only a few cheap ops.
    """
    info = jnp.finfo(max_abs.dtype)
    int_dtype = jnp.int32 if info.bits == 32 else jnp.int64
    exponent_bits = ((1 << (info.bits - 1)) - 1) ^ ((1 << info.nmant) - 1)
    bits = lax.bitcast_convert_type(max_abs, int_dtype)
    power = lax.bitcast_convert_type(bits & jnp.asarray(exponent_bits, int_dtype), max_abs.dtype)
    usable = (power >= info.tiny) & (power < jnp.inf)
    return jnp.where(usable, 1 / jnp.where(usable, power, 1), 1)


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
    return sharding.spec  # type: ignore[union-attr]  # not None: it has a mesh (checked above)


def _make_groups(tensors, partners, layer_axes, axis_names) -> list[_Group]:
    buckets: dict[tuple, list[int]] = {}
    groups = []
    for i, x in enumerate(tensors):
        if x.size <= GROUP_MAX_SIZE:
            partner_dtype = None if partners is None else partners[i].dtype
            key = (
                x.shape,
                x.dtype,
                partner_dtype,
                layer_axes[i],
                axis_names[i],
                _layout_key(x, i),
                None if partners is None else _layout_key(partners[i], i),
            )
            buckets.setdefault(key, []).append(i)
        else:
            axes = tuple(a for a in range(x.ndim) if a not in layer_axes[i])
            groups.append(_Group((i,), axes, axis_names[i], stacked=False))
    chunks = [
        (key, members[start : start + GROUP_MAX_MEMBERS])
        for key, members in buckets.items()
        for start in range(0, len(members), GROUP_MAX_MEMBERS)
    ]
    for (shape, *_), members in chunks:
        first = members[0]
        axes = tuple(a for a in range(len(shape)) if a not in layer_axes[first])
        if len(members) == 1:
            groups.append(_Group((first,), axes, axis_names[first], stacked=False))
        else:
            shifted = tuple(a + 1 for a in axes)
            groups.append(_Group(tuple(members), shifted, axis_names[first], stacked=True))
    return groups


def _group_inputs(group: _Group, sources):
    """The group's tensors from each source, upcast, stacked when the group is."""
    xs = []
    for source in sources:
        members = [source[i] for i in group.indices]
        x = jnp.stack(members) if group.stacked else members[0]
        if x.dtype != accumulation_dtype(x.dtype):
            # Upcast here, apart from the step's own upcast: otherwise XLA (CSE) shares
            # one float32 copy of the tensor between the norms and the step, and
            # XLA:CPU writes that copy out (bfloat16 steps took 8-11x SGD on large
            # trees instead of 2-3x).
            x = lax.optimization_barrier(x)
        xs.append(x.astype(accumulation_dtype(x.dtype)))
    return xs


def _plain_sums(groups, sources, with_dot):
    """Per group: plain sums of squares (one per source) and the inner product."""
    per_group = []
    for group in groups:
        xs = _group_inputs(group, sources)
        sums = [jnp.sum(x * x, axis=group.reduce_axes, keepdims=True) for x in xs]
        if with_dot:
            sums.append(jnp.sum(xs[0] * xs[1], axis=group.reduce_axes, keepdims=True))
        per_group.append([_psum(value, group.axis_names) for value in sums])
    return per_group


def _plain_cosine(group, sources, norms):
    """cos(W, g) of a group from a plain inner product and its (trusted) plain norms."""
    xs = _group_inputs(group, sources)
    dot = _psum(jnp.sum(xs[0] * xs[1], axis=group.reduce_axes, keepdims=True), group.axis_names)
    return dot / norms[0] / norms[1]


def _rescaled_norms(group, sources, with_dot):
    """Norms (and cosine) of a group with every slice scaled by a power of two first."""
    scaled = []
    for x in _group_inputs(group, sources):
        max_abs = jnp.max(jnp.abs(x), axis=group.reduce_axes, keepdims=True)
        scale = _reciprocal_power_of_two(_pmax(max_abs, group.axis_names))
        y = x * scale
        sum_of_squares = _psum(
            jnp.sum(y * y, axis=group.reduce_axes, keepdims=True), group.axis_names
        )
        scaled.append((y, sum_of_squares, scale))
    values = [jnp.sqrt(s) / scale for _, s, scale in scaled]
    if with_dot:
        (y0, s0, _), (y1, s1, _) = scaled
        dot = _psum(jnp.sum(y0 * y1, axis=group.reduce_axes, keepdims=True), group.axis_names)
        values.append(dot / jnp.sqrt(s0) / jnp.sqrt(s1))
    return values


def _norms_from_sums(sums, with_dot):
    norms = [jnp.sqrt(s) for s in sums[: len(sums) - int(with_dot)]]
    if with_dot:
        norms.append(sums[-1] / norms[0] / norms[1])
    return norms


def _safe(sum_of_squares):
    """Whether a plain sum of squares is safely inside the floating-point range."""
    # 2**62 above the smallest normal: even 2**30 flushed subnormal squares
    # change such a sum by less than 2**-32 of its value.
    low = float(jnp.finfo(sum_of_squares.dtype).tiny) * 2.0**62
    return (sum_of_squares >= low) & (sum_of_squares < jnp.inf)


class GroupStats(NamedTuple):
    """Norms of a group of leaves reduced together.

    Attributes:
      indices: the leaves in the group.
      stacked: whether the values have a leading axis indexing the members (one
        entry per member); otherwise the group is the single leaf `indices[0]`.
      stats: the group's `PairStats` (`update_norm` None for a single source).
    """

    indices: tuple[int, ...]
    stacked: bool
    stats: PairStats

    def member(self, value, position: int):
        """`value` (group-shaped, or a scalar shared by the group) for its `position`-th leaf."""
        return value[position] if self.stacked and jnp.ndim(value) else value

    def stacked_like(self, per_leaf):
        """Per-leaf keepdims-shaped arrays of the group's leaves, shaped like its values."""
        members = [per_leaf[i] for i in self.indices]
        return jnp.stack(members) if self.stacked else members[0]


def _grouped_stats(
    tensors,
    partners,
    layer_axes,
    axis_names,
    with_dot,
    bound_norms=None,
    cosine_needed=None,
):
    """[GroupStats] covering every leaf once; norms of `tensors` (and `partners`).

    `bound_norms`: optional per-leaf ‖W₀‖ of p_bound (keepdims shapes); a slice
    with ‖W₀‖ = 0 is held exactly at zero, so its zero sum of squares is exact.

    `cosine_needed` (with `with_dot`): optional callable taking the groups'
    `GroupStats` without cosines and returning whether any cosine is needed (a
    boolean scalar). When it returns False the inner products are not computed
    (one pass over the tensors fewer) and every cosine is reported as −1.
    """
    if not tensors:
        return []
    groups = _make_groups(tensors, partners, layer_axes, axis_names)
    sources = [tensors] if partners is None else [tensors, partners]
    lazy_dot = with_dot and cosine_needed is not None
    sums = _plain_sums(groups, sources, with_dot and not lazy_dot)

    flags = []
    for group, group_sums in zip(groups, sums):
        for position, sum_of_squares in enumerate(group_sums[: len(sources)]):
            trusted = _safe(sum_of_squares)
            if position == 0 and bound_norms is not None:
                members = [bound_norms[i] for i in group.indices]
                bound = (jnp.stack(members) if group.stacked else members[0]).reshape(
                    sum_of_squares.shape
                )
                trusted = trusted | ((bound == 0) & (sum_of_squares == 0))
            flags.append(jnp.all(trusted))
    all_trusted = jnp.all(jnp.stack(flags))
    plain = [_norms_from_sums(group_sums, with_dot and not lazy_dot) for group_sums in sums]

    def from_plain_sums(plain):
        return plain

    def rescaled(plain):
        del plain
        return [_rescaled_norms(group, sources, with_dot) for group in groups]

    def without_cosines(plain):
        return [norms + [jnp.full_like(norms[0], -1)] for norms in plain]

    def with_plain_cosines(plain):
        return [
            norms + [_plain_cosine(group, sources, norms)] for group, norms in zip(groups, plain)
        ]

    if lazy_dot:
        need = cosine_needed(
            [
                GroupStats(g.indices, g.stacked, PairStats(n[0], n[1], None))
                for g, n in zip(groups, plain)
            ]
        )
        branches = [without_cosines, with_plain_cosines, rescaled]
        index = jnp.where(all_trusted, jnp.where(need, 1, 0), 2)
    else:
        branches = [rescaled, from_plain_sums]
        index = all_trusted.astype(jnp.int32)
    if isinstance(index, jax.core.Tracer):
        per_group = lax.switch(index, branches, plain)
    else:  # Outside jit the answer is known: branch in Python, compile nothing.
        per_group = branches[int(index)](plain)

    return [
        GroupStats(
            group.indices,
            group.stacked,
            PairStats(
                values[0],
                values[1] if partners is not None else None,
                values[-1] if with_dot else None,
            ),
        )
        for group, values in zip(groups, per_group)
    ]


def _stats(tensors, partners, layer_axes, axis_names, with_dot, bound_norms=None):
    """[PairStats] per leaf (see `_grouped_stats`), each in the leaf's keepdims shape."""
    per_leaf: list = [None] * len(tensors)
    for group in _grouped_stats(tensors, partners, layer_axes, axis_names, with_dot, bound_norms):
        for position, i in enumerate(group.indices):
            per_leaf[i] = PairStats(
                *(None if v is None else group.member(v, position) for v in group.stats)
            )
    return per_leaf


def _keepdims_shape(shape, layer_axes):
    return tuple(d if a in layer_axes else 1 for a, d in enumerate(shape))


def paired_norm_stats(
    params: Sequence[jax.Array],
    updates: Sequence[jax.Array],
    layer_axes: Sequence[tuple[int, ...]],
    axis_names: Sequence[tuple[str, ...]],
    with_cosine: bool,
    bound_norms: Sequence[jax.Array] | None = None,
) -> list[PairStats]:
    """‖W‖, ‖g‖ (and cos(W, g) if asked) for every leaf pair, per layer slice.

    Args:
      params: parameter leaves W.
      updates: update leaves g, same shapes as `params`.
      layer_axes: per leaf, the axes indexing separate layers (empty: one layer).
      axis_names: per leaf, mesh axes to sum over (empty: not sharded).
      with_cosine: also compute ⟨W, g⟩ / (‖W‖‖g‖) (NaN where a norm is 0).
      bound_norms: optional per-leaf ‖W₀‖ of p_bound (keepdims shapes). A slice
        with ‖W₀‖ = 0 is held exactly at zero by the bound, which spares its
        zero sum of squares the underflow check.

    Returns:
      One `PairStats` per leaf; every array has the leaf's rank with size 1 on
      the reduced axes, in the accumulation dtype.
    """
    return _stats(params, updates, layer_axes, axis_names, with_cosine, bound_norms)


def grouped_pair_stats(
    params: Sequence[jax.Array],
    updates: Sequence[jax.Array],
    layer_axes: Sequence[tuple[int, ...]],
    axis_names: Sequence[tuple[str, ...]],
    with_cosine: bool,
    bound_norms: Sequence[jax.Array] | None = None,
    cosine_needed=None,
) -> list[GroupStats]:
    """`paired_norm_stats` before it is split per leaf: one `GroupStats` per group
    of leaves reduced together, covering every leaf once.

    Per-tensor scalar work done on these group-shaped values (rather than per
    leaf) compiles to a few operations per group instead of a few per leaf.

    `cosine_needed`: optional callable ``[GroupStats] -> bool scalar`` (the
    stats without cosines); when it returns False, ⟨W, g⟩ is not computed and
    every cosine is −1 (see `_grouped_stats`).
    """
    return _grouped_stats(
        params, updates, layer_axes, axis_names, with_cosine, bound_norms, cosine_needed
    )


def tensor_norms(
    tensors: Sequence[jax.Array],
    layer_axes: Sequence[tuple[int, ...]],
    axis_names: Sequence[tuple[str, ...]],
) -> list[jax.Array]:
    """‖W‖ for every leaf (per layer slice), overflow-proof, keepdims shapes."""
    return [stats.param_norm for stats in _stats(tensors, None, layer_axes, axis_names, False)]
