"""`scale_by_fromage`: step 1 of Fromage, g ↦ g·‖W‖/‖g‖ per tensor."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from fromage_optax import _leaf_options, _step, _validation
from fromage_optax._norms import paired_norm_stats, power_of_two_scale


class ScaleByFromageState(NamedTuple):
    """`scale_by_fromage` keeps no state."""


def scale_by_fromage(
    *, layer_axes: Any = None, axis_name: Any = None
) -> optax.GradientTransformationExtraArgs:
    r"""Rescales every update to the norm of its parameter tensor.

    For each tensor W with update g: ``g ↦ g · ‖W‖_F / ‖g‖_F``, and g unchanged
    when either norm is 0 (the authors' reference rule; ``optax.scale_by_trust_ratio``
    instead clamps the norms). Norms are accumulated in at least float32, free
    of overflow for any scale of g; the result keeps g's dtype.

    Followed by ``optax.scale_by_learning_rate(lr)``, ``control_weight_norm(lr)``
    and ``bound_weight_norm(p)`` this is exactly ``fromage(lr, p)``.

    Args:
      layer_axes: axes indexing separate layers, per leaf (see ``fromage``).
      axis_name: mesh axis name(s) to take global norms over (see ``fromage``).

    Returns:
      An ``optax.GradientTransformationExtraArgs``; its ``update`` needs params.

    Example:
      >>> import jax.numpy as jnp
      >>> import fromage_optax
      >>> t = fromage_optax.scale_by_fromage()
      >>> u, _ = t.update(jnp.array([0.0, 2.0]), t.init(None), jnp.array([3.0, 4.0]))
      >>> print(u)
      [0. 5.]

    References:
      Bernstein et al., *On the distance between two neural networks and the
      stability of learning*, NeurIPS 2020. https://arxiv.org/abs/2002.03432
    """
    name = "scale_by_fromage"
    _leaf_options.check_axis_name_arg(axis_name, name)

    def init_fn(params):
        del params
        return ScaleByFromageState()

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        param_leaves, update_leaves, treedef = _validation.checked_leaves(updates, params, name)
        stats = paired_norm_stats(
            param_leaves,
            update_leaves,
            _leaf_options.per_leaf_layer_axes(layer_axes, params),
            _leaf_options.per_leaf_axis_names(axis_name, params),
            with_cosine=False,
        )
        new_leaves = []
        for g, s in zip(update_leaves, stats):
            # g·‖W‖/‖g‖ as (‖W‖/(‖g‖·2**-e))·(2**-e·g): no factor under- or overflows.
            scale, multiplier = power_of_two_scale(s.update_norm)
            use_ratio = (s.param_norm > 0) & (s.update_norm > 0)
            ratio = _step.safe_ratio(s.param_norm, s.update_norm * multiplier, use_ratio)
            ratio = jnp.where(use_ratio, ratio, scale)
            # A norm past the dtype's range would round the ratio to 0 or inf: NaN instead.
            overflow = jnp.isinf(s.param_norm) | jnp.isinf(s.update_norm)
            ratio = jnp.where(overflow, jnp.nan, ratio)
            dtype = jnp.promote_types(ratio.dtype, g.dtype)
            scaled = g.astype(dtype) * multiplier.astype(dtype)
            new_leaves.append((scaled * ratio.astype(dtype)).astype(g.dtype))
        return jax.tree.unflatten(treedef, new_leaves), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
