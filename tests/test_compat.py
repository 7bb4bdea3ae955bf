"""Fromage inside the optax ecosystem: the wrappers and trees not in the composability battery.

vmap, the optax wrappers (chain, masked, multi_transform, MultiSteps, apply_if_finite), Flax's
TrainState and nnx.Optimizer run on real-sized trees in tests/test_composability.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _reference import reference_step, relative_error

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
