"""`fromage`: the whole Fromage step as one fused optax transformation."""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from fromage_optax import _leaf_options, _validation
from fromage_optax._learning_rate import learning_rate_at, norm_control
from fromage_optax._norms import accumulation_dtype, grouped_pair_stats, tensor_norms


class FromageState(NamedTuple):
    """State of `fromage`.

    Attributes:
      count: number of steps taken (int32), the argument of a schedule.
      initial_norms: with `p_bound`, one vector holding ‖W₀‖ of every tensor
        in the order of ``jax.tree.leaves(params)`` (one entry per tensor, or
        one per layer slice with `layer_axes`, in row-major order of the layer
        axes), float32 (float64 if some parameter is); None without `p_bound`.
        A single array rather than a tree like the params: a state of one tiny
        array per tensor costs the runtime more per step than the bound itself
        on trees of thousands of tensors.
    """

    count: jax.Array  # type: ignore[assignment]  # a field named like tuple.count, as in optax
    initial_norms: Any


def _flat_norms(norms) -> jax.Array:
    """Per-leaf keepdims norms as one vector (see `FromageState.initial_norms`)."""
    if not norms:
        return jnp.zeros([0], jnp.float32)
    dtype = jnp.result_type(*norms)
    return jnp.concatenate([jnp.ravel(n).astype(dtype) for n in norms])


def _split_norms(flat, param_leaves, leaf_layer_axes, name):
    """`_flat_norms`' vector back to per-leaf keepdims norms, checked against the params."""
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
    return [
        flat[start:stop].reshape(shape)
        for start, stop, shape in zip(offsets[:-1], offsets[1:], shapes)
    ]


def bounded_norm_factor(new_norm, initial_norm, p_bound):
    """The factor that scales W' back to p·‖W₀‖ where ‖W'‖ exceeds it, else 1."""
    bound = jnp.asarray(p_bound, new_norm.dtype) * initial_norm
    exceeds = new_norm > bound
    return exceeds, jnp.where(exceeds, bound / jnp.where(exceeds, new_norm, 1), 1)


def _step_coefficients(stats, initial_norm, learning_rate, p_bound, dtype):
    """(a, b) with W' − W = a·W + b·g, from the norms (any shape, broadcast together)."""
    param_norm = stats.param_norm.astype(dtype)
    update_norm = stats.update_norm.astype(dtype)
    eta = jnp.asarray(learning_rate, dtype)
    shrink, shrink_minus_one = norm_control(learning_rate, dtype)

    use_ratio = (param_norm > 0) & (update_norm > 0)
    safe_update_norm = jnp.where(use_ratio, update_norm, 1)
    step_size = jnp.where(use_ratio, eta * param_norm / safe_update_norm, eta)
    update_coefficient = -shrink * step_size
    param_coefficient = shrink_minus_one

    if p_bound is not None:
        # ‖W'‖ without another pass over W': in the rescaled case
        # ‖W − η(‖W‖/‖g‖)g‖² = ‖W‖²((1 − ηc)² + η²(1 − c²)), c = cos(W, g).
        cosine = jnp.where(use_ratio, stats.cosine.astype(dtype), 0)
        rescaled_norm = param_norm * jnp.sqrt(
            jnp.square(1 - eta * cosine) + eta * eta * (1 - cosine) * (1 + cosine)
        )
        plain_norm = jnp.where(param_norm > 0, param_norm, eta * update_norm)
        new_norm = shrink * jnp.where(use_ratio, rescaled_norm, plain_norm)
        exceeds, factor = bounded_norm_factor(new_norm, initial_norm.astype(dtype), p_bound)
        param_coefficient = jnp.where(exceeds, factor * shrink - 1, shrink_minus_one)
        update_coefficient = factor * update_coefficient
    return param_coefficient, update_coefficient


def _step_dtype(param_leaves, update_leaves, group):
    """The dtype a group's step is computed in (its leaves share their dtypes)."""
    first = group.indices[0]
    return jnp.promote_types(
        accumulation_dtype(param_leaves[first].dtype), update_leaves[first].dtype
    )


