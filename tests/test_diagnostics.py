"""Tests for the deep relative trust diagnostics (fromage_optax/_diagnostics.py)."""

from __future__ import annotations

import doctest
import math
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fromage_optax
from fromage_optax import _diagnostics
from fromage_optax._diagnostics import (
    MonitorRelativeTrustState,
    deep_relative_trust,
    log_deep_relative_trust,
    monitor_relative_trust,
    relative_trust_metrics,
    relative_update_norms,
)

EXPORTED_NAMES = (
    "MonitorRelativeTrustState",
    "deep_relative_trust",
    "log_deep_relative_trust",
    "monitor_relative_trust",
    "relative_trust_metrics",
    "relative_update_norms",
)


# --- float64 NumPy reference, straight from the definitions -------------------------------


def reference_ratios(update, param, layer_axes=()):
    """‖ΔW‖/‖W‖ per tensor or per slice along `layer_axes`, in float64."""
    u = np.asarray(update, np.float64)
    w = np.asarray(param, np.float64)
    other_axes = tuple(a for a in range(w.ndim) if a not in layer_axes)
    u_norm = np.sqrt(np.sum(u * u, axis=other_axes))
    w_norm = np.sqrt(np.sum(w * w, axis=other_axes))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = u_norm / w_norm
    return np.where(w_norm > 0, ratio, np.where(u_norm > 0, np.inf, 0.0))


def reference_deep_relative_trust(ratios):
    """∏(1 + r) − 1 as a direct float64 product."""
    return float(np.prod([1.0 + r for r in np.concatenate([np.ravel(x) for x in ratios])]) - 1.0)


def random_tree(seed, shapes, dtype=jnp.float32, scale=1.0):
    rng = np.random.default_rng(seed)
    return {
        name: jnp.asarray(scale * rng.standard_normal(shape), dtype)
        for name, shape in shapes.items()
    }


TREE_SHAPES = {
    "mlp": {"w0": (6, 5), "b0": (5,), "w1": (5, 5), "b1": (5,), "w2": (5, 1)},
    "conv_and_scalar": {"kernel": (3, 3, 2, 4), "scale": (), "bias": (4,)},
    "many_same_shape": {f"layer{i:02d}": (4, 4) for i in range(12)},
    "large": {"embedding": (300, 256), "head": (256, 3)},
}


def _tree_close(actual, expected, rtol):
    for key in expected:
        np.testing.assert_allclose(
            np.asarray(actual[key], np.float64), expected[key], rtol=rtol, err_msg=key
        )


# --- relative_update_norms ------------------------------------------------------------------


@pytest.mark.parametrize("tree_name", sorted(TREE_SHAPES))
@pytest.mark.parametrize("jit", [False, True])
def test_ratios_match_numpy_float64(tree_name, jit):
    shapes = TREE_SHAPES[tree_name]
    params = random_tree(0, shapes)
    updates = random_tree(1, shapes, scale=0.05)
    function = jax.jit(relative_update_norms) if jit else relative_update_norms
    ratios = function(updates, params)
    assert jax.tree.structure(ratios) == jax.tree.structure(params)
    for leaf in jax.tree.leaves(ratios):
        assert leaf.shape == () and leaf.dtype == jnp.float32
    expected = {k: reference_ratios(updates[k], params[k]) for k in params}
    _tree_close(ratios, expected, rtol=2e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_params_give_float32_ratios_of_their_values(dtype):
    params = random_tree(2, TREE_SHAPES["mlp"], dtype)
    updates = random_tree(3, TREE_SHAPES["mlp"], dtype, scale=0.01)
    ratios = relative_update_norms(updates, params)
    expected = {k: reference_ratios(updates[k], params[k]) for k in params}
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(ratios))
    _tree_close(ratios, expected, rtol=2e-6)


def test_float64_params_give_float32_ratios(enable_x64):
    params = random_tree(4, TREE_SHAPES["mlp"], jnp.float64)
    updates = random_tree(5, TREE_SHAPES["mlp"], jnp.float64, scale=0.1)
    ratios = relative_update_norms(updates, params)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(ratios))
    expected = {k: reference_ratios(updates[k], params[k]) for k in params}
    _tree_close(ratios, expected, rtol=1e-6)


