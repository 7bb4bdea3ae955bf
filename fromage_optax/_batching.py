"""How the norms are computed fast: grouping, stacking, plain and rescaled sums.

Behind `_norms`' entry point. Small tensors of the same shape, dtype and layout
are stacked (up to `GROUP_MAX_MEMBERS` at a time) and reduced together, since
for small tensors the per-kernel overhead dominates; every group's values come
back with a leading member axis when it is stacked. Nothing here decides when
a norm is trusted or which branch runs: that is `_norms`' job.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# Tensors with at most this many elements are stacked with same-shaped peers
# and reduced together: for small tensors the per-kernel overhead dominates,
# for large ones stacking would cost a copy.
GROUP_MAX_SIZE = 1 << 16
# At most this many tensors per stack: a stack is a concatenation fused into the
# reduction, and XLA's compile time for such a fusion grows with its operand count.
GROUP_MAX_MEMBERS = 64


def accumulation_dtype(dtype) -> jnp.dtype:
    """The dtype norms are accumulated in: float32, or the input's if wider."""
    return jnp.promote_types(dtype, jnp.float32)


def _weak(value) -> bool:
    if isinstance(value, (bool, int, float, complex)):
        return True
    return bool(getattr(getattr(value, "aval", value), "weak_type", False))


def where(condition, x, y):
    """`jnp.where(condition, x, y)`, the same values and dtype, without its nested `jit`.

    The step's scalar math calls it a few dozen times per group of tensors: as a
    `jnp.where`, each call is a nested jit of its own to trace, lower and inline
    (1,500 of them for a 2,000-tensor tree with p_bound). Where both values are
    weakly typed (Python numbers), `jnp.where` decides the dtype as it always has.
    """
    if _weak(x) and _weak(y):
        return jnp.where(condition, x, y)
    dtype = jnp.result_type(x, y)
    shape = jnp.broadcast_shapes(jnp.shape(condition), jnp.shape(x), jnp.shape(y))

    def broadcast(value, value_dtype):
        if not isinstance(value, jax.Array):  # a Python or NumPy number: a constant
            value = np.asarray(value, value_dtype)
        elif value.dtype != value_dtype:
            value = lax.convert_element_type(value, value_dtype)
        if value.shape == shape:
            return value
        dims = tuple(range(len(shape) - value.ndim, len(shape)))
        return lax.broadcast_in_dim(value, shape, dims)

    return lax.select(broadcast(condition, bool), broadcast(x, dtype), broadcast(y, dtype))


def any_true(flags) -> jax.Array:
    """Whether any of the boolean arrays `flags` has a True element (a boolean scalar).

    Computed as √(number of Trues) > 0: XLA rewrites a reduction over a few small
    arrays into a chain of elementwise ops, which it then copies into every fusion
    that reads the answer (under `jax.vmap` a branch's predicate is read by a
    select for every output, and the chain was copied a hundred times: a monitored
    33-layer epoch compiled in 12 s instead of 5). A square root it computes once.
    """
    count = sum(jnp.sum(f, dtype=jnp.float32) for f in flags)
    return jnp.sqrt(count) > 0


def _sqrt(sum_of_squares):
    """√s with a finite derivative at s = 0 (zero there), for `jax.grad` through a step.

    Every use of a zero norm is masked out by the step (it takes the plain step
    there), so the derivative through that norm must be 0, not 0·∞ = NaN. A NaN
    sum stays NaN.
    """
    positive = sum_of_squares > 0
    root = jnp.sqrt(where(positive, sum_of_squares, 1))
    return where(positive, root, where(sum_of_squares == 0, 0, jnp.nan))


def _cosine(dot, norm_a, norm_b):
    """⟨a, b⟩/(‖a‖‖b‖), NaN where a norm is 0, with a finite derivative there."""
    usable = (norm_a > 0) & (norm_b > 0)
    cosine = dot / where(usable, norm_a, 1) / where(usable, norm_b, 1)
    return where(usable, cosine, jnp.nan)


def _psum(x, axis_names):
    return lax.psum(x, axis_names) if axis_names else x


def _pmax(x, axis_names):
    return lax.pmax(x, axis_names) if axis_names else x


def power_of_two_scale(value):
    """(2**e, 2**-e) for the power of two 2**e at or below `value` > 0, both normal floats.

    Read straight off the exponent bits: exact, and only a few cheap ops. For 0,
    inf, NaN or a subnormal `value` both are 1. Above 2**(emax − 2) the power is
    clamped there, so that its reciprocal is not subnormal (CPUs flush those to
    0): `value`·2**-e is then at most 8 instead of below 2.
    """
    info = jnp.finfo(value.dtype)
    int_dtype = jnp.int32 if info.bits == 32 else jnp.int64
    exponent_bits = ((1 << (info.bits - 1)) - 1) ^ ((1 << info.nmant) - 1)
    bits = lax.bitcast_convert_type(value, int_dtype)
    power = lax.bitcast_convert_type(bits & jnp.asarray(exponent_bits, int_dtype), value.dtype)
    usable = (power >= info.tiny) & (power < jnp.inf)
    power = jnp.minimum(
        where(usable, power, 1), jnp.asarray(2.0 ** (info.maxexp - 3), value.dtype)
    )
    return power, 1 / power