def _could_pass_bound(stats, initial_norm, learning_rate, p_bound, dtype):
    """Where the step could take ‖W'‖ past p·‖W₀‖ for some cos(W, g).

    Elsewhere the bound leaves the step alone whatever the cosine is: ‖W'‖ is at
    most ‖W‖(1 + η)/√(1 + η²) (at cos = −1); a tensor that is zero at init is
    set to zero; and a step without the norm ratio does not use the cosine.
    """
    param_norm = stats.param_norm.astype(dtype)
    update_norm = stats.update_norm.astype(dtype)
    initial_norm = initial_norm.astype(dtype)
    eta = jnp.asarray(learning_rate, dtype)
    shrink, _ = norm_control(learning_rate, dtype)
    # The margin covers the rounding of `_step_coefficients`' ‖W'‖ (a few ulps).
    margin = 1 + 64 * jnp.finfo(dtype).eps
    largest_new_norm = shrink * param_norm * (1 + eta) * margin
    bound = jnp.asarray(p_bound, dtype) * initial_norm
    use_ratio = (param_norm > 0) & (update_norm > 0)
    return use_ratio & (initial_norm > 0) & ~(largest_new_norm <= bound)


def _any_could_pass_bound(param_leaves, update_leaves, initial_norms, eta, p_bound, groups):
    """Whether any tensor could pass its bound this step (else ⟨W, g⟩ is not needed)."""
    flags = [
        jnp.any(
            _could_pass_bound(
                group.stats,
                group.stacked_like(initial_norms),
                eta,
                p_bound,
                _step_dtype(param_leaves, update_leaves, group),
            )
        )
        for group in groups
    ]
    return jnp.any(jnp.stack(flags))


def _fromage_updates(param_leaves, update_leaves, groups, initial_norms, learning_rate, p_bound):
    """W' − W for every leaf: one elementwise pass per tensor.

    The scalar part (norm ratios, the bound) is computed per group of tensors
    whose norms were reduced together, so a tree of thousands of small tensors
    compiles to a few scalar operations per group rather than per tensor.
    """
    new_leaves: list = [None] * len(param_leaves)
    for group in groups:
        dtype = _step_dtype(param_leaves, update_leaves, group)
        initial_norm = None if p_bound is None else group.stacked_like(initial_norms)
        param_coefficient, update_coefficient = _step_coefficients(
            group.stats, initial_norm, learning_rate, p_bound, dtype
        )
        # Materialised once per group, so each tensor's step reads two numbers
        # rather than carrying the scalar math into its elementwise loop.
        param_coefficient, update_coefficient = jax.lax.optimization_barrier(
            (param_coefficient, update_coefficient)
        )
        for position, i in enumerate(group.indices):
            w, g = param_leaves[i], update_leaves[i]
            new_w = group.member(param_coefficient, position) * w.astype(dtype)
            new_g = group.member(update_coefficient, position) * g.astype(dtype)
            new_leaves[i] = (new_w + new_g).astype(w.dtype)
    return new_leaves


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

    Norms are accumulated in at least float32 and cannot overflow or underflow:
    multiplying every gradient by any c in [1e-30, 1e30] leaves the step
    unchanged. A NaN or Inf gradient makes that tensor's step non-finite, as with
    any optax optimiser; wrap with ``optax.apply_if_finite`` to skip such steps.

    Args:
      learning_rate: η, a positive float or an optax schedule ``count -> η``.
        It is the relative size of each step (0.01 moves a tensor by ~1%).
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

    def init_fn(params):
        _validation.check_float_leaves(params, name)
        initial_norms = None
        if p_bound is not None:
            leaves = jax.tree.leaves(params)
            norms = tensor_norms(
                leaves,
                _leaf_options.per_leaf_layer_axes(layer_axes, params),
                _leaf_options.per_leaf_axis_names(axis_name, params),
            )
            initial_norms = _flat_norms(norms)
        return FromageState(count=jnp.zeros([], jnp.int32), initial_norms=initial_norms)

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        param_leaves, update_leaves, treedef = _validation.checked_leaves(updates, params, name)
        leaf_layer_axes = _leaf_options.per_leaf_layer_axes(layer_axes, params)
        initial_norms = (
            [None] * len(param_leaves)
            if p_bound is None
            else _split_norms(state.initial_norms, param_leaves, leaf_layer_axes, name)
        )

        eta = learning_rate_at(learning_rate, state.count)
        groups = grouped_pair_stats(
            param_leaves,
            update_leaves,
            leaf_layer_axes,
            _leaf_options.per_leaf_axis_names(axis_name, params),
            with_cosine=p_bound is not None,
            # Under p_bound a tensor that started at zero is held exactly at zero.
            bound_norms=None if p_bound is None else initial_norms,
            cosine_needed=None
            if p_bound is None
            else functools.partial(
                _any_could_pass_bound, param_leaves, update_leaves, initial_norms, eta, p_bound
            ),
        )
        new_leaves = _fromage_updates(
            param_leaves, update_leaves, groups, initial_norms, eta, p_bound
        )
        new_state = FromageState(optax.safe_increment(state.count), state.initial_norms)
        return jax.tree.unflatten(treedef, new_leaves), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