@pytest.mark.parametrize("scale", [1e-30, 1e-20, 1e20, 1e30])
def test_ratios_are_overflow_proof(scale):
    params = random_tree(6, TREE_SHAPES["mlp"])
    updates = random_tree(7, TREE_SHAPES["mlp"], scale=0.1)
    expected = {k: reference_ratios(updates[k], params[k]) for k in params}
    scaled = jax.tree.map(lambda x: x * scale, (updates, params))
    _tree_close(relative_update_norms(*scaled), expected, rtol=1e-5)


def test_zero_norm_params():
    params = {"zero": jnp.zeros(3), "zero_too": jnp.zeros((2, 2)), "w": jnp.ones(4)}
    updates = {
        "zero": jnp.array([0.0, 1e-30, 0.0]),
        "zero_too": jnp.zeros((2, 2)),
        "w": jnp.zeros(4),
    }
    ratios = relative_update_norms(updates, params)
    assert float(ratios["zero"]) == np.inf
    assert float(ratios["zero_too"]) == 0.0
    assert float(ratios["w"]) == 0.0
    assert float(deep_relative_trust(updates, params)) == np.inf
    assert (
        float(
            deep_relative_trust(updates, params, mask={"zero": False, "zero_too": True, "w": True})
        )
        == 0.0
    )


def test_zero_norm_slices_are_per_slice():
    params = jnp.stack([jnp.zeros((2, 3)), jnp.ones((2, 3)), jnp.zeros((2, 3))])
    updates = jnp.stack([jnp.ones((2, 3)), jnp.ones((2, 3)), jnp.zeros((2, 3))])
    ratios = relative_update_norms(updates, params, layer_axes=0)
    np.testing.assert_array_equal(np.asarray(ratios), [np.inf, 1.0, 0.0])


@pytest.mark.parametrize(
    ("layer_axes", "stack_axis_count"),
    [(0, 1), ((0,), 1), (-3, 1), ((0, 1), 2)],
)
def test_per_slice_ratios_equal_ratios_of_separate_tensors(layer_axes, stack_axis_count):
    rng = np.random.default_rng(8)
    stack_shape = (4,) if stack_axis_count == 1 else (2, 3)
    separate_params = [
        rng.standard_normal((5, 3)) * rng.uniform(0.1, 10) for _ in range(np.prod(stack_shape))
    ]
    separate_updates = [rng.standard_normal((5, 3)) * rng.uniform(1e-3, 1) for _ in separate_params]
    to_stack = lambda xs: jnp.asarray(np.reshape(np.stack(xs), stack_shape + (5, 3)), jnp.float32)
    params = {"stack": to_stack(separate_params), "other": jnp.ones(3)}
    updates = {"stack": to_stack(separate_updates), "other": jnp.full(3, 0.5)}
    layer_axes_tree = {"stack": layer_axes, "other": None}

    ratios = relative_update_norms(updates, params, layer_axes=layer_axes_tree)
    assert ratios["stack"].shape == stack_shape and ratios["other"].shape == ()
    one_by_one = relative_update_norms(
        [jnp.asarray(u, jnp.float32) for u in separate_updates],
        [jnp.asarray(w, jnp.float32) for w in separate_params],
    )
    np.testing.assert_allclose(np.ravel(ratios["stack"]), np.asarray(one_by_one), rtol=1e-6)
    # Slices count as layers in the product too.
    trust = deep_relative_trust(updates, params, layer_axes=layer_axes_tree)
    expected = reference_deep_relative_trust([np.asarray(one_by_one, np.float64), [0.5]])
    np.testing.assert_allclose(float(trust), expected, rtol=1e-5)


def test_a_middle_layer_axis_gives_slices_along_it():
    rng = np.random.default_rng(9)
    params = jnp.asarray(rng.standard_normal((3, 5, 4)), jnp.float32)
    updates = jnp.asarray(rng.standard_normal((3, 5, 4)) * 0.1, jnp.float32)
    ratios = relative_update_norms(updates, params, layer_axes=1)
    expected = [reference_ratios(updates[:, i], params[:, i]) for i in range(5)]
    np.testing.assert_allclose(np.asarray(ratios), expected, rtol=1e-6)


# --- deep_relative_trust --------------------------------------------------------------------


