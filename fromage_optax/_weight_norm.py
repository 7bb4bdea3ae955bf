"""Steps 2 and 3 of Fromage: keep weight norms from growing, and cap them."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fromage_optax import _leaf_options, _step, _validation
from fromage_optax._learning_rate import learning_rate_at
from fromage_optax._norms import accumulation_dtype, tensor_norms


class ControlWeightNormState(NamedTuple):
    """State of `control_weight_norm`: the step count (int32) for schedules."""

    count: jax.Array  # type: ignore[assignment]  # a field named like tuple.count, as in optax


class BoundWeightNormState(NamedTuple):
    """State of `bound_weight_norm`: ‖W₀‖ per tensor (per layer slice), from `init`."""

    initial_norms: Any


def _working_dtype(param, update):
    return jnp.promote_types(accumulation_dtype(param.dtype), update.dtype)


def control_weight_norm(learning_rate: optax.ScalarOrSchedule) -> optax.GradientTransformation:
    r"""Step 2 of Fromage: divides the updated weights by √(1 + η²).

    Turns an update u into ``(W + u)/√(1+η²) − W``, with η read from the same
    schedule step as ``optax.scale_by_learning_rate``. After a step that is
    orthogonal to W this keeps ‖W‖ unchanged (to second order in general), so
    weights do not grow without bound.

    A run-time η that is NaN or ±inf (a schedule, ``optax.inject_hyperparams``
    under jit) makes the update NaN (``optax.apply_if_finite(optax.identity(),
    n)`` chained after it skips such steps).

    Args:
      learning_rate: η, a float ≥ 0 (0 leaves W unchanged) or an optax schedule.

    Returns:
      An ``optax.GradientTransformation``; its ``update`` needs params.

    Example:
      >>> import jax.numpy as jnp
      >>> import fromage_optax
      >>> t = fromage_optax.control_weight_norm(0.75)
      >>> u, _ = t.update(jnp.array([0.0]), t.init(None), jnp.array([1.0]))
      >>> print(u)  # W' = 1/√(1 + 0.5625) = 0.8
      [-0.2]

    References:
      Bernstein et al., NeurIPS 2020, https://arxiv.org/abs/2002.03432
    """
    name = "control_weight_norm"
    _validation.check_learning_rate(learning_rate, name)

    def init_fn(params):
        del params
        return ControlWeightNormState(count=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        if not isinstance(getattr(state, "count", None), (jax.Array, np.ndarray)):
            raise TypeError(
                f"{name}: the state must be the ControlWeightNormState that init returned, got "
                f"{type(state).__name__}. Pass t.init(params) (or the state that the previous "
                "update returned)."
            )
        _validation.checked_leaves(updates, params, name)
        eta = learning_rate_at(learning_rate, state.count, name)
        valid = _step.hyperparameters_valid(eta)

        def leaf_update(u, w):
            u, w = jnp.asarray(u), jnp.asarray(w)
            dtype = _working_dtype(w, u)
            control = _step.norm_control(eta, dtype)
            shrink, shrink_minus_one = _step.nan_where_invalid(
                valid, control.shrink, control.shrink_minus_one
            )
            new_u = shrink * u.astype(dtype) + shrink_minus_one * w.astype(dtype)
            return new_u.astype(u.dtype)

        new_updates = jax.tree.map(leaf_update, updates, params)
        return new_updates, ControlWeightNormState(optax.safe_increment(state.count))

    return optax.GradientTransformation(init_fn, update_fn)


def bound_weight_norm(
    p_bound: float, *, layer_axes: Any = None, axis_name: Any = None
) -> optax.GradientTransformation:
    r"""Step 3 of Fromage: caps every tensor's norm at ``p_bound · ‖W₀‖``.

    ``init`` records ‖W₀‖ of every tensor. ``update`` turns u into ``W'' − W``
    where ``W' = W + u`` and ``W'' = W' · p‖W₀‖/‖W'‖`` if ``‖W'‖ > p‖W₀‖``, else
    W'. A tensor that is zero at init is therefore held at zero.

    Args:
      p_bound: p > 0. With ``optax.inject_hyperparams`` it may change at run
        time, since the state keeps ‖W₀‖ rather than the bound; a run-time
        value that is NaN, ±inf or ≤ 0 makes the update NaN.
      layer_axes: axes indexing separate layers, per leaf (see ``fromage``).
      axis_name: mesh axis name(s) to take global norms over (see ``fromage``).

    Returns:
      An ``optax.GradientTransformation``; its ``update`` needs params.

    Example:
      >>> import jax.numpy as jnp
      >>> import fromage_optax
      >>> t = fromage_optax.bound_weight_norm(2.0)
      >>> w = jnp.array([3.0, 4.0])
      >>> u, _ = t.update(jnp.array([27.0, 36.0]), t.init(w), w)
      >>> print(w + u)  # ‖w + u‖ = 50 > 2·5, so it is scaled back to norm 10
      [6. 8.]

    References:
      Bernstein et al., NeurIPS 2020, https://arxiv.org/abs/2002.03432
    """
    name = "bound_weight_norm"
    if p_bound is None:
        raise ValueError(f"{name}: p_bound is None. Pass a number > 0, or leave the transform out.")
    _validation.check_p_bound(p_bound, name)
    _leaf_options.check_axis_name_arg(axis_name, name)

    def norms_of(tensors_tree, params):
        leaves, treedef = jax.tree.flatten(tensors_tree)
        norms = tensor_norms(
            [jnp.asarray(x) for x in leaves],
            _leaf_options.per_leaf_layer_axes(layer_axes, params),
            _leaf_options.per_leaf_axis_names(axis_name, params),
        )
        return jax.tree.unflatten(treedef, norms)

    def init_fn(params):
        _validation.check_float_leaves(params, name)
        return BoundWeightNormState(initial_norms=norms_of(params, params))

    def _check_initial_norms(state, params, param_leaves):
        """Refuses a state made for other params: its norms must have the params' structure
        and, per tensor, the shape of its norms (size 1 on the reduced axes)."""
        norms = getattr(state, "initial_norms", None)
        fix = "Build the state with init on these params (and the same layer_axes)."
        if norms is None:
            raise TypeError(
                f"{name}: the state must be the BoundWeightNormState that init returned, got "
                f"{type(state).__name__}. {fix}"
            )
        if jax.tree.structure(norms) != jax.tree.structure(params):
            raise ValueError(
                f"{name}: the state's initial_norms are a tree of another structure than the "
                f"params ({jax.tree.structure(norms)} against {jax.tree.structure(params)}). "
                f"{fix}"
            )
        leaf_layer_axes = _leaf_options.per_leaf_layer_axes(layer_axes, params)
        paths = None
        for index, (w, norm, axes) in enumerate(
            zip(param_leaves, jax.tree.leaves(norms), leaf_layer_axes)
        ):
            expected = tuple(d if a in axes else 1 for a, d in enumerate(np.shape(w)))
            if np.shape(norm) != expected:
                paths = paths or _validation.leaf_paths(params)
                raise ValueError(
                    f"{name}: at {paths[index]} the state's initial norm has shape "
                    f"{np.shape(norm)}, but a parameter of shape {np.shape(w)} needs "
                    f"{expected}. {fix}"
                )

    def update_fn(updates, state, params=None):
        param_leaves, _, _ = _validation.checked_leaves(updates, params, name)
        _check_initial_norms(state, params, param_leaves)
        updates, params = jax.tree.map(jnp.asarray, (updates, params))
        new_params = jax.tree.map(
            lambda u, w: w.astype(_working_dtype(w, u)) + u.astype(_working_dtype(w, u)),
            updates,
            params,
        )
        new_norms = norms_of(new_params, params)

        valid = _step.hyperparameters_valid(0.0, p_bound)

        def leaf_update(u, w, new_w, new_norm, initial_norm):
            dtype = new_w.dtype
            _, factor = _step.bounded_norm_factor(
                new_norm.astype(dtype), initial_norm.astype(dtype), p_bound
            )
            (factor,) = _step.nan_where_invalid(valid, factor)
            return (factor * new_w - w.astype(dtype)).astype(u.dtype)

        new_updates = jax.tree.map(
            leaf_update, updates, params, new_params, new_norms, state.initial_norms
        )
        return new_updates, state

    return optax.GradientTransformation(init_fn, update_fn)
