"""`fromage`: the whole Fromage step as one fused optax transformation."""

from __future__ import annotations

import functools
import importlib.util
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from fromage_optax import _batching, _leaf_options, _norms, _step, _validation
from fromage_optax._learning_rate import learning_rate_at
from fromage_optax._norms import accumulation_dtype, tensor_norms


class FromageState(NamedTuple):
    """State of `fromage`.

    Attributes:
      count: number of steps taken (int32), the argument of a schedule.
      initial_norms: with `p_bound`, an `InitialNorms` holding ‖W₀‖ of every
        tensor in one vector (``.values``, or ``numpy.asarray(initial_norms)``),
        in the order of ``jax.tree.leaves(params)`` (one entry per tensor, or
        one per layer slice with `layer_axes`, in row-major order of the layer
        axes), float32 (float64 if some parameter is); None without `p_bound`.
        A single array rather than a tree like the params: a state of one tiny
        array per tensor costs the runtime more per step than the bound itself
        on trees of thousands of tensors.
    """

    count: jax.Array  # type: ignore[assignment]  # a field named like tuple.count, as in optax
    initial_norms: Any


@jax.tree_util.register_pytree_with_keys_class
class InitialNorms:
    """p_bound's ‖W₀‖ of every tensor in one vector, tagged with the layout it was made for.

    ``values`` holds the norms in the order of ``jax.tree.leaves(params)``. The
    layout (per tensor: its layer axes and the number of elements each norm sums
    over, counted across devices) is static pytree data, so ``update`` can refuse
    a state made for other params with a clear error, as optax's own states do
    by their shapes. It never makes two states' tree structures differ.
    ``numpy.asarray(initial_norms)`` gives the vector.
    """

    def __init__(self, values, layout):
        self.values = values
        self.layout = layout

    def tree_flatten_with_keys(self):
        return ((jax.tree_util.GetAttrKey("values"), self.values),), self.layout

    def tree_flatten(self):
        return (self.values,), self.layout

    @classmethod
    def tree_unflatten(cls, layout, children):
        return cls(children[0], layout)

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.values, dtype=dtype)

    @property
    def shape(self):
        return jnp.shape(self.values)

    def __repr__(self):
        return f"InitialNorms({self.values!r})"


@functools.cache
def _register_with_flax_serialization() -> None:
    """Lets `flax.serialization` (msgpack checkpoints, ``TrainState.to_bytes``) save an
    `InitialNorms` as ``{"values": ...}``, keeping the target's layout on restore.

    Done when a transform with p_bound is built, and only where flax is installed:
    the library itself does not depend on flax.
    """
    if importlib.util.find_spec("flax") is None:
        return
    from flax import serialization

    serialization.register_serialization_state(
        InitialNorms,
        lambda norms: {"values": serialization.to_state_dict(norms.values)},
        lambda target, state: InitialNorms(
            serialization.from_state_dict(target.values, state["values"]), target.layout
        ),
        override=True,
    )


class _Layout(NamedTuple):
    """Per tensor: its layer axes and how many elements each of its norms sums over.

    Static metadata of `InitialNorms`, compared by value: a jitted ``update``
    traces again for a state of another layout, so `_check_layout` refuses it on
    every call. The counts are global (across the devices of ``axis_name``), so
    a state built inside shard_map matches one built from the global params.
    """

    layer_axes: tuple
    counts: tuple


def _layout(param_leaves, leaf_layer_axes, leaf_axis_names) -> _Layout:
    """What a state must fit (see `_Layout`), counted across the devices of `axis_name`."""
    counts = tuple(
        _leaf_options.global_reduced_size(w, axes, names)
        for w, axes, names in zip(param_leaves, leaf_layer_axes, leaf_axis_names)
    )
    return _Layout(tuple(leaf_layer_axes), counts)


def _flat_norms(norms, layout) -> InitialNorms:
    """Per-leaf keepdims norms as one vector (see `FromageState.initial_norms`)."""
    if not norms:
        return InitialNorms(jnp.zeros([0], jnp.float32), layout)
    dtype = jnp.result_type(*norms)
    return InitialNorms(jnp.concatenate([jnp.ravel(n).astype(dtype) for n in norms]), layout)