@pytest.mark.parametrize("tree_name", sorted(TREE_SHAPES))
def test_deep_relative_trust_matches_numpy_product(tree_name):
    shapes = TREE_SHAPES[tree_name]
    params = random_tree(10, shapes)
    updates = random_tree(11, shapes, scale=0.3)
    trust = jax.jit(deep_relative_trust)(updates, params)
    expected = reference_deep_relative_trust(
        [reference_ratios(updates[k], params[k]) for k in params]
    )
    assert trust.shape == () and trust.dtype == jnp.float32
    np.testing.assert_allclose(float(trust), expected, rtol=1e-5)
    log_trust = log_deep_relative_trust(updates, params)
    np.testing.assert_allclose(float(log_trust), math.log1p(expected), rtol=1e-5)


def _mlp_mask_cases():
    weights_only = {"w0": True, "b0": False, "w1": True, "b1": False, "w2": True}
    return {
        "tree": (weights_only, ["w0", "w1", "w2"]),
        "callable": (lambda p: jax.tree.map(lambda x: x.ndim > 1, p), ["w0", "w1", "w2"]),
        "all_true": (True, ["w0", "b0", "w1", "b1", "w2"]),
        "all_false": (False, []),
    }


@pytest.mark.parametrize("case", sorted(_mlp_mask_cases()))
def test_mask_selects_layers(case):
    mask, chosen = _mlp_mask_cases()[case]
    params = random_tree(12, TREE_SHAPES["mlp"])
    updates = random_tree(13, TREE_SHAPES["mlp"], scale=0.2)
    expected = reference_deep_relative_trust(
        [reference_ratios(updates[k], params[k]) for k in chosen] or [np.zeros(0)]
    )
    trust = deep_relative_trust(updates, params, mask=mask)
    np.testing.assert_allclose(float(trust), expected, rtol=1e-5, atol=1e-7)


def test_mask_prefix_covers_subtrees():
    params = {"encoder": random_tree(14, {"a": (3, 3), "b": (3,)}), "head": jnp.ones((3, 2))}
    updates = {
        "encoder": random_tree(15, {"a": (3, 3), "b": (3,)}, scale=0.1),
        "head": jnp.ones((3, 2)),
    }
    trust = deep_relative_trust(updates, params, mask={"encoder": True, "head": False})
    expected = reference_deep_relative_trust(
        [reference_ratios(updates["encoder"][k], params["encoder"][k]) for k in ("a", "b")]
    )
    np.testing.assert_allclose(float(trust), expected, rtol=1e-5)


def test_log_space_product_equals_direct_product_without_overflow():
    # 120 layers whose ratios span 0..1: the product reaches ~1e15, far inside float32.
    ratios = np.linspace(0.0, 1.0, 120)
    params = jnp.ones((120, 4))
    updates = jnp.asarray(ratios[:, None] * np.ones((120, 4)), jnp.float32)
    trust = deep_relative_trust(updates, params, layer_axes=0)
    direct = np.prod(1.0 + ratios) - 1.0
    np.testing.assert_allclose(float(trust), direct, rtol=2e-5)
    direct_float32 = np.prod((1.0 + ratios).astype(np.float32), dtype=np.float32) - 1
    np.testing.assert_allclose(float(trust), float(direct_float32), rtol=2e-5)


def test_log_space_keeps_tiny_ratios_that_a_direct_float32_product_loses():
    # 1 + 1e-9 rounds to 1 in float32, so the direct product says "no change at all".
    layers = 200
    params = jnp.ones((layers, 2))
    updates = jnp.full((layers, 2), 1e-9, jnp.float32)
    assert np.prod(np.float32(1) + np.full(layers, 1e-9, np.float32)) - 1 == 0
    trust = deep_relative_trust(updates, params, layer_axes=0)
    np.testing.assert_allclose(float(trust), math.expm1(layers * math.log1p(1e-9)), rtol=1e-5)


def test_thousand_layers_of_ratio_one_do_not_overflow():
    layers = 1000
    params = {"stack": jnp.ones((layers, 3)), "first": jnp.ones(2)}
    updates = {"stack": jnp.ones((layers, 3)), "first": jnp.zeros(2)}
    log_trust = log_deep_relative_trust(updates, params, layer_axes={"stack": 0, "first": None})
    np.testing.assert_allclose(float(log_trust), layers * math.log(2.0), rtol=1e-6)
    # 2**1000 − 1 is beyond float32 (and float64's product form is beyond nothing):
    # the value saturates to inf rather than turning into NaN.
    trust = deep_relative_trust(updates, params, layer_axes={"stack": 0, "first": None})
    assert float(trust) == np.inf
    # Separate tensors count the same as slices of a stack.
    separate = [jnp.ones(3)] * 50
    np.testing.assert_allclose(
        float(jax.jit(log_deep_relative_trust)(separate, separate)),
        50 * math.log(2.0),
        rtol=1e-6,
    )


