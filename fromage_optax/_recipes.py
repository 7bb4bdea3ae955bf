"""Fromage on the hidden weight matrices, AdamW on the rest: `kernel_mask`, `fromage_with_adamw`.

Fromage keeps every tensor near its initial norm. That suits the weight
matrices between two layers, whose scale a following normalisation or
nonlinearity can absorb, but not embeddings, normalisation gains or biases,
whose scale is part of what the model has to learn (and biases start at zero,
where a relative step has nothing to be relative to). The recipe therefore
splits the parameters by name and shape with ``optax.multi_transform``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import optax

from fromage_optax._fromage import fromage

FROMAGE_LABEL = "fromage"
ADAMW_LABEL = "adamw"


def _key_name(key: Any) -> str | None:
    """The name of a key-path entry (a dict key or an attribute) as a string; None for indices."""
    if isinstance(key, jax.tree_util.DictKey):
        return str(key.key)
    if isinstance(key, jax.tree_util.GetAttrKey):
        return key.name
    return None


def _is_flax_variable(x: Any) -> bool:
    """Whether `x` is a Flax NNX ``Variable`` (``nnx.Param``, ...), without importing flax."""
    return any(
        cls.__name__ == "Variable" and cls.__module__.startswith("flax.")
        for cls in type(x).__mro__
    )


def _names(value: Any, argument: str) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        raise TypeError(
            f"kernel_mask: {argument} must be a sequence of names such as ({value!r},), "
            f"not the string {value!r}."
        )
    names = tuple(value)
    if not all(isinstance(name, str) for name in names):
        raise TypeError(f"kernel_mask: {argument} must hold strings, got {names!r}.")
    return frozenset(names)


def kernel_mask(
    names: Sequence[str] | None = ("kernel",),
    *,
    exclude: Sequence[str] = (),
    min_ndim: int = 2,
) -> Callable[[Any], Any]:
    """A mask function selecting the hidden weight matrices of a params pytree.

    A leaf is selected (True) when all of these hold:

    * the last key of its path is one of `names` (with ``names=None``, any key:
      selection by shape alone);
    * it has at least `min_ndim` dimensions;
    * no key on its path is one of `exclude` (e.g. ``("output_head",)`` to give
      an untied output layer the other optimiser).

    Names are dict keys (compared as strings) and attribute names (``nnx.State``,
    dataclasses, named tuples); list and tuple indices are not names. With the
    defaults, the Dense and Conv kernels of a Flax model are selected (also the
    3-D kernels of blocks stacked by ``nn.scan``), while its embeddings
    (``"embedding"``), biases and LayerNorm scales are not. ``None`` and
    ``optax.MaskedNode`` are empty subtrees, not leaves: they stay as they are.

    Args:
      names: the leaf names that may be selected, or None for every name.
      exclude: names that, anywhere on a leaf's path, leave it unselected.
      min_ndim: the fewest dimensions a selected leaf has.

    Returns:
      A function ``params -> mask``: a pytree of the params' structure with a
      bool at every leaf. Use it as the ``mask`` of ``optax.masked`` or
      ``optax.adamw``, or directly as the labels of ``optax.multi_transform``
      with the keys ``True`` and ``False``.

    Raises:
      TypeError: if `names` or `exclude` is a single string or holds non-strings.
      ValueError: if `names` is empty or `min_ndim` is negative; and, from the
        returned function, if `names` is given but no leaf of the tree has a
        name (a bare array or a list of arrays), where ``names=None`` is meant.

    Example:
      >>> import jax.numpy as jnp
      >>> params = {
      ...     "embed": {"embedding": jnp.ones((10, 4))},
      ...     "dense": {"kernel": jnp.ones((4, 4)), "bias": jnp.zeros(4)},
      ...     "norm": {"scale": jnp.ones(4)},
      ... }
      >>> mask = kernel_mask()(params)
      >>> mask["dense"], mask["embed"], mask["norm"]
      ({'bias': False, 'kernel': True}, {'embedding': False}, {'scale': False})
      >>> kernel_mask(names=None)(params)["embed"]
      {'embedding': True}
    """
    leaf_names = _names(names, "names")
    excluded = _names(exclude, "exclude") or frozenset()
    if leaf_names is not None and not leaf_names:
        raise ValueError("kernel_mask: names is empty; give None to select by shape alone.")
    if isinstance(min_ndim, bool) or not isinstance(min_ndim, (int, np.integer)) or min_ndim < 0:
        raise ValueError(f"kernel_mask: min_ndim must be a non-negative int, got {min_ndim!r}.")

    def is_selected(path, leaf) -> bool:
        keys = [_key_name(key) for key in path]
        if leaf_names is not None and (not keys or keys[-1] not in leaf_names):
            return False
        ndim = len(leaf.shape) if hasattr(leaf, "shape") else np.ndim(leaf)
        return ndim >= min_ndim and not excluded.intersection(keys)

    def select(path, leaf):
        # An nnx.State holds its arrays in Variables (nnx.Param(value=...)): the leaf's
        # name is the Variable's key, not "value"; the mask keeps the Variable around it.
        if _is_flax_variable(leaf):
            return jax.tree.map(lambda x: is_selected(path, x), leaf)
        return is_selected(path, leaf)

    def mask_fn(params: Any) -> Any:
        paths = [
            path
            for path, _ in jax.tree_util.tree_flatten_with_path(params, is_leaf=_is_flax_variable)[
                0
            ]
        ]
        if (
            leaf_names is not None
            and paths
            and not any(path and _key_name(path[-1]) is not None for path in paths)
        ):
            raise ValueError(
                f"kernel_mask: names={sorted(leaf_names)}, but no leaf of the params has a "
                "name (a dict key or an attribute); the tree is a bare array or a list of "
                "arrays? Pass names=None to select by shape alone."
            )
        return jax.tree_util.tree_map_with_path(select, params, is_leaf=_is_flax_variable)

    return mask_fn


def fromage_with_adamw(
    learning_rate: optax.ScalarOrSchedule,
    adamw_learning_rate: optax.ScalarOrSchedule,
    *,
    fromage_mask: Any = None,
    p_bound: float | None = None,
    layer_axes: Any = None,
    momentum: float | None = None,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    weight_decay_mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """Fromage on the hidden weight matrices and AdamW on every other tensor.

    This is::

      optax.multi_transform(
          {"fromage": fromage(learning_rate, p_bound, layer_axes=layer_axes),
           "adamw": optax.adamw(adamw_learning_rate, b1, b2, eps, weight_decay,
                                mask=weight_decay_mask)},
          labels)

    with ``labels`` "fromage" where `fromage_mask` is True and "adamw"
    elsewhere; with `momentum` β the Fromage part is
    ``optax.chain(optax.trace(β), fromage(...))``, relative steps along a
    moving average of the gradients (not in the paper). Either group may be
    empty.

    Args:
      learning_rate: Fromage's η (a float or a schedule), the relative step of
        each selected tensor.
      adamw_learning_rate: AdamW's learning rate (a float or a schedule).
      fromage_mask: which leaves Fromage updates: a pytree of bools like the
        params (or a prefix of them), or a function ``params -> such a tree``;
        None means ``kernel_mask()``, the Dense/Conv kernels.
      p_bound: Fromage's p_bound (None: no bound). A selected tensor that is
        zero at init is then held at zero.
      layer_axes: Fromage's layer_axes, seen by the selected leaves only: one
        value for all of them (e.g. ``-1`` for a norm per output unit of every
        Dense kernel, as the authors' successor Nero does), or a callable
        ``params -> prefix``; a prefix tree must fit the params with the
        unselected leaves replaced by ``optax.MaskedNode``.
      momentum: None, or β in [0, 1) for the Fromage part's gradient average.
      b1, b2, eps: AdamW's moment decays and denominator constant.
      weight_decay: AdamW's decoupled weight decay (0: plain Adam).
      weight_decay_mask: AdamW's ``mask`` for the decay (None: every tensor
        AdamW updates); best a callable, since AdamW sees the params with the
        Fromage leaves replaced by ``optax.MaskedNode``.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose ``update`` needs params.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import fromage_optax
      >>> params = {
      ...     "embed": {"embedding": jnp.ones((10, 4))},
      ...     "dense": {"kernel": jnp.ones((4, 4)), "bias": jnp.zeros(4)},
      ... }
      >>> grads = jax.tree.map(jnp.ones_like, params)
      >>> opt = fromage_optax.fromage_with_adamw(0.01, 1e-3)
      >>> state = opt.init(params)
      >>> updates, state = opt.update(grads, state, params)
      >>> # Fromage moves the kernel by ~1% of its norm, Adam every other entry by ~lr.
      >>> step = lambda x: round(float(x[0]), 3)
      >>> step(updates["dense"]["kernel"][0]), step(updates["dense"]["bias"])
      (-0.01, -0.001)
      >>> step(updates["embed"]["embedding"][0])
      -0.001

    References:
      Bernstein, Vahdat, Yue, Liu. *On the distance between two neural networks
      and the stability of learning*. NeurIPS 2020. https://arxiv.org/abs/2002.03432
    """
    if momentum is not None and not 0 <= momentum < 1:
        raise ValueError(f"fromage_with_adamw: momentum must be None or in [0, 1), got {momentum}.")
    fromage_part: optax.GradientTransformation = fromage(
        learning_rate, p_bound, layer_axes=layer_axes
    )
    if momentum is not None:
        fromage_part = optax.chain(optax.trace(decay=momentum), fromage_part)
    adamw_part = optax.adamw(
        adamw_learning_rate,
        b1=b1,
        b2=b2,
        eps=eps,
        weight_decay=weight_decay,
        mask=weight_decay_mask,
    )
    selection = kernel_mask() if fromage_mask is None else fromage_mask

    def labels(params):
        mask = selection(params) if callable(selection) else selection
        return jax.tree.map(lambda selected: FROMAGE_LABEL if selected else ADAMW_LABEL, mask)

    return optax.multi_transform({FROMAGE_LABEL: fromage_part, ADAMW_LABEL: adamw_part}, labels)
