"""Per-leaf options given as pytree prefixes: `layer_axes` and `axis_name`.

Both options are given once for a whole parameter tree, as a single value for
every leaf or as a pytree *prefix* of the params (a value at a subtree applies
to every leaf below it). `layer_axes` may also be a callable `params -> prefix`,
which keeps working when a wrapper such as `optax.masked` hands the transform a
params tree with some leaves replaced by `optax.MaskedNode`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from fromage_optax._validation import leaf_paths

LayerAxes = None | int | Sequence[int]
AxisName = None | str | Sequence[str]


def _is_layer_axes_value(x: Any) -> bool:
    if x is None or isinstance(x, (int, np.integer)):
        return not isinstance(x, bool)
    return isinstance(x, tuple) and all(
        isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in x
    )


def _is_axis_name_value(x: Any) -> bool:
    if x is None or isinstance(x, str):
        return True
    return isinstance(x, tuple) and len(x) > 0 and all(isinstance(i, str) for i in x)


def _broadcast_prefix(prefix: Any, tree: Any, is_value: Callable[[Any], bool], option: str):
    """Expands a prefix tree into one value per leaf of `tree`."""
    if is_value(prefix):
        return [prefix] * len(jax.tree.leaves(tree))
    per_leaf: list[Any] = []

    def expand(value, subtree):
        if not is_value(value):
            raise TypeError(
                f"{option}: entries must be None, an int or a tuple of ints"
                if option == "layer_axes"
                else f"{option}: entries must be None, a mesh axis name or a tuple of names"
            )
        per_leaf.extend([value] * len(jax.tree.leaves(subtree)))

    try:
        jax.tree.map(expand, prefix, tree, is_leaf=is_value)
    except ValueError as error:
        raise ValueError(
            f"{option} must be one value for all leaves or a pytree prefix of the params "
            f"(same keys, a value at a subtree covers every leaf below it): {error}"
        ) from None
    return per_leaf


def _normalise_layer_axes(value: LayerAxes, leaf: Any, path: str) -> tuple[int, ...]:
    if value is None:
        return ()
    axes = (value,) if isinstance(value, (int, np.integer)) else tuple(value)
    ndim = np.ndim(leaf)
    normalised = []
    for axis in axes:
        axis = int(axis)
        if not -ndim <= axis < ndim:
            raise ValueError(
                f"layer_axes: axis {axis} is out of range for the parameter at {path}, "
                f"which has shape {np.shape(leaf)}. Give the axes that index separate layers "
                "(e.g. 0 for a stack made by nn.scan), or None for a single layer."
            )
        normalised.append(axis % ndim)
    if len(set(normalised)) != len(normalised):
        raise ValueError(f"layer_axes: repeated axis in {axes} for the parameter at {path}.")
    return tuple(sorted(normalised))


def per_leaf_layer_axes(layer_axes: Any, params: Any) -> list[tuple[int, ...]]:
    """One sorted tuple of non-negative layer axes per params leaf."""
    if callable(layer_axes):
        layer_axes = layer_axes(params)
    values = _broadcast_prefix(layer_axes, params, _is_layer_axes_value, "layer_axes")
    leaves = jax.tree.leaves(params)
    paths = leaf_paths(params) if any(v is not None for v in values) else [""] * len(leaves)
    return [
        _normalise_layer_axes(value, leaf, path) for value, leaf, path in zip(values, leaves, paths)
    ]


def per_leaf_axis_names(axis_name: Any, params: Any) -> list[tuple[str, ...]]:
    """One tuple of mesh axis names (empty: not sharded) per params leaf."""
    values = _broadcast_prefix(axis_name, params, _is_axis_name_value, "axis_name")
    per_leaf = [() if v is None else ((v,) if isinstance(v, str) else tuple(v)) for v in values]
    check_axis_names_bound(per_leaf, params)
    return per_leaf


def check_axis_name_arg(axis_name: Any, name: str) -> None:
    """Rejects an `axis_name` argument that is neither a name, names, None nor a tree."""
    if isinstance(axis_name, (int, float)) and not isinstance(axis_name, bool):
        raise TypeError(
            f"{name}: axis_name must be a mesh axis name (str), a tuple of names, None, or a "
            f"pytree prefix of those; got {axis_name!r}."
        )
    if isinstance(axis_name, list) and axis_name and all(isinstance(a, str) for a in axis_name):
        raise TypeError(
            f"{name}: axis_name={axis_name!r} is a list of names; several mesh axes are given "
            f"as a tuple, axis_name={tuple(axis_name)!r} (a list would be read as a pytree "
            "prefix of a list of params, one entry per tensor)."
        )


def _axis_size(axis_name: str, path: str) -> int:
    try:
        return int(jax.lax.axis_size(axis_name))
    except NameError:
        raise ValueError(
            f"axis_name: {axis_name!r} (for the parameter at {path}) is not a mesh axis here. "
            "axis_name names the shard_map/pmap axes over which a tensor is sharded, so call "
            "update (and init with p_bound) inside shard_map over a mesh with that axis, or "
            "pass axis_name=None outside shard_map."
        ) from None


def check_axis_names_bound(per_leaf: Sequence[tuple[str, ...]], params: Any) -> None:
    """Rejects mesh axis names that are not bound here (outside shard_map, or misspelt)."""
    checked: set[str] = set()
    paths = None
    for index, names in enumerate(per_leaf):
        for axis in names:
            if axis not in checked:
                paths = paths or leaf_paths(params)
                _axis_size(axis, paths[index])
                checked.add(axis)


def global_reduced_size(leaf: Any, layer_axes: tuple[int, ...], axis_names: tuple[str, ...]):
    """How many elements one norm of `leaf` sums over, across the devices of `axis_names`."""
    shape = np.shape(leaf)
    local = math.prod(d for a, d in enumerate(shape) if a not in layer_axes)
    return local * math.prod(int(jax.lax.axis_size(n)) for n in axis_names)