# --- the Fromage property -------------------------------------------------------------------


def _fromage_ratio_bound(eta):
    root = math.sqrt(1 + eta * eta)
    return (eta + root - 1) / root


@pytest.mark.parametrize("learning_rate", [0.001, 0.01, 0.5])
def test_fromage_moves_every_layer_by_at_most_its_bound(learning_rate):
    shapes = TREE_SHAPES["mlp"] | TREE_SHAPES["conv_and_scalar"]
    params = random_tree(16, shapes)
    optimiser = optax.chain(fromage_optax.fromage(learning_rate), monitor_relative_trust())
    state = optimiser.init(params)
    bound = _fromage_ratio_bound(learning_rate)
    step = jax.jit(optimiser.update)
    for seed in range(3):
        grads = random_tree(100 + seed, shapes, scale=10.0**seed)
        updates, state = step(grads, state, params)
        ratios = state[1].relative_update_norms
        for name, ratio in ratios.items():
            assert float(ratio) <= bound * (1 + 1e-5), (name, float(ratio), bound)
            # Fromage moves every layer by about η, never much less.
            assert float(ratio) >= (learning_rate - (math.sqrt(1 + learning_rate**2) - 1)) / (
                math.sqrt(1 + learning_rate**2)
            ) * (1 - 1e-5)
        params = optax.apply_updates(params, updates)


@pytest.mark.parametrize("learning_rate", [0.01, 0.5])
def test_fromage_bound_is_reached_by_a_gradient_along_the_weights(learning_rate):
    # g = W: the step moves W straight towards 0, the worst case of the bound.
    params = random_tree(17, {"w": (4, 3)})
    optimiser = fromage_optax.fromage(learning_rate)
    updates, _ = optimiser.update(params, optimiser.init(params), params)
    ratio = relative_update_norms(updates, params)["w"]
    np.testing.assert_allclose(float(ratio), _fromage_ratio_bound(learning_rate), rtol=1e-5)


# --- monitor_relative_trust -----------------------------------------------------------------


OPTIMISERS = {
    "sgd": lambda: optax.sgd(0.1, momentum=0.9),
    "adam": lambda: optax.adam(1e-2),
    "fromage": lambda: fromage_optax.fromage(0.01),
    "fromage_p_bound": lambda: fromage_optax.fromage(0.1, p_bound=2.0),
}


@pytest.mark.parametrize("optimiser_name", sorted(OPTIMISERS))
def test_monitor_leaves_updates_bitwise_unchanged(optimiser_name):
    shapes = TREE_SHAPES["mlp"]
    params = random_tree(18, shapes)
    plain = OPTIMISERS[optimiser_name]()
    monitored = optax.chain(OPTIMISERS[optimiser_name](), monitor_relative_trust())
    plain_state, monitored_state = plain.init(params), monitored.init(params)
    plain_update = jax.jit(plain.update)
    monitored_update = jax.jit(monitored.update)
    for seed in range(2):
        grads = random_tree(200 + seed, shapes)
        expected, plain_state = plain_update(grads, plain_state, params)
        updates, monitored_state = monitored_update(grads, monitored_state, params)
        for name in params:
            np.testing.assert_array_equal(np.asarray(updates[name]), np.asarray(expected[name]))
        monitor_state = monitored_state[1]
        reference = {k: reference_ratios(expected[k], params[k]) for k in params}
        _tree_close(monitor_state.relative_update_norms, reference, rtol=2e-6)
        all_ratios = np.array([float(reference[k]) for k in params])
        metrics = relative_trust_metrics(monitored_state)
        np.testing.assert_allclose(
            float(metrics["max_relative_update_norm"]), all_ratios.max(), rtol=2e-6
        )
        np.testing.assert_allclose(
            float(metrics["mean_relative_update_norm"]), all_ratios.mean(), rtol=2e-6
        )
        np.testing.assert_allclose(
            float(metrics["deep_relative_trust"]),
            reference_deep_relative_trust(all_ratios),
            rtol=1e-5,
        )
        params = optax.apply_updates(params, updates)


