"""Fromage inside the optax and flax ecosystem: every wrapper a training loop is likely to use."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _reference import reference_step, relative_error
from flax import nnx
from flax.training import train_state

import fromage_optax


def problem(seed=0):
    rng = np.random.default_rng(seed)
    params = {
        "dense": {
            "kernel": rng.normal(size=(6, 4)).astype(np.float32),
            "bias": np.zeros(4, np.float32),
        },
        "scale": np.float32(1.5),
    }
    grads = {
        "dense": {
            "kernel": rng.normal(size=(6, 4)).astype(np.float32),
            "bias": rng.normal(size=4).astype(np.float32),
        },
        "scale": np.float32(0.25),
    }
    return params, grads


def reference_tree(params, grads, eta, p_bound=None):
    return jax.tree.map(lambda w, g: reference_step(w, g, eta, p_bound, w), params, grads)


def assert_tree_close(actual, expected, tolerance=1e-6):
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        assert relative_error(a, e) <= tolerance


def test_vmap_over_independent_problems():
    batch = [problem(seed) for seed in range(3)]
    params = jax.tree.map(lambda *xs: jnp.stack(xs), *[p for p, _ in batch])
    grads = jax.tree.map(lambda *xs: jnp.stack(xs), *[g for _, g in batch])
    opt = fromage_optax.fromage(0.1, p_bound=1.5)
    state = jax.vmap(opt.init)(params)
    updates, _ = jax.jit(jax.vmap(opt.update))(grads, state, params)
    new = optax.apply_updates(params, updates)
    for i, (p, g) in enumerate(batch):
        assert_tree_close(jax.tree.map(lambda x, i=i: x[i], new), reference_tree(p, g, 0.1, 1.5))


def test_inject_hyperparams_changes_learning_rate_and_p_bound_at_run_time():
    params, grads = problem()
    opt = optax.inject_hyperparams(fromage_optax.fromage)(learning_rate=0.1, p_bound=2.0)
    state = opt.init(params)
    update = jax.jit(opt.update)
    updates, state = update(grads, state, params)
    assert_tree_close(optax.apply_updates(params, updates), reference_tree(params, grads, 0.1, 2.0))
    state.hyperparams["learning_rate"] = jnp.asarray(0.5)
    state.hyperparams["p_bound"] = jnp.asarray(1.0)
    updates, state = update(grads, state, params)
    expected = jax.tree.map(lambda w, g: reference_step(w, g, 0.5, 1.0, w), params, grads)
    assert_tree_close(optax.apply_updates(params, updates), expected)


def test_after_clip_by_global_norm():
    params, grads = problem()
    opt = optax.chain(optax.clip_by_global_norm(1e-3), fromage_optax.fromage(0.1))
    updates, _ = jax.jit(opt.update)(grads, opt.init(params), params)
    # Clipping rescales g as a whole; Fromage is invariant to that, except for the zero
    # bias whose plain −ηg step sees the clipped gradient.
    # As arrays: an eager global_norm in optax 0.2.4-0.2.6 rejects NumPy scalars ("scale").
    clipped, _ = optax.clip_by_global_norm(1e-3).update(jax.tree.map(jnp.asarray, grads), None)
    assert_tree_close(optax.apply_updates(params, updates), reference_tree(params, clipped, 0.1))


def test_masked_and_multi_transform_fromage_on_kernels_adam_on_the_rest():
    params, grads = problem()
    is_kernel = jax.tree_util.tree_map_with_path(lambda path, _: path[-1].key == "kernel", params)
    masked = optax.masked(fromage_optax.fromage(0.1, p_bound=2.0), is_kernel)
    updates, _ = jax.jit(masked.update)(grads, masked.init(params), params)
    np.testing.assert_array_equal(updates["dense"]["bias"], grads["dense"]["bias"])
    expected = reference_step(params["dense"]["kernel"], grads["dense"]["kernel"], 0.1)
    assert relative_error(params["dense"]["kernel"] + updates["dense"]["kernel"], expected) < 1e-6

    labels = jax.tree.map(lambda k: "fromage" if k else "adam", is_kernel)
    multi = optax.multi_transform(
        {"fromage": fromage_optax.fromage(0.1), "adam": optax.adam(1e-3)}, labels
    )
    updates, _ = jax.jit(multi.update)(grads, multi.init(params), params)
    assert relative_error(params["dense"]["kernel"] + updates["dense"]["kernel"], expected) < 1e-6
    adam_bias, _ = optax.adam(1e-3).update(
        grads["dense"]["bias"], optax.adam(1e-3).init(params["dense"]["bias"])
    )
    np.testing.assert_allclose(updates["dense"]["bias"], adam_bias, rtol=1e-6)


def test_multi_steps_accumulates_then_steps_with_the_mean_gradient():
    params, grads = problem()
    opt = optax.MultiSteps(fromage_optax.fromage(0.1), every_k_schedule=2)
    state = opt.init(params)
    other = jax.tree.map(lambda g: 3 * g, grads)
    updates, state = jax.jit(opt.update)(grads, state, params)
    assert all(np.all(u == 0) for u in jax.tree.leaves(updates))
    updates, state = jax.jit(opt.update)(other, state, params)
    mean = jax.tree.map(lambda a, b: (a + b) / 2, grads, other)
    assert_tree_close(optax.apply_updates(params, updates), reference_tree(params, mean, 0.1))


def test_apply_if_finite_skips_a_nan_step():
    params, grads = problem()
    opt = optax.apply_if_finite(fromage_optax.fromage(0.1), max_consecutive_errors=5)
    state = opt.init(params)
    bad = jax.tree.map(lambda g: g, grads)
    bad["dense"]["kernel"] = bad["dense"]["kernel"].copy()
    bad["dense"]["kernel"][0, 0] = np.nan
    updates, state = jax.jit(opt.update)(bad, state, params)
    new = optax.apply_updates(params, updates)
    jax.tree.map(np.testing.assert_array_equal, new, params)
    assert int(state.notfinite_count) == 1
    updates, state = jax.jit(opt.update)(grads, state, params)
    assert_tree_close(optax.apply_updates(params, updates), reference_tree(params, grads, 0.1))


def test_nan_gradient_without_apply_if_finite_gives_a_non_finite_step():
    params, grads = problem()
    grads["scale"] = np.float32(np.nan)
    opt = fromage_optax.fromage(0.1)
    updates, _ = jax.jit(opt.update)(grads, opt.init(params), params)
    assert not np.isfinite(updates["scale"])
    assert np.all(np.isfinite(updates["dense"]["kernel"]))  # other tensors are unaffected


def test_reduce_on_plateau_after_fromage():
    params, grads = problem()
    opt = optax.chain(
        fromage_optax.fromage(0.1),
        optax.contrib.reduce_on_plateau(factor=0.5, patience=0, accumulation_size=1),
    )
    state = opt.init(params)
    update = jax.jit(opt.update)
    for loss in [1.0, 2.0, 3.0]:
        updates, state = update(grads, state, params, value=jnp.asarray(loss))
    assert float(state[1].scale) < 1.0
    expected = jax.tree.map(
        lambda w, g: (reference_step(w, g, 0.1) - w) * float(state[1].scale), params, grads
    )
    assert_tree_close(updates, expected)


def test_flax_train_state():
    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(1)(nn.relu(nn.Dense(8)(x)))

    model = MLP()
    x = jnp.ones((4, 3))
    variables = model.init(jax.random.PRNGKey(0), x)
    state = train_state.TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        tx=fromage_optax.fromage(0.05, p_bound=3.0),
    )

    @jax.jit
    def train_step(state, x):
        loss_fn = lambda p: jnp.mean(state.apply_fn({"params": p}, x) ** 2)
        grads = jax.grad(loss_fn)(state.params)
        return state.apply_gradients(grads=grads), grads

    old = state.params
    state, grads = train_step(state, x)
    expected = jax.tree.map(lambda w, g: reference_step(w, g, 0.05, 3.0, w), old, grads)
    assert_tree_close(state.params, expected)
    assert int(state.step) == 1


def test_nnx_optimizer():
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, fromage_optax.fromage(0.05), wrt=nnx.Param)
    x = jnp.ones((5, 3))

    @nnx.jit
    def train_step(model, optimizer, x):
        grads = nnx.grad(lambda m: jnp.mean(m(x) ** 2))(model)
        optimizer.update(model, grads)
        return grads

    old_kernel = np.asarray(model.kernel[...])
    grads = train_step(model, optimizer, x)
    expected = reference_step(old_kernel, np.asarray(grads["kernel"][...]), 0.05)
    assert relative_error(model.kernel[...], expected) < 1e-6
    # The bias starts at zero: a full-size plain step.
    expected_bias = reference_step(np.zeros(2), np.asarray(grads["bias"][...]), 0.05)
    assert relative_error(model.bias[...], expected_bias) < 1e-6


def test_masked_node_and_none_leaves_empty_tree_and_scalars():
    opt = fromage_optax.fromage(0.1, p_bound=2.0)
    params = {"a": jnp.ones(3), "frozen": None, "masked": optax.MaskedNode(), "s": jnp.float32(2.0)}
    grads = {
        "a": jnp.arange(3.0),
        "frozen": None,
        "masked": optax.MaskedNode(),
        "s": jnp.float32(-1.0),
    }
    updates, _ = jax.jit(opt.update)(grads, opt.init(params), params)
    assert updates["frozen"] is None and isinstance(updates["masked"], optax.MaskedNode)
    assert (
        relative_error(params["s"] + updates["s"], reference_step(2.0, -1.0, 0.1, 2.0, 2.0)) < 1e-6
    )

    empty_updates, empty_state = opt.update({}, opt.init({}), {})
    assert empty_updates == {}
    assert int(empty_state.count) == 1


@pytest.mark.parametrize(
    "make",
    [
        lambda: fromage_optax.fromage(0.1),
        lambda: fromage_optax.scale_by_fromage(),
        lambda: fromage_optax.control_weight_norm(0.1),
        lambda: fromage_optax.bound_weight_norm(2.0),
    ],
)
def test_every_transform_works_with_jit_and_chains(make):
    params, grads = problem()
    opt = optax.chain(optax.identity(), make())
    updates, state = jax.jit(opt.update)(grads, opt.init(params), params)
    eager_updates, _ = opt.update(grads, opt.init(params), params)
    assert_tree_close(updates, eager_updates, 1e-6)
    assert jax.tree.structure(updates) == jax.tree.structure(params)
