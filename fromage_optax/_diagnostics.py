r"""Deep relative trust diagnostics: how far each step moves each layer.

For a network of L layers whose weights W_l change by ΔW_l, Bernstein et al.
(2020) bound the relative change of its gradients by

.. math::

  \prod_{l=1}^{L} \left(1 + \frac{‖ΔW_l‖_F}{‖W_l‖_F}\right) - 1,

the *deep relative trust* of the step. Fromage keeps every ratio
‖ΔW_l‖/‖W_l‖ at about η; other optimisers let some layers move far more than
others. This module computes the ratios and the product for any update and
params trees, and offers `monitor_relative_trust`, an optax transformation that
records them in its state so a jitted train step can log them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from fromage_optax import _batching, _leaf_options, _validation
from fromage_optax._norms import paired_norm_stats

# Ratios are reported in float32 whatever the params' dtype: they are
# diagnostics, and one dtype keeps the monitor's state the same for every model.
RATIO_DTYPE = jnp.float32


class MonitorRelativeTrustState(NamedTuple):
    """State of `monitor_relative_trust`: the diagnostics of the latest step.

    All zeros after ``init``.

    Attributes:
      relative_update_norms: a tree like the params holding ‖ΔW‖/‖W‖ of every
        tensor (float32, shape ``()``, or the shape of its layer axes with
        ``layer_axes``), over all tensors whatever the ``mask``.
      max_relative_update_norm: the largest ratio over the selected layers.
      mean_relative_update_norm: the mean ratio over the selected layers.
      deep_relative_trust: ∏(1 + ratio) − 1 over the selected layers.
    """

    relative_update_norms: Any
    max_relative_update_norm: jax.Array
    mean_relative_update_norm: jax.Array
    deep_relative_trust: jax.Array


def _check_float_leaves(params: Any, name: str, selected: list[bool] | None = None) -> None:
    """Rejects non-float parameters (those that `selected` marks True, if given)."""
    paths = _validation.leaf_paths(params)
    for index, leaf in enumerate(jax.tree.leaves(params)):
        if selected is not None and not selected[index]:
            continue
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            fix = (
                "Leave it out with `mask` (or wrap the monitor in optax.masked)."
                if selected is not None
                else "Pass the float leaves only (e.g. filter the tree first)."
            )
            raise TypeError(
                f"{name}: the parameter at {paths[index]} has dtype {dtype}; relative update "
                f"norms are defined for floating-point tensors only. {fix}"
            )


def _leaf_ratio(param_norm, update_norm):
    """‖ΔW‖/‖W‖ from the two norms: inf for a moved zero tensor, NaN if either norm is."""
    nonzero_param = param_norm > 0
    # 0-norm params: a zero update did not move the layer (0); any other
    # update moved it infinitely far relative to its size (inf).
    ratio = jnp.where(
        nonzero_param,
        update_norm / jnp.where(nonzero_param, param_norm, 1),
        jnp.where(update_norm > 0, jnp.inf, 0),
    )
    # NaN in W or ΔW makes its norm NaN, which every comparison above hides.
    return jnp.where(jnp.isnan(param_norm) | jnp.isnan(update_norm), jnp.nan, ratio)


def _exact_ratios(params, updates, layer_axes, axis_names) -> list:
    """`_leaf_ratio` of every leaf pair, also where a norm of finite elements overflows.

    Such a norm is inf and the ratio inf/inf = NaN or a rounded 0 or inf: on the
    steps where one does, the ratios are taken again from W and ΔW both scaled by
    2**-(emax/2), which leaves their ratio alone and puts every finite tensor's
    norm in range (a dropped element is then below 2**-(emax/2) of the other
    tensor's norm: the ratio rounds as before).
    """

    def ratios_of(params, updates):
        stats = paired_norm_stats(params, updates, layer_axes, axis_names, with_cosine=False)
        ratios = [_leaf_ratio(s.param_norm, s.update_norm) for s in stats]
        return ratios, [jnp.isinf(s.param_norm) | jnp.isinf(s.update_norm) for s in stats]

    def scaled(tree):
        return [x * jnp.asarray(2.0 ** -(jnp.finfo(x.dtype).maxexp // 2), x.dtype) for x in tree]

    ratios, overflow = ratios_of(params, updates)
    if not ratios:
        return ratios

    def rescaled(ratios):
        again, _ = ratios_of(scaled(params), scaled(updates))
        return [jnp.where(o, r2, r) for o, r2, r in zip(overflow, again, ratios)]

    any_overflow = _batching.any_true(overflow)
    if isinstance(any_overflow, jax.core.Tracer):
        return lax.cond(any_overflow, rescaled, lambda ratios: ratios, ratios)
    return rescaled(ratios) if any_overflow else ratios


def _leaf_ratios(updates, params, layer_axes, axis_name, name, selected=None):
    """‖ΔW‖/‖W‖ per leaf (squeezed to the layer axes' shape), and the treedef.

    With `selected`, leaves it marks False may be of any dtype; a non-float one
    gets NaN ratios (it is not measured).
    """
    _validation.check_same_structure(updates, params, name)
    _check_float_leaves(params, name, selected)
    param_leaves, treedef = jax.tree.flatten(params)
    update_leaves = treedef.flatten_up_to(updates)
    axes_per_leaf = _leaf_options.per_leaf_layer_axes(layer_axes, params)
    names_per_leaf = _leaf_options.per_leaf_axis_names(axis_name, params)
    measured = [jnp.issubdtype(jnp.result_type(w), jnp.floating) for w in param_leaves]
    _validation.check_real_updates(update_leaves, params, name)
    kept = [
        [x for x, keep in zip(values, measured) if keep]
        for values in (
            [jnp.asarray(w) for w in param_leaves],
            [jnp.asarray(g) for g in update_leaves],
            axes_per_leaf,
            names_per_leaf,
        )
    ]
    stats = iter(_exact_ratios(*kept))
    ratios = []
    for param, axes, keep in zip(param_leaves, axes_per_leaf, measured, strict=True):
        layer_shape = tuple(np.shape(param)[a] for a in axes)
        if keep:
            ratio = next(stats)
            ratios.append(ratio.astype(RATIO_DTYPE).reshape(layer_shape))
        else:
            ratios.append(jnp.full(layer_shape, jnp.nan, RATIO_DTYPE))
    return ratios, treedef


def relative_update_norms(
    updates: Any, params: Any, *, layer_axes: Any = None, axis_name: Any = None
) -> Any:
    r"""The relative size ‖ΔW‖_F / ‖W‖_F of the update of every tensor.

    With ``layer_axes`` the ratio is per layer slice: for a stack of blocks
    made by ``nn.scan`` (``layer_axes=0``) every block gets its own ratio, equal
    to the ratio it would have as a separate tensor.

    A tensor with ‖W‖ = 0 gets ``inf`` if its update is non-zero (it moved
    infinitely far relative to its size) and ``0`` if its update is zero. A
    NaN anywhere in W or ΔW gives ``NaN`` (it is never hidden as 0 or inf).
    Norms are overflow-proof and accumulated in at least float32, so any scale
    of W and ΔW gives the right ratio (it is ``inf`` only if the ratio itself
    exceeds the float32 range).

    Args:
      updates: the updates ΔW, e.g. the output of an optimiser's ``update``
        (what ``optax.apply_updates`` adds to the params).
      params: the parameters W before the update; the same tree structure.
      layer_axes: None (every tensor is one layer), or per leaf an int or tuple
        of ints naming axes that index separate layers, as one value, a pytree
        prefix of the params, or a callable ``params -> prefix``.
      axis_name: inside ``shard_map``/``pmap``, the mesh axis name(s) over which
        tensors are sharded (or a pytree prefix of those), so norms are global.

    Returns:
      A tree like ``params`` whose leaves are float32 ratios: shape ``()`` per
      tensor, or the shape of its layer axes with ``layer_axes``.

    Example:
      >>> import jax.numpy as jnp
      >>> import fromage_optax
      >>> params = {"w": jnp.array([3.0, 4.0]), "b": jnp.zeros(2)}
      >>> updates = {"w": jnp.array([0.3, 0.4]), "b": jnp.zeros(2)}
      >>> ratios = fromage_optax.relative_update_norms(updates, params)
      >>> print({k: round(float(v), 4) for k, v in ratios.items()})
      {'b': 0.0, 'w': 0.1}

    References:
      Bernstein, Vahdat, Yue, Liu. *On the distance between two neural networks
      and the stability of learning*. NeurIPS 2020. https://arxiv.org/abs/2002.03432
    """
    name = "relative_update_norms"
    _leaf_options.check_axis_name_arg(axis_name, name)
    ratios, treedef = _leaf_ratios(updates, params, layer_axes, axis_name, name)
    return jax.tree.unflatten(treedef, ratios)


def _is_mask_value(x: Any) -> bool:
    return isinstance(x, (bool, np.bool_))


def _selected(mask: Any, params: Any) -> list[bool]:
    """One bool per params leaf: whether that tensor's layers are counted."""
    if mask is None:
        return [True] * len(jax.tree.leaves(params))
    if callable(mask):
        mask = mask(params)
    if _is_mask_value(mask):
        return [bool(mask)] * len(jax.tree.leaves(params))
    selected: list[bool] = []

    def expand(value, subtree):
        if not _is_mask_value(value):
            raise TypeError(
                "mask: entries must be Python bools (True: count this subtree's layers), "
                f"got {type(value).__name__}."
            )
        selected.extend([bool(value)] * len(jax.tree.leaves(subtree)))

    try:
        jax.tree.map(expand, mask, params, is_leaf=_is_mask_value)
    except ValueError as error:
        raise ValueError(
            "mask must be a bool, a pytree of bools with the params' structure (or a prefix "
            f"of it), or a callable params -> such a tree: {error}"
        ) from None
    return selected


def _selected_ratios(ratios: list, selected: list[bool]) -> jax.Array:
    """Every selected ratio (one per layer slice) in one flat float32 vector."""
    chosen = [jnp.ravel(r) for r, keep in zip(ratios, selected, strict=True) if keep]
    if not chosen:
        return jnp.zeros([0], RATIO_DTYPE)
    return jnp.concatenate(chosen)


def _log_deep_relative_trust(flat_ratios: jax.Array) -> jax.Array:
    return jnp.sum(jnp.log1p(flat_ratios))


def log_deep_relative_trust(
    updates: Any,
    params: Any,
    *,
    mask: Any = None,
    layer_axes: Any = None,
    axis_name: Any = None,
) -> jax.Array:
    r"""log(1 + deep relative trust) = Σ_l log(1 + ‖ΔW_l‖/‖W_l‖).

    The logarithm of the bound's growth factor; finite wherever every ratio is,
    even when ∏(1 + r_l) exceeds the float32 range (e.g. 1000 layers that each
    double in size give 1000·log 2 ≈ 693). Arguments as ``deep_relative_trust``.

    Returns:
      A float32 scalar ≥ 0.

    Example:
      >>> import jax.numpy as jnp
      >>> import fromage_optax
      >>> params, updates = jnp.ones((1000, 4)), jnp.ones((1000, 4))  # 1000 layers, r = 1
      >>> print(fromage_optax.deep_relative_trust(updates, params, layer_axes=0))
      inf
      >>> log_trust = fromage_optax.log_deep_relative_trust(updates, params, layer_axes=0)
      >>> print(round(float(log_trust), 2))
      693.15
    """
    name = "log_deep_relative_trust"
    _leaf_options.check_axis_name_arg(axis_name, name)
    selected = _selected(mask, params)
    ratios, _ = _leaf_ratios(updates, params, layer_axes, axis_name, name, selected)
    return _log_deep_relative_trust(_selected_ratios(ratios, selected))


def deep_relative_trust(
    updates: Any,
    params: Any,
    *,
    mask: Any = None,
    layer_axes: Any = None,
    axis_name: Any = None,
) -> jax.Array:
    r"""The deep relative trust of a step: ∏_l (1 + ‖ΔW_l‖/‖W_l‖) − 1.

    Bernstein et al. (2020) show that this bounds the relative change of a
    deep network's gradients when every layer l changes by ΔW_l: a step is
    trustworthy when it is small. Every tensor is a layer; with ``layer_axes``
    every slice is one.

    The product is computed as ``expm1(Σ log1p(r_l))``, which keeps full
    relative precision when the ratios are tiny (where ``1 + r`` would round
    to 1). The result is ``inf`` when a ratio is (see ``relative_update_norms``)
    or when the true value exceeds the float32 range (about 3.4e38);
    ``log_deep_relative_trust`` gives its finite logarithm.

    Args:
      updates: the updates ΔW (what ``optax.apply_updates`` adds to the params).
      params: the parameters W before the update; the same tree structure.
      mask: None (all layers), or which tensors count: a bool, a pytree of
        bools with the params' structure or a prefix of it, or a callable
        ``params -> such a tree`` (as for ``optax.masked``). Leaves it leaves
        out may be of any dtype (an int step counter, say).
      layer_axes: axes indexing separate layers, per leaf (see
        ``relative_update_norms``).
      axis_name: mesh axis name(s) to take global norms over (see
        ``relative_update_norms``).

    Returns:
      A float32 scalar ≥ 0 (0 when no layer is selected).

    Example:
      >>> import jax.numpy as jnp
      >>> import fromage_optax
      >>> params = {"a": jnp.array([1.0, 0.0]), "b": jnp.array([0.0, 2.0])}
      >>> updates = {"a": jnp.array([0.1, 0.0]), "b": jnp.array([0.0, 0.2])}
      >>> print(round(float(fromage_optax.deep_relative_trust(updates, params)), 4))
      0.21

    References:
      Bernstein, Vahdat, Yue, Liu. *On the distance between two neural networks
      and the stability of learning*. NeurIPS 2020. https://arxiv.org/abs/2002.03432
    """
    name = "deep_relative_trust"
    _leaf_options.check_axis_name_arg(axis_name, name)
    selected = _selected(mask, params)
    ratios, _ = _leaf_ratios(updates, params, layer_axes, axis_name, name, selected)
    flat = _selected_ratios(ratios, selected)
    return jnp.expm1(_log_deep_relative_trust(flat))


def monitor_relative_trust(
    *,
    mask: Any = None,
    layer_axes: Any = None,
    axis_name: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Records how far each step moves each layer; leaves the updates unchanged.

    Put it last in a chain, so that the updates it sees are the ones applied to
    the params. Its state (a ``MonitorRelativeTrustState``) then holds, for
    the latest step, every ratio ‖ΔW‖/‖W‖, their max and mean, and the deep
    relative trust ∏(1 + ratio) − 1 — arrays that a jitted train step can
    return as metrics without host callbacks (see ``relative_trust_metrics``).
    Works after any optimiser.

    A tensor that starts at zero (a bias) has ratio ``inf`` on its first
    non-zero update, which makes that step's max, mean and deep relative trust
    ``inf``; to follow the weight matrices only, pass
    ``mask=lambda params: jax.tree.map(lambda w: w.ndim >= 2, params)``.

    Args:
      mask: which tensors count towards the max, mean and deep relative trust
        (see ``deep_relative_trust``); the per-tensor ratios cover all float
        tensors. Non-float leaves must be left out by the mask; their ratios
        are NaN (not measured).
      layer_axes: axes indexing separate layers, per leaf (see
        ``relative_update_norms``); slices then count as layers.
      axis_name: mesh axis name(s) to take global norms over (see
        ``relative_update_norms``).

    Returns:
      An ``optax.GradientTransformationExtraArgs``; its ``update`` needs params
      and returns the updates it was given.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> import fromage_optax
      >>> params = {"w": jnp.array([3.0, 4.0])}
      >>> opt = optax.chain(optax.sgd(0.1), fromage_optax.monitor_relative_trust())
      >>> state = opt.init(params)
      >>> updates, state = opt.update({"w": jnp.array([3.0, 4.0])}, state, params)
      >>> metrics = fromage_optax.relative_trust_metrics(state)
      >>> print(round(float(metrics["max_relative_update_norm"]), 4))
      0.1

    References:
      Bernstein, Vahdat, Yue, Liu. *On the distance between two neural networks
      and the stability of learning*. NeurIPS 2020. https://arxiv.org/abs/2002.03432
    """
    name = "monitor_relative_trust"
    _leaf_options.check_axis_name_arg(axis_name, name)

    def init_fn(params):
        selected = _selected(mask, params)
        _check_float_leaves(params, name, selected)
        leaves, treedef = jax.tree.flatten(params)
        axes_per_leaf = _leaf_options.per_leaf_layer_axes(layer_axes, params)
        zeros = [
            jnp.full(
                tuple(np.shape(leaf)[a] for a in axes),
                0 if jnp.issubdtype(jnp.result_type(leaf), jnp.floating) else jnp.nan,
                RATIO_DTYPE,
            )
            for leaf, axes in zip(leaves, axes_per_leaf, strict=True)
        ]
        zero = jnp.zeros([], RATIO_DTYPE)
        return MonitorRelativeTrustState(jax.tree.unflatten(treedef, zeros), zero, zero, zero)

    def update_fn(updates, state, params=None, **extra_args):
        del state, extra_args
        if params is None:
            raise ValueError(
                f"{name} needs the current parameters: call `update(updates, state, params)` "
                "(with optax.chain, pass `params=` to the chain's update). It measures every "
                "update relative to the norm of its parameter tensor."
            )
        selected = _selected(mask, params)
        ratios, treedef = _leaf_ratios(updates, params, layer_axes, axis_name, name, selected)
        flat = _selected_ratios(ratios, selected)
        if flat.size:
            max_ratio, mean_ratio = jnp.max(flat), jnp.mean(flat)
        else:
            max_ratio = mean_ratio = jnp.zeros([], RATIO_DTYPE)
        new_state = MonitorRelativeTrustState(
            relative_update_norms=jax.tree.unflatten(treedef, ratios),
            max_relative_update_norm=max_ratio,
            mean_relative_update_norm=mean_ratio,
            deep_relative_trust=jnp.expm1(_log_deep_relative_trust(flat)),
        )
        return updates, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _is_monitor_state(x: Any) -> bool:
    return isinstance(x, MonitorRelativeTrustState)


def relative_trust_metrics(opt_state: Any) -> dict[str, jax.Array]:
    """The latest step's relative trust metrics, from an optimiser's state.

    Finds the ``MonitorRelativeTrustState`` anywhere inside ``opt_state`` (a
    chain, ``optax.inject_hyperparams``, ``optax.masked``, ``MultiSteps``, ... ,
    nested to any depth). Pure, so it works inside a jitted train step.

    Args:
      opt_state: the state of an optimiser that contains exactly one
        ``monitor_relative_trust``.

    Returns:
      ``{"max_relative_update_norm", "mean_relative_update_norm",
      "deep_relative_trust"}``, float32 scalars (zeros before the first step).

    Raises:
      ValueError: if the state holds no monitor, or more than one.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> import fromage_optax
      >>> opt = optax.chain(optax.adam(1e-3), fromage_optax.monitor_relative_trust())
      >>> metrics = fromage_optax.relative_trust_metrics(opt.init({"w": jnp.ones(3)}))
      >>> sorted(metrics)
      ['deep_relative_trust', 'max_relative_update_norm', 'mean_relative_update_norm']
    """
    found = [
        x for x in jax.tree.leaves(opt_state, is_leaf=_is_monitor_state) if _is_monitor_state(x)
    ]
    if len(found) != 1:
        problem = (
            "contains no MonitorRelativeTrustState"
            if not found
            else f"contains {len(found)} MonitorRelativeTrustStates, so the metrics are ambiguous"
        )
        raise ValueError(
            f"relative_trust_metrics: the optimiser state {problem}. Put exactly one "
            "fromage_optax.monitor_relative_trust() last in the chain, e.g. "
            "optax.chain(optimiser, fromage_optax.monitor_relative_trust())."
        )
    state = found[0]
    return {
        "max_relative_update_norm": state.max_relative_update_norm,
        "mean_relative_update_norm": state.mean_relative_update_norm,
        "deep_relative_trust": state.deep_relative_trust,
    }