def _reciprocal_power_of_two(max_abs):
    """2**-e for the power of two at or below max_abs (see `power_of_two_scale`)."""
    return power_of_two_scale(max_abs)[1]


class Group(NamedTuple):
    indices: tuple[int, ...]
    reduce_axes: tuple[int, ...]
    axis_names: tuple[str, ...]
    stacked: bool
    large: bool = False  # a single tensor above GROUP_MAX_SIZE elements


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


def make_groups(tensors, partners, layer_axes, axis_names) -> list[Group]:
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
            groups.append(Group((i,), axes, axis_names[i], stacked=False, large=True))
    chunks = [
        (key, members[start : start + GROUP_MAX_MEMBERS])
        for key, members in buckets.items()
        for start in range(0, len(members), GROUP_MAX_MEMBERS)
    ]
    for (shape, *_), members in chunks:
        first = members[0]
        axes = tuple(a for a in range(len(shape)) if a not in layer_axes[first])
        if len(members) == 1:
            groups.append(Group((first,), axes, axis_names[first], stacked=False))
        else:
            shifted = tuple(a + 1 for a in axes)
            groups.append(Group(tuple(members), shifted, axis_names[first], stacked=True))
    return groups


def segments(groups: list[Group], per_large_tensor: bool) -> list[list[Group]]:
    """The groups, split into the runs that share one fallback branch.

    With `per_large_tensor` (the CPU layout): the small tensors' groups together,
    then each large tensor on its own. On XLA:CPU a step that waits for a branch
    after its norms no longer finds W and g in the cache: with one branch for the
    tree, 100 tensors of 2 MB took 2.0x SGD; with one per tensor, each tensor's
    reductions made to wait for the previous tensor's branch (`after_token`), 1.5x.
    For small tensors the per-kernel overhead dominates, and a branch per group
    would cost more than the cache saves. Otherwise (elsewhere, where a branch
    may make the host wait for its predicate, once per branch) one run.
    """
    if not groups:
        return []
    if not per_large_tensor:
        return [groups]
    small = [group for group in groups if not group.large]
    return ([small] if small else []) + [[group] for group in groups if group.large]


def after_token(value, dtype):
    """An exact zero of `dtype` computed from `value`, which XLA cannot fold away.

    As the initial value of a reduction it makes the reduction wait for `value`:
    the way one run of groups' norms is ordered after the previous run's branch.
    NaN or infinite values still give 0. Its derivative is 0.
    """
    zero = jnp.sum(lax.stop_gradient(value)).astype(dtype) * 0
    return where(zero == 0, zero, jnp.zeros((), dtype))


@functools.cache
def _ordered_sum(axes: tuple[int, ...]):
    """Σx over `axes` (keepdims) as a reduction whose initial value is a token: it cannot
    start before the token is computed (`after_token`).

    A reduction with a traced initial value has no vmap rule (for a batched one), and
    no jvp rule where that value has a tangent, so both are given here: under vmap the
    token of the whole batch (one exact zero) starts the batched reduction, which keeps
    the order; the derivative is the plain sum's, the token being an exact zero.
    """

    def reduce(x, token):
        return lax.expand_dims(lax.reduce(x, token, lax.add, axes), axes)

    batched_reduce = jax.custom_batching.custom_vmap(reduce)

    @batched_reduce.def_vmap
    def _(axis_size, in_batched, x, token):
        x_batched, token_batched = in_batched
        if not x_batched:
            x = jnp.broadcast_to(x, (axis_size, *x.shape))
        if token_batched:
            token = after_token(token, x.dtype)
        shifted = tuple(a + 1 for a in axes)
        return lax.expand_dims(lax.reduce(x, token, lax.add, shifted), shifted), True

    @jax.custom_jvp
    def ordered_sum(x, token):
        return batched_reduce(x, token)

    @ordered_sum.defjvp
    def _(primals, tangents):
        x, token = primals
        x_dot, _ = tangents
        return ordered_sum(x, token), jnp.sum(x_dot, axis=axes, keepdims=True)

    return ordered_sum


def _sum(x, axes, after):
    """Σx over `axes`, keepdims, starting from `after_token(after)` when `after` is given."""
    if after is None:
        return jnp.sum(x, axis=axes, keepdims=True)
    return _ordered_sum(tuple(axes))(x, after_token(after, x.dtype))


