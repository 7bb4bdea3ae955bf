"""Every public transform under every JAX transformation a user applies, on real-sized trees.

The battery has optax's shape (`_OPTIMIZERS_UNDER_TEST` in optax's alias tests): one
list of transforms (`TRANSFORMS`), one list of JAX transformations (`TRANSFORMATIONS`)
and one list of trees (`TREES`), with tensors on both sides of every size threshold of
the library (`_batching.GROUP_MAX_SIZE` elements, `_batching.GROUP_MAX_MEMBERS` tensors
of one shape), and their cross product. Every cell is compared with the float64
reference (`tests/_reference.py`), or with its batched, differentiated or
linearised form computed by JAX in float64. The optax wrappers, Flax's train states
and `inject_hyperparams` have tests of their own below; shard_map runs in a
subprocess on simulated devices (`tests/multidevice/battery_shard_map.py`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _reference import (
    reference_bound,
    reference_control,
    reference_relative_update_norm,
    reference_scale,
    reference_step,
    relative_error,
)
from conftest import x64_enabled

import fromage_optax
from fromage_optax import _batching

# Same-shaped small tensors are stacked GROUP_MAX_MEMBERS at a time. Tracing 65 of them
# under every transformation would take minutes, so the battery lowers that count to
# BATTERY_MEMBERS (its heads form two stacks, as 65 would at the real count);
# `test_real_member_count` runs the real count under the transformations that trace it.
BATTERY_MEMBERS = 4
HEADS = BATTERY_MEMBERS + 1
LEARNING_RATE = 0.1
P_BOUND = 1.5
ADAM_LEARNING_RATE = 1e-3
ADAM_EPS = 1e-8
EPS32 = float(np.finfo(np.float32).eps)


def tolerance(size: int, dtype=np.float32, derivative: bool = False) -> float:
    """The relative error allowed for a result built from sums of `size` squares.

    Norms are accumulated in float32 (or wider): a pairwise sum of n terms is off by at
    most about eps·log2(n) of its value, and the step combines a few such norms (8 of
    them, generously); a derivative chains about as many more roundings through the
    norms' derivatives (another factor 8). A result in a narrower `dtype` (bfloat16) is
    then rounded to it: half its eps more.
    """
    accumulated = (64 if derivative else 8) * EPS32 * max(math.log2(size), 1.0)
    return accumulated + 0.5 * max(float(jnp.finfo(dtype).eps) - EPS32, 0.0)


# ---------------------------------------------------------------------------------------
# Trees: each returns (params, grads, initial params, layer_axes or None) as NumPy.


def _normal(rng, shape, scale=1.0, dtype=np.float32):
    fan_in = shape[-2] if len(shape) >= 2 else max(shape[-1] if shape else 1, 1)
    return (scale * rng.standard_normal(shape) / np.sqrt(fan_in)).astype(dtype)


def mixed_tree(rng, zeros=True, heads=HEADS):
    """A 512x512 kernel over the size threshold (on CPUs a run of its own, after the small
    tensors' run) beside biases, same-shaped heads (more than one stack), a scalar and
    (with `zeros`) a zero-initialised bias."""
    params: dict[str, Any] = {
        "kernel": _normal(rng, (512, 512)),
        "bias": _normal(rng, (512,), 0.1),
        "heads": [_normal(rng, (4, 5)) for _ in range(heads)],
        "scalar": np.float32(1.5),
    }
    if zeros:
        params["zero_bias"] = np.zeros(512, np.float32)
    return params


def scanned_tree(rng, zeros=True):
    """Three stacked blocks (as nn.scan makes them) of 200x400 kernels, and a head."""
    del zeros
    return {
        "layers": {"kernel": _normal(rng, (3, 200, 400)), "bias": _normal(rng, (3, 400), 0.1)},
        "head": _normal(rng, (400, 10)),
    }


def mixed_dtype_tree(rng, zeros=True):
    """A bfloat16 kernel over the threshold beside float32 biases."""
    del zeros
    return {
        "kernel": _normal(rng, (300, 300), dtype=jnp.bfloat16),
        "bias": _normal(rng, (300,), 0.1),
        "small": _normal(rng, (8, 8), dtype=jnp.bfloat16),
    }


def linen_tree(rng, zeros=True):
    """The params of a Flax Linen MLP (a 256x300 kernel: over the threshold)."""
    import flax.linen as nn

    model = nn.Sequential([nn.Dense(300), nn.relu, nn.Dense(10)])
    params = model.init(jax.random.key(int(rng.integers(1 << 30))), jnp.ones((1, 256)))["params"]
    if not zeros:  # Linen's biases start at zero
        params = jax.tree.map(lambda x: x + 0.01, params)
    return jax.tree.map(np.asarray, params)


def _nnx_model(seed):
    from flax import nnx

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.hidden = nnx.Linear(256, 300, rngs=rngs)
            self.out = nnx.Linear(300, 10, rngs=rngs)

        def __call__(self, x):
            return self.out(jax.nn.relu(self.hidden(x)))

    return MLP(nnx.Rngs(seed))


def nnx_state_tree(rng, zeros=True):
    """An `nnx.State` of an NNX MLP's params (Variables around the arrays)."""
    from flax import nnx

    state = nnx.state(_nnx_model(int(rng.integers(1 << 30))), nnx.Param)
    if not zeros:
        state = jax.tree.map(lambda x: x + 0.01, state)
    return state


TREES: dict[str, Callable] = {
    "mixed": mixed_tree,
    "mixed_real_members": functools.partial(mixed_tree, heads=_batching.GROUP_MAX_MEMBERS + 1),
    "scanned": scanned_tree,
    "bf16_f32": mixed_dtype_tree,
    "linen": linen_tree,
    "nnx_state": nnx_state_tree,
}
SCANNED_LAYER_AXES = functools.partial(fromage_optax.scanned_layer_axes, module_name="layers")


def leaf_layer_axes(tree_name, params):
    """Per leaf, the layer axes a transform with `layer_axes` uses on this tree."""
    if tree_name != "scanned":
        return [()] * len(jax.tree.leaves(params))
    return [
        () if a is None else (a,)
        for a in jax.tree.leaves(SCANNED_LAYER_AXES(params), is_leaf=lambda x: x is None)
    ]


@functools.cache
def problem(tree_name, seed=0, zeros=True):
    """(params, grads, initial params) of a tree, as JAX arrays in the tree's dtypes."""
    rng = np.random.default_rng(seed)
    params = TREES[tree_name](rng, zeros)
    grads = jax.tree.map(lambda w: _normal(rng, np.shape(w), dtype=np.asarray(w).dtype), params)
    # Near the bound for P_BOUND: some tensors pass it after a step, others not.
    initial = jax.tree.map(
        lambda w: (np.asarray(w, np.float32) * 0.7).astype(np.asarray(w).dtype), params
    )
    as_jax = functools.partial(jax.tree.map, jnp.asarray)
    return as_jax(params), as_jax(grads), as_jax(initial)


# ---------------------------------------------------------------------------------------
# Transforms: `run(params, grads, lr, initial)` gives what a user reads (new params, or
# the diagnostics); `reference(...)` the same, leaf by leaf, in float64.


@dataclasses.dataclass(frozen=True)
class Transform:
    run: Callable
    reference: Callable  # (params leaves, grads leaves, lr, initial leaves, layer axes, xp, params)
    uses_learning_rate: bool = True
    zeros_ok: bool = True  # defined (finite) on trees with zero tensors
    layer_axes: bool = False  # uses scanned_layer_axes on the scanned tree


def _apply(transform, params, grads, initial):
    state = transform.init(initial)
    updates, state = transform.update(grads, state, params)
    return optax.apply_updates(params, updates), state


def _per_leaf(fn):
    """A reference from a per-leaf function (w, g, lr, w0, axes, xp) -> new leaf."""

    def reference(params, grads, lr, initial, axes, xp, tree):
        del tree
        return [fn(w, g, lr, w0, a, xp) for w, g, w0, a in zip(params, grads, initial, axes)]

    return reference


def _fromage_with_adamw_reference(params, grads, lr, initial, axes, xp, tree):
    # One step from a fresh state: AdamW's bias-corrected step is -lr·g/(|g| + eps).
    selected = jax.tree.leaves(fromage_optax.kernel_mask()(tree))
    return [
        reference_step(w, g, lr, xp=xp)
        if keep
        else xp.asarray(w, xp.float64)
        - ADAM_LEARNING_RATE
        * xp.asarray(g, xp.float64)
        / (xp.abs(xp.asarray(g, xp.float64)) + ADAM_EPS)
        for w, g, keep in zip(params, grads, selected)
    ]


def _monitor_run(params, grads, lr, initial):
    del lr, initial
    monitor = fromage_optax.monitor_relative_trust()
    _, state = monitor.update(grads, monitor.init(params), params)
    return state.relative_update_norms


def _relative_norms_reference(params, grads, lr, initial, axes, xp, tree):
    return [reference_relative_update_norm(w, g, a, xp) for w, g, a in zip(params, grads, axes)]


def _deep_relative_trust_reference(params, grads, lr, initial, axes, xp, tree):
    ratios = _relative_norms_reference(params, grads, lr, initial, axes, xp, tree)
    return [xp.prod(xp.stack([xp.prod(1 + r) for r in ratios])) - 1]


TRANSFORMS: dict[str, Transform] = {
    "fromage": Transform(
        lambda p, g, lr, w0: _apply(fromage_optax.fromage(lr), p, g, w0)[0],
        _per_leaf(lambda w, g, lr, w0, a, xp: reference_step(w, g, lr, xp=xp)),
    ),
    "fromage_p_bound": Transform(
        lambda p, g, lr, w0: _apply(fromage_optax.fromage(lr, P_BOUND), p, g, w0)[0],
        _per_leaf(lambda w, g, lr, w0, a, xp: reference_step(w, g, lr, P_BOUND, w0, xp=xp)),
    ),
    "fromage_layer_axes": Transform(
        lambda p, g, lr, w0: _apply(
            fromage_optax.fromage(lr, P_BOUND, layer_axes=SCANNED_LAYER_AXES), p, g, w0
        )[0],
        _per_leaf(lambda w, g, lr, w0, a, xp: reference_step(w, g, lr, P_BOUND, w0, a, xp)),
        layer_axes=True,
    ),
    "scale_by_fromage": Transform(
        lambda p, g, lr, w0: _apply(fromage_optax.scale_by_fromage(), p, g, w0)[0],
        _per_leaf(
            lambda w, g, lr, w0, a, xp: xp.asarray(w, xp.float64) + reference_scale(w, g, xp=xp)
        ),
        uses_learning_rate=False,
    ),
    "control_weight_norm": Transform(
        lambda p, g, lr, w0: _apply(fromage_optax.control_weight_norm(lr), p, g, w0)[0],
        _per_leaf(
            lambda w, g, lr, w0, a, xp: reference_control(
                xp.asarray(w, xp.float64) + xp.asarray(g, xp.float64), lr, xp
            )
        ),
    ),
    "bound_weight_norm": Transform(
        lambda p, g, lr, w0: _apply(fromage_optax.bound_weight_norm(P_BOUND), p, g, w0)[0],
        _per_leaf(
            lambda w, g, lr, w0, a, xp: reference_bound(
                xp.asarray(w, xp.float64) + xp.asarray(g, xp.float64), w0, P_BOUND, xp=xp
            )
        ),
        uses_learning_rate=False,
    ),
    "fromage_with_adamw": Transform(
        lambda p, g, lr, w0: _apply(
            fromage_optax.fromage_with_adamw(lr, ADAM_LEARNING_RATE, eps=ADAM_EPS), p, g, w0
        )[0],
        _fromage_with_adamw_reference,
    ),
    "monitor_relative_trust": Transform(
        _monitor_run, _relative_norms_reference, uses_learning_rate=False, zeros_ok=False
    ),
    "relative_update_norms": Transform(
        lambda p, g, lr, w0: fromage_optax.relative_update_norms(g, p),
        _relative_norms_reference,
        uses_learning_rate=False,
        zeros_ok=False,
    ),
    "deep_relative_trust": Transform(
        lambda p, g, lr, w0: [fromage_optax.deep_relative_trust(g, p)],
        _deep_relative_trust_reference,
        uses_learning_rate=False,
        zeros_ok=False,
    ),
}


def reference_outputs(name, tree_name, params, grads, lr, initial, xp=np):
    """The reference's outputs for a transform, as a list of leaves in the run's order."""
    transform = TRANSFORMS[name]
    count = len(jax.tree.leaves(params))
    axes = leaf_layer_axes(tree_name, params) if transform.layer_axes else [()] * count
    leaves = [jax.tree.leaves(t) for t in (params, grads, initial)]
    return transform.reference(*leaves[:2], lr, leaves[2], axes, xp, params)


# ---------------------------------------------------------------------------------------
# JAX transformations: each returns (what the library gives, what the reference gives).


def _float64(tree):
    return jax.tree.map(lambda x: jnp.asarray(np.asarray(x, np.float64)), tree)


def _cotangents(outputs, seed=7):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(np.shape(x)) for x in jax.tree.leaves(outputs)]


