"""Argument and pytree checks shared by the Fromage transforms.

Every check runs at construction time or at trace time (it only looks at
static structure, shapes and dtypes), so none of them costs anything inside a
jitted step.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

NO_PARAMS_MSG = (
    "{name} needs the current parameters: call `update(updates, state, params)` "
    "(with optax.chain, pass `params=` to the chain's update). Fromage rescales every "
    "update by the norm of its parameter tensor, so it cannot run without them."
)


def is_concrete_number(value: Any) -> bool:
    """Whether `value` is a number whose value is known now (not a tracer)."""
    if isinstance(value, jax.core.Tracer):
        return False
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, (int, float, np.number)):
        return True
    if isinstance(value, (np.ndarray, jax.Array)):
        return np.ndim(value) == 0
    return False


def is_python_number(value: Any) -> bool:
    """Whether `value` is a plain Python int or float (a constant checked at construction)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# The largest η accepted: finite in float32 (the step never forms η², so any such η is safe).
MAX_LEARNING_RATE = float(np.finfo(np.float32).max)


def _check_traced_scalar(value: Any, argument: str, name: str) -> bool:
    """True for a traced hyperparameter (checked for shape only), False otherwise."""
    if not isinstance(value, jax.core.Tracer):
        return False
    if np.ndim(value) != 0:
        raise ValueError(
            f"{name}: {argument} must be a scalar, got a traced array of shape "
            f"{np.shape(value)} (e.g. from optax.inject_hyperparams). A vector would be "
            "broadcast differently for every group of tensors; use optax.multi_transform "
            "to give groups of tensors their own optimiser."
        )
    return True


def _check_not_an_array(value: Any, argument: str, name: str) -> None:
    if isinstance(value, (np.ndarray, jax.Array)) and np.ndim(value) != 0:
        raise ValueError(
            f"{name}: {argument} must be a scalar, got an array of shape {np.shape(value)}. "
            "Use optax.multi_transform to give groups of tensors their own optimiser."
        )


def check_learning_rate(learning_rate: Any, name: str) -> None:
    """Rejects a constant learning rate that is not a finite number ≥ 0.

    η = 0 is valid (a schedule's warm-up from 0, `optax.inject_hyperparams`
    rebuilding the transform with its current value): it leaves W unchanged,
    apart from p_bound's cap.

    A traced value (``optax.inject_hyperparams`` under jit) is checked for shape
    only; at run time an invalid one makes the step NaN (see `_step`).
    """
    if learning_rate is None:
        raise ValueError(
            f"{name}: learning_rate is None. Pass a positive float (e.g. 0.01) or an optax "
            "schedule (a function of the step count)."
        )
    if callable(learning_rate):
        return
    if isinstance(learning_rate, (bool, np.bool_)):
        raise TypeError(f"{name}: learning_rate must be a number or a schedule, got a bool.")
    if _check_traced_scalar(learning_rate, "learning_rate", name):
        return
    _check_not_an_array(learning_rate, "learning_rate", name)
    if not is_concrete_number(learning_rate):
        raise TypeError(
            f"{name}: learning_rate must be a scalar number or a schedule, got "
            f"{type(learning_rate).__name__}."
        )
    value = float(learning_rate)
    if not math.isfinite(value) or value < 0.0:
        raise ValueError(
            f"{name}: learning_rate must be finite and ≥ 0, got {value!r}. Fromage's "
            "learning rate is the relative size of each step (0.01 moves every tensor by "
            "about 1%); use a value such as 0.01, or a schedule for warm-up or decay."
        )
    if value > MAX_LEARNING_RATE:
        raise ValueError(
            f"{name}: learning_rate {value!r} is too large: it must be finite in float32 "
            f"(at most {MAX_LEARNING_RATE:.4g}). Fromage's learning rate is a relative step "
            "size; useful values are below 1."
        )


def check_p_bound(p_bound: Any, name: str) -> None:
    """Rejects a p_bound that is set but not a finite positive number."""
    if p_bound is None or _check_traced_scalar(p_bound, "p_bound", name):
        return
    _check_not_an_array(p_bound, "p_bound", name)
    if isinstance(p_bound, (bool, np.bool_)) or not is_concrete_number(p_bound):
        raise TypeError(
            f"{name}: p_bound must be None or a positive number, got {type(p_bound).__name__}."
        )
    value = float(p_bound)
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(
            f"{name}: p_bound must be None or a finite number > 0, got {value!r}. It caps "
            "every tensor's norm at p_bound times its norm at init; pass None for no cap."
        )