def test_monitor_update_returns_the_same_update_object():
    params = {"w": jnp.ones(3)}
    updates = {"w": jnp.full(3, 0.1)}
    monitor = monitor_relative_trust()
    returned, _ = monitor.update(updates, monitor.init(params), params)
    assert returned is updates


def test_monitor_init_gives_zeros_of_the_right_shapes():
    params = {"stack": jnp.ones((3, 4, 2)), "w": jnp.ones((4, 2)), "s": jnp.ones(())}
    monitor = monitor_relative_trust(layer_axes={"stack": 0, "w": None, "s": None})
    state = monitor.init(params)
    assert isinstance(state, MonitorRelativeTrustState)
    assert state.relative_update_norms["stack"].shape == (3,)
    assert state.relative_update_norms["w"].shape == ()
    for leaf in jax.tree.leaves(state):
        assert leaf.dtype == jnp.float32 and not np.any(np.asarray(leaf))
    # The state keeps its shapes and dtypes through a step (so it jits and scans).
    _, new_state = monitor.update(params, state, params)
    assert jax.tree.map(lambda x: (x.shape, x.dtype), new_state) == jax.tree.map(
        lambda x: (x.shape, x.dtype), state
    )
    np.testing.assert_allclose(np.asarray(new_state.relative_update_norms["stack"]), np.ones(3))


def test_monitor_mask_and_layer_axes_aggregate_over_selected_slices():
    rng = np.random.default_rng(19)
    params = {
        "blocks": jnp.asarray(rng.standard_normal((4, 3, 3)), jnp.float32),
        "bias": jnp.ones(3),
    }
    updates = {
        "blocks": jnp.asarray(rng.standard_normal((4, 3, 3)) * 0.1, jnp.float32),
        "bias": jnp.full(3, 5.0),
    }
    monitor = monitor_relative_trust(
        mask={"blocks": True, "bias": False}, layer_axes={"blocks": 0, "bias": None}
    )
    _, state = jax.jit(monitor.update)(updates, monitor.init(params), params)
    block_ratios = np.array(
        [reference_ratios(updates["blocks"][i], params["blocks"][i]) for i in range(4)]
    )
    np.testing.assert_allclose(
        np.asarray(state.relative_update_norms["blocks"]), block_ratios, rtol=2e-6
    )
    np.testing.assert_allclose(float(state.relative_update_norms["bias"]), 5.0, rtol=1e-6)
    np.testing.assert_allclose(float(state.max_relative_update_norm), block_ratios.max(), rtol=2e-6)
    np.testing.assert_allclose(
        float(state.mean_relative_update_norm), block_ratios.mean(), rtol=2e-6
    )
    np.testing.assert_allclose(
        float(state.deep_relative_trust), reference_deep_relative_trust(block_ratios), rtol=1e-5
    )


def test_monitor_with_nothing_selected_reports_zeros():
    params = {"w": jnp.ones(3)}
    monitor = monitor_relative_trust(mask=False)
    _, state = monitor.update({"w": jnp.ones(3)}, monitor.init(params), params)
    metrics = relative_trust_metrics(state)
    assert all(float(v) == 0.0 for v in metrics.values())
    assert float(state.relative_update_norms["w"]) == 1.0


def test_weights_only_mask_keeps_metrics_finite_with_zero_biases():
    params = {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros(2)}
    grads = {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}
    weights_only = lambda p: jax.tree.map(lambda w: w.ndim >= 2, p)
    for mask, finite in [(None, False), (weights_only, True)]:
        optimiser = optax.chain(optax.sgd(0.1), monitor_relative_trust(mask=mask))
        _, state = optimiser.update(grads, optimiser.init(params), params)
        metrics = relative_trust_metrics(state)
        assert all(bool(np.isfinite(v)) == finite for v in metrics.values()), (mask, metrics)
    np.testing.assert_allclose(float(metrics["max_relative_update_norm"]), 0.1, rtol=1e-6)