def _weighted_sum(outputs, cotangents, dtype=None):
    return sum(
        jnp.sum(jnp.asarray(x, dtype or jnp.float32) * jnp.asarray(c, dtype or jnp.float32))
        for x, c in zip(jax.tree.leaves(outputs), cotangents)
    )


def _library(name):
    return TRANSFORMS[name].run


def _reference_fn(name, tree_name):
    def fn(params, grads, lr, initial):
        return reference_outputs(name, tree_name, params, grads, lr, initial, xp=jnp)

    return fn


def plain(name, tree_name, args, jit):
    run = jax.jit(_library(name)) if jit else _library(name)
    expected = reference_outputs(name, tree_name, *args)
    return jax.tree.leaves(run(*args)), expected, False


def batched(name, tree_name, args, jit):
    params, grads, lr, initial = args
    second = (
        jax.tree.map(lambda x: (x * 2).astype(x.dtype), params),
        jax.tree.map(lambda x: (x * -0.5).astype(x.dtype), grads),
        lr,
        jax.tree.map(lambda x: (x * 2).astype(x.dtype), initial),
    )
    stack = functools.partial(jax.tree.map, lambda a, b: jnp.stack([a, b]))
    run = jax.vmap(_library(name), in_axes=(0, 0, None, 0))
    run = jax.jit(run) if jit else run
    actual = run(stack(params, second[0]), stack(grads, second[1]), lr, stack(initial, second[3]))
    expected = [
        np.stack([a, b])
        for a, b in zip(
            reference_outputs(name, tree_name, *args),
            reference_outputs(name, tree_name, *second),
        )
    ]
    return jax.tree.leaves(actual), expected, False