def leaf_paths(tree: Any) -> list[str]:
    """Readable key paths of a tree's leaves, in `jax.tree.leaves` order."""
    with_path, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [jax.tree_util.keystr(path) or "<root>" for path, _ in with_path]


def leaf_dtype(leaf: Any, tree: Any, index: int, what: str, name: str):
    """The dtype of a leaf, or a TypeError naming its path when it is no array (a string, ...)."""
    try:
        return jnp.result_type(leaf)
    except (TypeError, ValueError):
        path = leaf_paths(tree)[index]
        raise TypeError(
            f"{name}: the {what} at {path} is a {type(leaf).__name__} ({leaf!r:.40}), not an "
            "array or a number. Keep only arrays in the params tree (store other values "
            "elsewhere, or leave them out with optax.masked)."
        ) from None


def check_float_leaves(params: Any, name: str) -> None:
    """Rejects integer, bool, complex or non-array parameter leaves, naming the first one."""
    leaves = jax.tree.leaves(params)
    for index, leaf in enumerate(leaves):
        dtype = leaf_dtype(leaf, params, index, "parameter", name)
        if not jnp.issubdtype(dtype, jnp.floating):
            path = leaf_paths(params)[index]
            raise TypeError(
                f"{name}: the parameter at {path} has dtype {dtype}; Fromage only updates "
                "floating-point tensors. Leave it out with optax.masked(fromage(...), mask) "
                "or optax.multi_transform, or store it outside the params tree."
            )


def check_real_updates(update_leaves: list, params: Any, name: str) -> None:
    """Rejects complex update leaves, naming the first one (their norms would be wrong)."""
    for index, leaf in enumerate(update_leaves):
        dtype = leaf_dtype(leaf, params, index, "update", name)
        if jnp.issubdtype(dtype, jnp.complexfloating):
            path = leaf_paths(params)[index]
            raise TypeError(
                f"{name}: the update at {path} has dtype {dtype}, but its parameter is real. "
                "Fromage needs real gradients of real parameters; if the imaginary part is "
                "meant to be zero, pass jnp.real(grad)."
            )


def check_same_structure(updates: Any, params: Any, name: str) -> None:
    """Raises a ValueError naming the first path where updates and params differ."""
    updates_def = jax.tree.structure(updates)
    params_def = jax.tree.structure(params)
    if updates_def == params_def:  # type: ignore[operator]  # jax's PyTreeDef alias: opaque to mypy
        for index, (u, p) in enumerate(zip(jax.tree.leaves(updates), jax.tree.leaves(params))):
            if np.shape(u) != np.shape(p):
                path = leaf_paths(params)[index]
                raise ValueError(
                    f"{name}: at {path} the update has shape {np.shape(u)} but the parameter "
                    f"has shape {np.shape(p)}. Pass gradients of these params."
                )
        return
    update_paths = leaf_paths(updates)
    param_paths = leaf_paths(params)
    known_updates, known_params = set(update_paths), set(param_paths)
    only_updates = [p for p in update_paths if p not in known_params]
    only_params = [p for p in param_paths if p not in known_updates]
    details = []
    if only_params:
        details.append(f"params have {only_params[0]} but updates do not")
    if only_updates:
        details.append(f"updates have {only_updates[0]} but params do not")
    if not details:
        details.append(f"updates are {updates_def} but params are {params_def}")
    raise ValueError(
        f"{name}: updates and params must be trees of the same structure; "
        + "; ".join(details)
        + ". Pass the gradients of exactly these params (same keys, same nesting)."
    )


def checked_leaves(updates: Any, params: Any, name: str):
    """The leaves of params and updates, after the checks every Fromage update needs.

    Returns:
      (param_leaves, update_leaves, treedef) with treedef the params' structure.
    """
    if params is None:
        raise ValueError(NO_PARAMS_MSG.format(name=name))
    check_same_structure(updates, params, name)
    check_float_leaves(params, name)
    param_leaves, treedef = jax.tree.flatten(params)
    update_leaves = treedef.flatten_up_to(updates)  # type: ignore[attr-defined]  # PyTreeDef alias
    check_real_updates(update_leaves, params, name)
    # Python scalars and NumPy arrays become jax arrays (as optax's transforms do).
    return [jnp.asarray(w) for w in param_leaves], [jnp.asarray(g) for g in update_leaves], treedef