def test_metrics_from_a_jitted_train_step():
    params = random_tree(20, TREE_SHAPES["mlp"])
    inputs = jnp.asarray(np.random.default_rng(21).standard_normal((8, 6)), jnp.float32)
    optimiser = optax.chain(optax.adam(1e-2), monitor_relative_trust())

    def loss(p):
        hidden = jnp.tanh(inputs @ p["w0"] + p["b0"])
        hidden = jnp.tanh(hidden @ p["w1"] + p["b1"])
        return jnp.mean(jnp.square(hidden @ p["w2"]))

    @jax.jit
    def train_step(p, opt_state):
        grads = jax.grad(loss)(p)
        updates, opt_state = optimiser.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, relative_trust_metrics(opt_state)

    opt_state = optimiser.init(params)
    trust_of = jax.jit(deep_relative_trust)
    for _ in range(2):
        previous = params
        params, opt_state, metrics = train_step(params, opt_state)
        steps = jax.tree.map(lambda new, old: new - old, params, previous)
        np.testing.assert_allclose(
            float(metrics["deep_relative_trust"]),
            float(trust_of(steps, previous)),
            rtol=1e-4,
        )
        assert float(metrics["max_relative_update_norm"]) > 0


def test_vmapped_monitored_step_compiles_to_a_program_like_one_model():
    """Under vmap the overflow fallback's branch is a select for every output. Its predicate
    (any norm infinite, over every layer) was a chain of elementwise ops that XLA copied into
    each of them: this 26-layer MLP's train step, vmapped over 6 models, compiled to 5.8x the
    instructions of one model's (2.6x now; a monitored 33-layer epoch of the depth benchmark
    took 12 s to compile instead of 5)."""
    layers, width = 24, 16
    keys = iter(jax.random.split(jax.random.key(0), layers + 2))
    shapes = [(8, width)] + [(width, width)] * layers + [(width, 4)]
    params = {
        f"layer_{i:02d}": {"kernel": jax.random.normal(next(keys), s) / 4, "bias": jnp.zeros(s[1])}
        for i, s in enumerate(shapes)
    }
    monitor = monitor_relative_trust(mask=fromage_optax.kernel_mask())
    optimiser = optax.chain(optax.sgd(0.1), monitor)

    def loss(p, x):
        for i in range(len(shapes)):
            x = jnp.tanh(x @ p[f"layer_{i:02d}"]["kernel"] + p[f"layer_{i:02d}"]["bias"])
        return jnp.mean(jnp.square(x))

    def train_step(p, opt_state, x):
        updates, opt_state = optimiser.update(jax.grad(loss)(p, x), opt_state, p)
        return optax.apply_updates(p, updates), relative_trust_metrics(opt_state)

    def instructions(step, *args):
        return jax.jit(step).lower(*args).compile().as_text().count(" = ")

    models = 6
    stacked = jax.tree.map(lambda w: jnp.stack([w] * models), params)
    inputs = jnp.ones((models, 4, 8))
    one = instructions(train_step, params, optimiser.init(params), inputs[0])
    batched = instructions(jax.vmap(train_step), stacked, jax.vmap(optimiser.init)(stacked), inputs)
    # Both select branches are computed under vmap, so more than one model's, but not 5.8x.
    assert batched <= 4 * one, (batched, one)


# --- relative_trust_metrics -----------------------------------------------------------------


WRAPPERS = {
    "chain": lambda: optax.chain(optax.sgd(0.1), monitor_relative_trust()),
    "nested_chain": lambda: optax.chain(
        optax.clip_by_global_norm(1.0), optax.chain(optax.adam(1e-2), monitor_relative_trust())
    ),
    "inject_hyperparams": lambda: optax.chain(
        optax.inject_hyperparams(optax.adam)(learning_rate=1e-2), monitor_relative_trust()
    ),
    "masked": lambda: optax.chain(
        optax.sgd(0.1), optax.masked(monitor_relative_trust(), {"w": True, "b": False})
    ),
    "multi_steps": lambda: optax.MultiSteps(
        optax.chain(optax.sgd(0.1), monitor_relative_trust()), every_k_schedule=1
    ),
}


@pytest.mark.parametrize("wrapper", sorted(WRAPPERS))
def test_metrics_are_found_inside_wrapped_states(wrapper):
    params = {"w": jnp.array([3.0, 4.0]), "b": jnp.ones(2)}
    grads = {"w": jnp.array([3.0, 4.0]), "b": jnp.array([0.0, 0.0])}
    optimiser = WRAPPERS[wrapper]()
    state = optimiser.init(params)
    before = relative_trust_metrics(state)
    assert set(before) == {
        "max_relative_update_norm",
        "mean_relative_update_norm",
        "deep_relative_trust",
    }
    assert all(float(v) == 0.0 for v in before.values())
    updates, state = jax.jit(optimiser.update)(grads, state, params)
    after = jax.jit(relative_trust_metrics)(state)
    ratio_w = float(relative_update_norms(updates, params)["w"])
    assert ratio_w > 0
    np.testing.assert_allclose(float(after["max_relative_update_norm"]), ratio_w, rtol=1e-6)