def _loss(run, args, cotangents, dtype=None):
    """The cotangent-weighted sum of run's outputs, as a function of the params and of η."""
    _, grads, _, initial = args

    def loss(params, lr):
        return _weighted_sum(run(params, grads, lr, initial), cotangents, dtype)

    return loss


def _argnums(name):
    """What a cell differentiates w.r.t.: the params, and η where the transform takes one."""
    return (0, 1) if TRANSFORMS[name].uses_learning_rate else (0,)


@functools.cache
def _expected_derivative(name, tree_name, zeros):
    """The float64 reference's derivative (shared by the eager, jit and remat cells)."""
    params, grads, initial = problem(tree_name, zeros=zeros)
    args = (params, grads, LEARNING_RATE, initial)
    cotangents = _cotangents(reference_outputs(name, tree_name, *args))
    with x64_enabled():
        args64 = (_float64(params), _float64(grads), LEARNING_RATE, _float64(initial))
        loss = _loss(_reference_fn(name, tree_name), args64, cotangents, jnp.float64)
        gradient = jax.jit(jax.grad(loss, argnums=_argnums(name)))
        derivatives = gradient(args64[0], jnp.float64(LEARNING_RATE))
        return [[np.asarray(x) for x in jax.tree.leaves(d)] for d in derivatives]


