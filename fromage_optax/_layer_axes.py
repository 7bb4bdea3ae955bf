"""`scanned_layer_axes`: the `layer_axes` tree for a model with scanned (stacked) layers.

`flax.linen.scan` (with ``variable_axes={"params": 0}``) and `nnx.scan` / `nnx.vmap`
store the L copies of a block as one set of tensors with a leading layer axis,
under the name of the scanned module (or attribute). Fromage's norms are per
layer, so such tensors need ``layer_axes=0``; every other tensor is one layer.
This module only walks the params pytree by its key paths, so it works for
plain dicts, linen `FrozenDict`s and `nnx.State` without importing flax.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import optax


def _key_name(key: Any) -> Any:
    """The name a key-path entry stands for: a dict key, an attribute, an index."""
    for field in ("key", "name", "idx"):
        if hasattr(key, field):
            return getattr(key, field)
    return key


def _masked_out_under(params: Any, names: set) -> bool:
    """Whether a subtree named in `names` is there but holds only `optax.MaskedNode`s: an
    `optax.masked` (or `multi_transform`) partition that has none of the scanned leaves."""
    masked_paths = [
        path
        for path, leaf in jax.tree_util.tree_flatten_with_path(
            params, is_leaf=lambda x: isinstance(x, optax.MaskedNode)
        )[0]
        if isinstance(leaf, optax.MaskedNode)
    ]
    return any(_key_name(key) in names for path in masked_paths for key in path)


def scanned_layer_axes(
    params: Any,
    module_name: str | Sequence[str],
    axis: int | tuple[int, ...] = 0,
) -> Any:
    """Builds `layer_axes` for params whose scanned blocks are stacked along `axis`.

    Every leaf that lies below a subtree whose key equals `module_name` (at any
    depth) gets `axis`; every other leaf gets None (one layer per tensor).

    Args:
      params: the parameter pytree (dict, `FrozenDict`, `nnx.State`, ...).
      module_name: the name of the scanned module: for linen, the ``name=`` of
        the ``nn.scan``-ed module (``"ScanBlock_0"`` etc. if unnamed); for nnx,
        the attribute holding the ``nnx.vmap``-created blocks. A sequence of
        names marks several scanned stacks.
      axis: the axis (or axes, for nested scans) that index layers in those
        tensors; 0 for ``variable_axes={"params": 0}``.

    Returns:
      A pytree with the structure of `params`, holding `axis` or None at every
      leaf: pass it as ``layer_axes=``, or pass
      ``functools.partial(scanned_layer_axes, module_name=...)`` so it is
      rebuilt from whatever params tree the transform sees (e.g. under
      ``optax.masked``).

    Raises:
      ValueError: if no leaf lies under `module_name` (a misspelt name would
        otherwise silently give whole-stack norms), unless the leaves there are
        all masked out (``optax.MaskedNode``: a partition of ``optax.masked`` or
        ``optax.multi_transform`` that holds none of the scanned leaves).

    Example:
      >>> import jax.numpy as jnp
      >>> params = {"layers": {"kernel": jnp.ones((4, 3, 3))}, "head": jnp.ones((3, 2))}
      >>> scanned_layer_axes(params, "layers")
      {'head': None, 'layers': {'kernel': 0}}
    """
    names = {module_name} if isinstance(module_name, str) else set(module_name)
    found = False

    def leaf_axes(path, leaf):
        nonlocal found
        del leaf
        if any(_key_name(key) in names for key in path):
            found = True
            return axis
        return None

    layer_axes = jax.tree_util.tree_map_with_path(leaf_axes, params)
    if not found and jax.tree.leaves(params) and not _masked_out_under(params, names):
        top_keys = [
            jax.tree_util.keystr(path)
            for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]
        ][:5]
        raise ValueError(
            f"scanned_layer_axes: no parameter lies under a key named {sorted(names)}; "
            f"the first parameter paths are {top_keys}. Pass the name the scanned module "
            "has in the params tree."
        )
    return layer_axes