def _check_layout(initial_norms, layout, params, name):
    """Refuses a p_bound state made for params of another layout, naming the first tensor."""
    state_layout = getattr(initial_norms, "layout", None)
    if state_layout is None or tuple(state_layout) == tuple(layout):
        return
    paths = _validation.leaf_paths(params)
    (state_axes, state_counts), (axes, counts) = state_layout, layout
    if len(state_counts) != len(counts):
        problem = f"it has {len(state_counts)} tensors, these params {len(counts)}"
    else:
        pairs = zip(zip(state_axes, state_counts), zip(axes, counts))
        i = next(i for i, (theirs, ours) in enumerate(pairs) if theirs != ours)
        problem = (
            f"at {paths[i]} it has norms over {state_counts[i]} elements with layer axes "
            f"{state_axes[i]}, these params {counts[i]} with layer axes {axes[i]}"
        )
    raise ValueError(
        f"{name}: the state's initial_norms (made for other params) do not match the params "
        f"({problem}). Build the state with init on these params (and the same layer_axes)."
    )


def _split_norms(flat, param_leaves, leaf_layer_axes, name):
    """`_flat_norms`' vector checked against the params: (vector, per-leaf offsets, shapes).

    `_group_norms` then reads each group's norms out of the vector in one op.
    """
    if flat is None:
        raise ValueError(
            f"{name}: the state has no initial_norms: it was built by a fromage without "
            "p_bound. Build the state with init of this optimiser (with p_bound)."
        )
    flat = getattr(flat, "values", flat)
    shapes = [
        tuple(d if a in axes else 1 for a, d in enumerate(jnp.shape(w)))
        for w, axes in zip(param_leaves, leaf_layer_axes)
    ]
    sizes = [math.prod(shape) for shape in shapes]
    if jnp.ndim(flat) != 1 or jnp.shape(flat)[0] != sum(sizes):
        raise ValueError(
            f"{name}: the state's initial_norms (shape {jnp.shape(flat)}) do not match the "
            f"params, which need {sum(sizes)} norms ({len(sizes)} tensors). Build the state "
            f"with init on these params (and the same layer_axes)."
        )
    offsets = [0]
    for size in sizes:
        offsets.append(offsets[-1] + size)
    return flat, offsets, shapes


def _group_norms(split, group):
    """A group's ‖W₀‖ from `_split_norms`' vector, shaped like the group's norms.

    One gather per stacked group (slicing per tensor and stacking again cost
    trees of thousands of tensors a kernel per tensor). A gather rather than a
    strided slice, even where the members are evenly spaced: its indices are an
    array constant, an operand of the kernels that use the norms, where a
    slice's offsets would be written into them; XLA:CPU compiles each distinct
    kernel once, so the groups of a size then share their kernels (2,000
    tensors with p_bound: 201 distinct kernels instead of 255).
    """
    flat, offsets, shapes = split
    starts = [offsets[i] for i in group.indices]
    shape = shapes[group.indices[0]]
    size = math.prod(shape)
    if not group.stacked:
        return flat[starts[0] : starts[0] + size].reshape(shape)
    values = flat[np.stack([np.arange(start, start + size) for start in starts])]
    return values.reshape((len(starts), *shape))


def _step_dtype(param_leaves, update_leaves, group):
    """The dtype a group's step is computed in (its leaves share their dtypes)."""
    first = group.indices[0]
    return jnp.promote_types(
        accumulation_dtype(param_leaves[first].dtype), update_leaves[first].dtype
    )


def _any_could_pass_bound(param_leaves, update_leaves, initial_norms, eta, p_bound, groups):
    """Whether any tensor could pass its bound this step (else ⟨W, g⟩ is not needed).

    `initial_norms`: per group, its ‖W₀‖.
    """
    flags = [
        _step.could_pass_bound(
            group.stats.param_norm,
            group.stats.update_norm,
            initial_norm,
            eta,
            p_bound,
            _step_dtype(param_leaves, update_leaves, group),
        )
        for group, initial_norm in zip(groups, initial_norms)
    ]
    return _batching.any_true(flags) if flags else False