def _differentiated(name, tree_name, args, jit, remat=False):
    """Derivatives w.r.t. the params (compared here as one vector) and η (compared on its own,
    so that a wrong derivative w.r.t. η cannot hide behind the params')."""
    params, _, lr, _ = args
    cotangents = _cotangents(reference_outputs(name, tree_name, *args))
    loss = _loss(_library(name), args, cotangents)
    loss = jax.checkpoint(loss) if remat else loss
    gradient = jax.grad(loss, argnums=_argnums(name))
    gradient = jax.jit(gradient) if jit else gradient
    actual = [jax.tree.leaves(d) for d in gradient(params, jnp.float32(lr))]
    expected = _expected_derivative(name, tree_name, TRANSFORMS[name].zeros_ok)
    size = max(int(np.size(x)) for x in jax.tree.leaves(params))
    for actual_part, expected_part in zip(actual[1:], expected[1:]):
        _check(actual_part, expected_part, size, True)
    return actual[0], expected[0], True


def linearised(name, tree_name, args, jit):
    params, grads, lr, initial = args
    tangents = jax.tree.map(
        lambda x, c: jnp.asarray(c, x.dtype).reshape(x.shape),
        params,
        jax.tree.unflatten(jax.tree.structure(params), _cotangents(params, seed=3)),
    )
    run = lambda p, t: jax.jvp(lambda p: _library(name)(p, grads, lr, initial), (p,), (t,))[1]
    run = jax.jit(run) if jit else run
    actual = run(params, tangents)
    with x64_enabled():
        reference = _reference_fn(name, tree_name)
        g64, w64 = _float64(grads), _float64(initial)
        _, expected = jax.jit(
            lambda p, t: jax.jvp(lambda p: reference(p, g64, lr, w64), (p,), (t,))
        )(_float64(params), _float64(tangents))
        expected = [np.asarray(x) for x in jax.tree.leaves(expected)]
    return jax.tree.leaves(actual), expected, True