def test_metrics_without_a_monitor_is_a_clear_error():
    state = optax.adam(1e-3).init({"w": jnp.ones(2)})
    with pytest.raises(ValueError, match="no MonitorRelativeTrustState"):
        relative_trust_metrics(state)


def test_metrics_with_two_monitors_is_a_clear_error():
    optimiser = optax.chain(monitor_relative_trust(), optax.sgd(0.1), monitor_relative_trust())
    with pytest.raises(ValueError, match="2 MonitorRelativeTrustStates"):
        relative_trust_metrics(optimiser.init({"w": jnp.ones(2)}))


# --- argument errors ------------------------------------------------------------------------


def test_monitor_without_params_is_a_clear_error():
    optimiser = optax.chain(optax.sgd(0.1), monitor_relative_trust())
    params = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match="needs the current parameters"):
        optimiser.update(params, optimiser.init(params))


def test_mismatched_trees_name_the_path():
    with pytest.raises(ValueError, match="'b'"):
        relative_update_norms({"a": jnp.ones(2)}, {"a": jnp.ones(2), "b": jnp.ones(2)})
    with pytest.raises(ValueError, match="shape"):
        deep_relative_trust({"a": jnp.ones(3)}, {"a": jnp.ones(2)})


def test_integer_params_are_rejected():
    with pytest.raises(TypeError, match="floating-point"):
        relative_update_norms({"step": jnp.ones(2)}, {"step": jnp.ones(2, jnp.int32)})


def test_bad_masks_are_rejected():
    params = {"a": jnp.ones(2), "b": jnp.ones(2)}
    with pytest.raises(TypeError, match="bools"):
        deep_relative_trust(params, params, mask={"a": 1, "b": True})
    with pytest.raises(ValueError, match="prefix"):
        deep_relative_trust(params, params, mask={"a": True})


def test_bad_layer_axes_and_axis_name_are_rejected():
    params = {"a": jnp.ones((2, 3))}
    with pytest.raises(ValueError, match="out of range"):
        relative_update_norms(params, params, layer_axes=2)
    with pytest.raises(TypeError, match="axis_name"):
        monitor_relative_trust(axis_name=3)


# --- docstring examples and sharding --------------------------------------------------------


def test_docstring_examples():
    # The examples call the public names: they must be the diagnostics module's own.
    for name in EXPORTED_NAMES:
        assert name in fromage_optax.__all__
        assert getattr(fromage_optax, name) is getattr(_diagnostics, name)
    results = doctest.testmod(_diagnostics, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert results.attempted >= 5
    assert results.failed == 0


SHARDED_SCRIPT = textwrap.dedent(
    """
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, PartitionSpec as P
    from fromage_optax._diagnostics import deep_relative_trust, relative_update_norms

    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.standard_normal((16, 4)), jnp.float32),
              "b": jnp.asarray(rng.standard_normal(4), jnp.float32)}
    updates = jax.tree.map(lambda x: 0.1 * x * jnp.cos(x), params)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    specs = {"w": P("data"), "b": P()}
    axis_name = {"w": "data", "b": None}

    def sharded(u, p):
        return (relative_update_norms(u, p, axis_name=axis_name),
                deep_relative_trust(u, p, axis_name=axis_name))

    shard_map = getattr(jax, "shard_map", None)
    if shard_map is None:
        from jax.experimental.shard_map import shard_map
    run = jax.jit(shard_map(sharded, mesh=mesh, in_specs=(specs, specs),
                            out_specs=({"w": P(), "b": P()}, P())))
    ratios, trust = run(updates, params)
    expected = relative_update_norms(updates, params)
    for k in params:
        np.testing.assert_allclose(float(ratios[k]), float(expected[k]), rtol=1e-6)
    np.testing.assert_allclose(float(trust), float(deep_relative_trust(updates, params)), rtol=1e-6)
    print("ok", len(jax.devices()))
    """
)


def test_axis_name_gives_global_ratios_inside_shard_map():
    environment = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    result = subprocess.run(
        [sys.executable, "-c", SHARDED_SCRIPT],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["ok", "8"]