def _as(x, dtype):
    return x if x.dtype == dtype else lax.convert_element_type(x, dtype)


def _times(coefficient, x):
    """coefficient·x for a scalar coefficient, or one of x's rank with size 1 on the
    reduced axes."""
    dims = tuple(range(x.ndim)) if coefficient.ndim else ()
    return lax.mul(lax.broadcast_in_dim(coefficient, x.shape, dims), x)


def _coefficient(coefficients, k: int, position: int, stacked: bool):
    """coefficients[k, position] (stacked) or coefficients[k], as a scalar where the tensor
    has one coefficient: one slice and one reshape, the fewest ops per tensor for trees of
    thousands of tensors to trace and compile (a coefficient of the tensor's rank costs
    XLA a reshape more for each of its three uses)."""
    shape = coefficients.shape
    lead = 2 if stacked else 1
    start = (k, position)[:lead] + (0,) * (len(shape) - lead)
    limit = (k + 1, position + 1)[:lead] + tuple(shape[lead:])
    kept = () if all(d == 1 for d in shape[lead:]) else tuple(shape[lead:])
    return lax.reshape(lax.slice(coefficients, start, limit), kept)


def _pad_members(coefficients):
    """Stacked coefficients (3, members, ...) padded with zeros to `GROUP_MAX_MEMBERS` members.

    XLA:CPU compiles each distinct fused computation once, and a tensor's step reads
    its coefficients at its position in its group: with one array shape for every
    group, the steps of tensors at the same position in groups of different sizes
    compile once (on 2,000 tensors, 128 distinct step kernels instead of 208).
    """
    missing = _batching.GROUP_MAX_MEMBERS - coefficients.shape[1]
    if missing <= 0:
        return coefficients
    padding = [(0, 0)] * coefficients.ndim
    padding[1] = (0, missing)
    return jnp.pad(coefficients, padding)


def _fromage_updates(
    param_leaves, update_leaves, groups, initial_norms, learning_rate, p_bound, valid, new_leaves
):
    """W' − W for every leaf of `groups` into `new_leaves`: one elementwise pass per tensor
    (`initial_norms`: per group).

    The scalar part (norm ratios, the bound) is computed per group of tensors
    whose norms were reduced together, so a tree of thousands of small tensors
    compiles to a few scalar operations per group rather than per tensor.
    """
    for group, initial_norm in zip(groups, initial_norms):
        dtype = _step_dtype(param_leaves, update_leaves, group)
        param_coefficient, update_coefficient, update_multiplier = _step.nan_where_invalid(
            valid,
            *_step.step_coefficients(
                group.stats.param_norm,
                group.stats.update_norm,
                group.stats.cosine,
                initial_norm,
                learning_rate,
                p_bound,
                dtype,
            ),
        )
        # Materialised once per group in one array, so each tensor's step reads its
        # three numbers through slices rather than carrying the scalar math into its
        # elementwise loop (three arrays per tensor cost 2,000-tensor trees a quarter
        # more compile time). (One vector for all the groups of a run, sliced per group,
        # compiled 2.5x slower: XLA:CPU then emits each slice's kernel with every group's
        # operands.)
        coefficients = jnp.stack(
            jnp.broadcast_arrays(param_coefficient, update_coefficient, update_multiplier)
        )
        if group.stacked:
            coefficients = _pad_members(coefficients)
        coefficients = lax.optimization_barrier(coefficients)
        for position, i in enumerate(group.indices):
            # lax primitives rather than jnp indexing and arithmetic: tracing stays
            # a few binds per tensor on trees of thousands of tensors.
            a, b, c = (_coefficient(coefficients, k, position, group.stacked) for k in range(3))
            w, g = _as(param_leaves[i], dtype), _as(update_leaves[i], dtype)
            new_w = _times(a, w)
            new_g = _times(b, _times(c, g))  # c·g is exact: in value this is b·2**e·g
            # The sum's order only steers which product XLA:CPU fuses into an FMA: in
            # these orders every step rounds bitwise as the a·W + b·g of the previous
            # releases did (the other orders differ by an ulp), so runs reproduce.
            new = lax.add(new_g, new_w) if p_bound is None else lax.add(new_w, new_g)
            new_leaves[i] = _as(new, param_leaves[i].dtype)