TRANSFORMATIONS: dict[str, Callable] = {
    "eager": functools.partial(plain, jit=False),
    "jit": functools.partial(plain, jit=True),
    "vmap": functools.partial(batched, jit=False),
    "jit_vmap": functools.partial(batched, jit=True),
    # w.r.t. the params and (where the transform takes one) a traced learning rate
    "grad": functools.partial(_differentiated, jit=False),
    "jit_grad": functools.partial(_differentiated, jit=True),
    "jit_jvp": functools.partial(linearised, jit=True),
    "remat_jit_grad": functools.partial(_differentiated, jit=True, remat=True),
}


def _check(actual, expected, size, derivative):
    """Values leaf by leaf; a derivative as one vector (a leaf's derivative may be 0 up to
    rounding, e.g. of a tensor held at its bound, where a relative error means nothing)."""
    assert len(actual) == len(expected)
    for position, a in enumerate(actual):
        assert np.all(np.isfinite(np.asarray(a, np.float64))), position
    if derivative:
        flat = [
            np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in xs])
            for xs in (actual, expected)
        ]
        actual, expected = [flat[0]], [flat[1]]
    for position, (a, e) in enumerate(zip(actual, expected)):
        error = relative_error(a, e)
        assert error <= tolerance(size, jnp.result_type(a), derivative), (position, error)


@pytest.fixture(autouse=True)
def battery_member_count(request, monkeypatch):
    if "real_members" not in request.node.name:
        monkeypatch.setattr(_batching, "GROUP_MAX_MEMBERS", BATTERY_MEMBERS)