def group_inputs(group: Group, sources):
    """The group's tensors from each source, stacked when the group is, in their own dtype.

    Each use upcasts them itself (`_upcast`): a float32 copy of a bfloat16 tensor
    handed around (to the fallback branches, say) is written out by XLA:CPU, and
    bfloat16 steps took 8-11x SGD on large trees instead of 2-3x. A stacked group
    of low-precision tensors stays a tuple of its members, stacked at each use:
    stacking them once for every use cost a bfloat16 tree of 2,000 small tensors
    15 % more per step.
    """
    xs = []
    for source in sources:
        members = [source[i] for i in group.indices]
        if not group.stacked:
            xs.append(members[0])
        elif members[0].dtype != accumulation_dtype(members[0].dtype):
            xs.append(tuple(members))
        else:
            xs.append(jnp.stack(members))
    return xs


def _full_precision(x) -> bool:
    """Whether `group_inputs`' `x` is in its accumulation dtype already (no upcast)."""
    dtype = x[0].dtype if isinstance(x, tuple) else x.dtype
    return dtype == accumulation_dtype(dtype)


def _upcast(x):
    """`group_inputs`' `x` stacked and in the accumulation dtype, upcast apart from every
    other upcast of it."""
    if isinstance(x, tuple):
        x = jnp.stack(x)
    if x.dtype == accumulation_dtype(x.dtype):
        return x
    # Apart from the step's own upcast: otherwise XLA (CSE) shares one float32 copy
    # of the tensor between the norms and the step, and XLA:CPU writes it out.
    return lax.optimization_barrier(x).astype(accumulation_dtype(x.dtype))


def plain_sums(groups, inputs, with_dot, after=None):
    """Per group: plain sums of squares (one per source) and the inner product.

    `inputs`: per group, its `group_inputs`. `after`: None, or an array that the
    reductions of full-precision groups wait for (see `after_token`).
    """
    per_group = []
    for group, xs in zip(groups, inputs):
        # Low-precision tensors do not wait: for them the wait cost more than the cache
        # saved (100 bfloat16 tensors of 1 MB: 2.3x SGD waiting, 1.9x not).
        wait = after if all(_full_precision(x) for x in xs) else None
        xs = [_upcast(x) for x in xs]
        sums = [_sum(x * x, group.reduce_axes, wait) for x in xs]
        if with_dot:
            sums.append(_sum(xs[0] * xs[1], group.reduce_axes, wait))
        per_group.append([_psum(value, group.axis_names) for value in sums])
    return per_group


def plain_cosine(group, xs, norms):
    """cos(W, g) of a group (inputs `xs`) from a plain inner product and its plain norms."""
    xs = [_upcast(x) for x in xs]
    dot = _psum(jnp.sum(xs[0] * xs[1], axis=group.reduce_axes, keepdims=True), group.axis_names)
    return _cosine(dot, norms[0], norms[1])


def rescaled_norms(group, xs, with_dot):
    """Norms (and cosine) of a group (inputs `xs`), each slice scaled by a power of two first."""
    return _rescaled_norms(xs, group.reduce_axes, group.axis_names, with_dot)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _rescaled_norms(xs, reduce_axes, axis_names, with_dot):
    """`rescaled_norms` as a nested jit: called once per group (for each of 100 large tensors,
    say), it is traced and lowered once per signature, and XLA inlines it back (see
    `_step`'s docstring)."""
    scaled = []
    for x in map(_upcast, xs):
        # initial=0: a tensor of size 0 has max-abs 0 (and norm 0). The scale is a power
        # of two, piecewise constant in x: its derivative is 0 (and pmax has no rule).
        max_abs = jnp.max(jnp.abs(lax.stop_gradient(x)), axis=reduce_axes, keepdims=True, initial=0)
        scale = _reciprocal_power_of_two(_pmax(max_abs, axis_names))
        y = x * scale
        sum_of_squares = _psum(jnp.sum(y * y, axis=reduce_axes, keepdims=True), axis_names)
        scaled.append((y, sum_of_squares, scale))
    values = [_sqrt(s) / scale for _, s, scale in scaled]
    if with_dot:
        (y0, s0, _), (y1, s1, _) = scaled
        dot = _psum(jnp.sum(y0 * y1, axis=reduce_axes, keepdims=True), axis_names)
        values.append(_cosine(dot, _sqrt(s0), _sqrt(s1)))
    return values


def norms_from_sums(sums, with_dot):
    norms = [_sqrt(s) for s in sums[: len(sums) - int(with_dot)]]
    if with_dot:
        norms.append(_cosine(sums[-1], norms[0], norms[1]))
    return norms


def safe(sum_of_squares):
    """Whether a plain sum of squares is safely inside the floating-point range."""
    # 2**62 above the smallest normal: even 2**30 flushed subnormal squares
    # change such a sum by less than 2**-32 of its value.
    low = float(jnp.finfo(sum_of_squares.dtype).tiny) * 2.0**62
    return (sum_of_squares >= low) & (sum_of_squares < jnp.inf)