def fromage(
    learning_rate: optax.ScalarOrSchedule = 0.01,
    p_bound: float | None = None,
    *,
    layer_axes: Any = None,
    axis_name: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""The Fromage optimiser: every tensor moves by the same relative amount.

    For every parameter tensor W with gradient g and learning rate η:

    .. math::

      W' = \frac{W - η \frac{‖W‖_F}{‖g‖_F} g}{\sqrt{1 + η^2}}

    (the plain ``W − η g`` when ``‖W‖ = 0`` or ``‖g‖ = 0``); with ``p_bound = p``
    a tensor whose norm exceeds ``p·‖W₀‖`` (W₀: the tensor at ``init``) is then
    scaled back to that norm. The returned update is ``W' − W``, so
    ``optax.apply_updates`` yields W'.

    This is the fused form of::

      optax.chain(scale_by_fromage(), optax.scale_by_learning_rate(lr),
                  control_weight_norm(lr), bound_weight_norm(p_bound))

    computing ‖W‖, ‖g‖ (and ⟨W, g⟩ for p_bound) in one read of each tensor and
    the step in a second one. Unlike ``optax.fromage`` it does not clamp norms,
    so tensors that start at zero (biases) take full-size steps.

    Norms are accumulated in at least float32 and cannot overflow or underflow,
    and the product η‖W‖/‖g‖·g is formed so that it cannot either: W and g may
    each be scaled by anything in [1e-30, 1e30], η may be any finite value, and
    the step stays exact to float32 rounding. Subnormal elements may be flushed
    to zero by the hardware. A NaN or Inf gradient makes that tensor's step
    non-finite, as with any optax optimiser, and so does a tensor of finite
    elements whose norm exceeds the largest finite value of its accumulation
    dtype (float32: 3.4e38): its step is NaN rather than a rounded ratio of 0 or
    inf. Wrap with ``optax.apply_if_finite`` to skip steps with a non-finite
    gradient; chain ``optax.apply_if_finite(optax.identity(), n)`` after
    ``fromage`` to skip every non-finite step.

    Hyperparameters that arrive at run time (a schedule's value, or
    ``optax.inject_hyperparams`` under jit) are not checked by an error: an
    invalid one (η NaN or ±inf, p_bound NaN, ±inf or ≤ 0) makes the whole step
    NaN; chain ``optax.apply_if_finite(optax.identity(), n)`` after ``fromage``
    to skip such steps. η = 0 (a constant, or a schedule's warm-up from 0)
    leaves every tensor unchanged, except that with p_bound a tensor already
    above ``p·‖W₀‖`` (possible with p < 1) is still scaled back to it; a negative
    run-time η takes the same-sized step uphill, with the bound still applied.

    Args:
      learning_rate: η, a float ≥ 0 (finite in float32) or an optax schedule
        ``count -> η`` returning a scalar. It is the relative size of each step
        (0.01 moves a tensor by ~1%).
      p_bound: None, or p > 0: cap every tensor's norm at ``p·‖W₀‖``. A tensor
        that is zero at init is then held at zero (the authors' reference
        behaviour); leave such tensors out with ``optax.masked``.
      layer_axes: None (every tensor is one layer), or per leaf an int or tuple
        of ints naming axes that index separate layers (e.g. 0 for blocks stacked
        by ``nn.scan``), as one value, a pytree prefix of the params, or a
        callable ``params -> prefix``. Norms, the zero-norm rule and the bound
        are then per slice.
      axis_name: inside ``shard_map``/``pmap``, the mesh axis name (or names, or
        a pytree prefix of those, None for replicated leaves) over which
        tensors are sharded, so norms are global.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; its ``update`` needs params.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> import fromage_optax
      >>> params = {"w": jnp.array([3.0, 4.0]), "b": jnp.zeros(2)}
      >>> grads = {"w": jnp.array([1.0, 0.0]), "b": jnp.array([1.0, 1.0])}
      >>> opt = fromage_optax.fromage(learning_rate=0.1)
      >>> state = opt.init(params)
      >>> updates, state = opt.update(grads, state, params)
      >>> new = optax.apply_updates(params, updates)
      >>> print([round(float(x), 4) for x in new["w"]], [round(float(x), 4) for x in new["b"]])
      [2.4876, 3.9801] [-0.0995, -0.0995]

    References:
      Bernstein, Vahdat, Yue, Liu. *On the distance between two neural networks
      and the stability of learning*. NeurIPS 2020. https://arxiv.org/abs/2002.03432
    """
    name = "fromage"
    _validation.check_learning_rate(learning_rate, name)
    _validation.check_p_bound(p_bound, name)
    _leaf_options.check_axis_name_arg(axis_name, name)
    if p_bound is not None:
        _register_with_flax_serialization()

    def init_fn(params):
        _validation.check_float_leaves(params, name)
        initial_norms = None
        if p_bound is not None:
            leaves = [jnp.asarray(w) for w in jax.tree.leaves(params)]
            leaf_layer_axes = _leaf_options.per_leaf_layer_axes(layer_axes, params)
            leaf_axis_names = _leaf_options.per_leaf_axis_names(axis_name, params)
            norms = tensor_norms(leaves, leaf_layer_axes, leaf_axis_names)
            initial_norms = _flat_norms(norms, _layout(leaves, leaf_layer_axes, leaf_axis_names))
        return FromageState(count=jnp.zeros([], jnp.int32), initial_norms=initial_norms)

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        param_leaves, update_leaves, treedef = _validation.checked_leaves(updates, params, name)
        if not hasattr(state, "count") or not hasattr(state, "initial_norms"):
            raise TypeError(
                f"{name}: the state must be the FromageState that this optimiser's init "
                f"returned, got {type(state).__name__}. Pass opt.init(params) (or the "
                "state that the previous update returned)."
            )
        leaf_layer_axes = _leaf_options.per_leaf_layer_axes(layer_axes, params)
        leaf_axis_names = _leaf_options.per_leaf_axis_names(axis_name, params)
        split = None
        if p_bound is not None:
            _check_layout(
                state.initial_norms,
                _layout(param_leaves, leaf_layer_axes, leaf_axis_names),
                params,
                name,
            )
            split = _split_norms(state.initial_norms, param_leaves, leaf_layer_axes, name)

        eta = learning_rate_at(learning_rate, state.count, name)
        valid = _step.hyperparameters_valid(eta, p_bound)

        def steps(runs):
            # One run of groups at a time, each behind its own branch: norms, then the
            # exact norms, then the steps.
            new_leaves: list = [None] * len(param_leaves)
            after = None
            for run in runs:
                # With p_bound, ⟨W, g⟩ of small tensors is reduced in the same read as their
                # norms (they are in the cache, and a branch fewer compiles faster); a large
                # tensor's only on steps where some tensor of its run could pass its bound.
                lazy = p_bound is not None and any(group.large for group in run)
                plain = _norms.plain_norms(
                    run,
                    param_leaves,
                    update_leaves,
                    inner_product=p_bound is not None and not lazy,
                    after=after,
                )
                initial_norms = [None if split is None else _group_norms(split, g) for g in run]
                groups = _norms.finish(
                    plain,
                    # Under p_bound a tensor that started at zero (‖W₀‖ = 0) stays at zero.
                    exact_zero_where=None if p_bound is None else initial_norms,
                    inner_product_when=_any_could_pass_bound(
                        param_leaves, update_leaves, initial_norms, eta, p_bound, plain.stats
                    )
                    if lazy
                    else None,
                )
                _fromage_updates(
                    param_leaves,
                    update_leaves,
                    groups,
                    initial_norms,
                    eta,
                    p_bound,
                    valid,
                    new_leaves,
                )
                after = groups[0].stats.param_norm
            return new_leaves

        new_leaves = _norms.per_platform(
            steps, param_leaves, update_leaves, leaf_layer_axes, leaf_axis_names
        )
        new_state = FromageState(optax.safe_increment(state.count), state.initial_norms)
        return jax.tree.unflatten(treedef, new_leaves), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