def _cells():
    cells = []
    for name, transform in TRANSFORMS.items():
        for transformation in TRANSFORMATIONS:
            tree_names = ["scanned"] if transform.layer_axes else ["mixed"]
            cells += [(name, transformation, tree) for tree in tree_names]
    # The other trees (and the real member count) under the transformations that
    # trace each layout and its derivative.
    for tree in ("scanned", "bf16_f32", "linen", "nnx_state", "mixed_real_members"):
        for name, transformation in (
            ("fromage_p_bound", "jit_vmap"),
            ("fromage_p_bound", "jit_grad"),
            ("fromage_with_adamw", "jit_vmap"),
        ):
            if tree == "bf16_f32" and transformation == "jit_grad":
                continue  # bfloat16 derivatives: checked for finiteness below
            if tree == "mixed_real_members" and transformation == "jit_grad":
                continue  # 65 tensors under grad compile for 20 s: the batteries' count does
            cells.append((name, transformation, tree))
    return cells


@pytest.mark.parametrize(("name", "transformation", "tree_name"), _cells())
def test_cell_equals_the_float64_reference(name, transformation, tree_name):
    transform = TRANSFORMS[name]
    params, grads, initial = problem(tree_name, zeros=transform.zeros_ok)
    args = (params, grads, LEARNING_RATE, initial)
    actual, expected, derivative = TRANSFORMATIONS[transformation](name, tree_name, args)
    size = max(int(np.size(x)) for x in jax.tree.leaves(params))
    _check(actual, expected, size, derivative)


def test_bfloat16_derivatives_are_finite():
    params, grads, initial = problem("bf16_f32")
    loss = lambda p: _weighted_sum(
        TRANSFORMS["fromage"].run(p, grads, 0.1, initial), _cotangents(p)
    )
    for leaf in jax.tree.leaves(jax.jit(jax.grad(loss))(params)):
        assert np.all(np.isfinite(np.asarray(leaf, np.float32)))


def test_the_battery_covers_every_public_transform_and_threshold():
    public = {
        "fromage",
        "scale_by_fromage",
        "control_weight_norm",
        "bound_weight_norm",
        "fromage_with_adamw",
        "monitor_relative_trust",
        "relative_update_norms",
        "deep_relative_trust",
    }
    assert public <= set(TRANSFORMS)
    params, _, _ = problem("mixed")
    sizes = [np.size(x) for x in jax.tree.leaves(params)]
    assert max(sizes) > _batching.GROUP_MAX_SIZE >= min(sizes)
    shapes = [np.shape(x) for x in jax.tree.leaves(params)]
    assert max(shapes.count(s) for s in shapes) > _batching.GROUP_MAX_MEMBERS


# ---------------------------------------------------------------------------------------
# shard_map with axis_name (8 simulated devices need a process of their own).


def test_shard_map_column(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parent / "multidevice" / "battery_shard_map.py"
    results_path = tmp_path / "battery_shard_map.json"
    completed = subprocess.run(
        [sys.executable, str(script), str(results_path)],
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    import json

    results = json.loads(results_path.read_text())
    assert len(results) == 18  # 6 transforms x (values, vmap, jit(grad))
    for cell, difference in results.items():
        # Sums over shards are taken in another order: a few roundings of float32 sums of
        # 512x512 squares.
        assert difference <= tolerance(512 * 512, derivative="grad" in cell), cell


# ---------------------------------------------------------------------------------------
# The optax wrappers and Flax's train states, on the battery's mixed tree.


def _steps(optimizer, params, grads_list, jit=True):
    state = optimizer.init(params)
    update = jax.jit(optimizer.update) if jit else optimizer.update
    for grads in grads_list:
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params, state


def _reference_tree(params, grads, lr, p_bound=None, initial=None, selected=None):
    leaves = jax.tree.leaves(params)
    initial_leaves = jax.tree.leaves(initial) if initial is not None else leaves
    selected = selected or [True] * len(leaves)
    new = [
        reference_step(w, g, lr, p_bound, w0) if keep else np.asarray(w, np.float64)
        for w, g, w0, keep in zip(leaves, jax.tree.leaves(grads), initial_leaves, selected)
    ]
    return jax.tree.unflatten(jax.tree.structure(params), new)


def _assert_tree_close(actual, expected, derivative=False):
    _check(jax.tree.leaves(actual), jax.tree.leaves(expected), 512 * 512, derivative)


@pytest.mark.parametrize("p_bound", [None, P_BOUND])
def test_optax_wrappers(p_bound):
    params, grads, _ = problem("mixed")
    half = jax.tree.map(lambda g: g * 0.5, grads)
    fromage = functools.partial(fromage_optax.fromage, LEARNING_RATE, p_bound)
    expected = _reference_tree(params, grads, LEARNING_RATE, p_bound)

    # chain after a gradient transform: clip_by_global_norm at a norm it does not reach.
    chained, _ = _steps(optax.chain(optax.clip_by_global_norm(1e9), fromage()), params, [grads])
    _assert_tree_close(chained, expected)
    # masked: Fromage on the kernels only, the rest passed through unchanged (as optax does).
    mask = fromage_optax.kernel_mask()(params)
    masked, _ = _steps(optax.masked(fromage(), mask), params, [grads])
    selected = jax.tree.leaves(mask)
    passed = jax.tree.map(lambda w, g: np.asarray(w, np.float64) + np.asarray(g), params, grads)
    for keep, got, want, other in zip(
        selected, *(jax.tree.leaves(t) for t in (masked, expected, passed))
    ):
        _check([got], [want if keep else other], 512 * 512, False)
    # multi_transform: Fromage everywhere through two labels.
    labels = jax.tree.map(lambda keep: "a" if keep else "b", mask)
    split, _ = _steps(
        optax.multi_transform({"a": fromage(), "b": fromage()}, labels), params, [grads]
    )
    _assert_tree_close(split, expected)
    # MultiSteps: two micro-steps of g/2 and 3g/2 give one step with their mean, g.
    three_halves = jax.tree.map(lambda g: g * 1.5, grads)
    accumulated, _ = _steps(optax.MultiSteps(fromage(), 2), params, [half, three_halves])
    _assert_tree_close(accumulated, expected)
    # apply_if_finite: a NaN gradient is skipped, the next step taken.
    bad = dict(grads, kernel=grads["kernel"].at[0, 0].set(jnp.nan))
    guarded, state = _steps(optax.apply_if_finite(fromage(), 3), params, [bad, grads])
    assert int(state.total_notfinite) == 1
    _assert_tree_close(guarded, expected)


def test_flax_train_state_on_a_linen_tree():
    from flax.training import train_state

    params, grads, _ = problem("linen")
    state = train_state.TrainState.create(
        apply_fn=None, params=params, tx=fromage_optax.fromage(LEARNING_RATE, P_BOUND)
    )
    state = jax.jit(lambda s, g: s.apply_gradients(grads=g))(state, grads)
    expected = _reference_tree(params, grads, LEARNING_RATE, P_BOUND)
    _assert_tree_close(state.params, expected)


@pytest.mark.parametrize("make", ["fromage_p_bound", "fromage_with_adamw"])
def test_nnx_optimizer(make):
    from flax import nnx

    model = _nnx_model(0)
    before = jax.tree.map(jnp.copy, nnx.state(model, nnx.Param))  # the Variables are updated
    tx = {
        "fromage_p_bound": lambda: fromage_optax.fromage(LEARNING_RATE, P_BOUND),
        "fromage_with_adamw": lambda: fromage_optax.fromage_with_adamw(
            LEARNING_RATE, ADAM_LEARNING_RATE, eps=ADAM_EPS
        ),
    }[make]()
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    x = jnp.linspace(-1.0, 1.0, 3 * 256).reshape(3, 256)
    grads = nnx.grad(lambda m: jnp.sum(m(x) ** 2))(model)

    @nnx.jit
    def step(model, optimizer, grads):
        optimizer.update(model, grads)

    step(model, optimizer, grads)
    name = "fromage_p_bound" if make == "fromage_p_bound" else "fromage_with_adamw"
    expected = reference_outputs(name, "nnx_state", before, grads, LEARNING_RATE, before)
    actual = jax.tree.leaves(nnx.state(model, nnx.Param))
    _check(actual, expected, 256 * 300, False)
