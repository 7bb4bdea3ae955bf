"""Properties of the Fromage step that hold for any tensor, checked with hypothesis."""

import jax
import numpy as np
import optax
import pytest
from _reference import reference_step, relative_error
from hypothesis import given
from hypothesis import strategies as st

import fromage_optax

shapes = st.lists(st.integers(1, 6), min_size=0, max_size=4).map(tuple)
learning_rates = st.floats(1e-4, 1.0)
seeds = st.integers(0, 2**31 - 1)

# One compiled update per (learning rate, p_bound) would recompile for every example: the
# learning rate is injected as a run-time hyperparameter instead.
_INJECTED = {
    bounded: optax.inject_hyperparams(fromage_optax.fromage)(
        learning_rate=0.1, p_bound=1.0 if bounded else None
    )
    for bounded in (False, True)
}
_UPDATE = {bounded: jax.jit(opt.update) for bounded, opt in _INJECTED.items()}


def one_step(param, grad, eta, p_bound=None, state=None):
    bounded = p_bound is not None
    if state is None:
        state = _INJECTED[bounded].init(param)
        if bounded:
            state.hyperparams["p_bound"] = np.float32(p_bound)
    state.hyperparams["learning_rate"] = np.float32(eta)
    updates, state = _UPDATE[bounded](grad, state, param)
    return np.asarray(optax.apply_updates(param, updates)), state


def normal(seed, shape, scale=1.0):
    return np.asarray(np.random.default_rng(seed).normal(size=shape) * scale, np.float32)


@given(shapes, learning_rates, seeds)
def test_orthogonal_gradient_keeps_the_norm(shape, eta, seed):
    w = normal(seed, shape)
    g = normal(seed + 1, shape)
    if w.size < 2 or np.linalg.norm(w) == 0:
        return
    g = g - (np.vdot(g, w) / np.vdot(w, w)) * w  # g ⟂ W
    if np.linalg.norm(g) < 1e-3 * np.linalg.norm(w):
        return
    new, _ = one_step(w, g.astype(np.float32), eta)
    np.testing.assert_allclose(np.linalg.norm(new), np.linalg.norm(w), rtol=2e-6)


@given(shapes, learning_rates, seeds, st.floats(0.0, 1.0))
def test_step_is_bounded_relative_to_the_weights(shape, eta, seed, zero_fraction):
    w = normal(seed, shape)
    w[np.random.default_rng(seed).uniform(size=shape) < zero_fraction] = 0.0
    g = normal(seed + 1, shape)
    new, _ = one_step(w, g, eta)
    w_norm = np.linalg.norm(w)
    if w_norm == 0:
        return  # the plain W − ηg rule applies; the bound is relative to ‖W‖
    bound = w_norm * (eta + np.sqrt(1 + eta**2) - 1) / np.sqrt(1 + eta**2)
    float32_rounding = 4 * np.finfo(np.float32).eps * w_norm  # new and w are float32
    assert np.linalg.norm(new.astype(np.float64) - w) <= bound * (1 + 1e-5) + float32_rounding


@given(shapes, st.floats(0.01, 0.5), seeds, st.floats(0.5, 3.0))
def test_p_bound_holds_after_every_step(shape, eta, seed, p_bound):
    w = normal(seed, shape, scale=0.5)
    if np.linalg.norm(w) == 0:
        return
    limit = p_bound * np.linalg.norm(w.astype(np.float64))
    state = None
    for step in range(4):
        # Gradients pointing against W grow its norm as fast as Fromage allows.
        g = -w + 0.1 * normal(seed + step, shape)
        w, state = one_step(w, g.astype(np.float32), eta, p_bound, state)
        assert np.linalg.norm(w.astype(np.float64)) <= limit * (1 + 2e-6)


@pytest.mark.parametrize("c", [1e-30, 1e-20, 1e-10, 1.0, 1e10, 1e20, 1e30])
@pytest.mark.parametrize("p_bound", [None, 2.0])
def test_step_is_invariant_to_the_gradient_scale(c, p_bound):
    rng = np.random.default_rng(0)
    params = {"w": rng.normal(size=(64, 32)).astype(np.float32), "b": np.zeros(32, np.float32)}
    grads = {"w": rng.normal(size=(64, 32)), "b": rng.normal(size=32)}
    opt = fromage_optax.fromage(0.1, p_bound)
    update = jax.jit(opt.update)
    base, _ = update(jax.tree.map(np.float32, grads), opt.init(params), params)
    scaled_grads = jax.tree.map(lambda g: np.float32(g * c), grads)
    scaled, _ = update(scaled_grads, opt.init(params), params)
    np.testing.assert_allclose(scaled["w"], base["w"], rtol=2e-6, atol=1e-7)
    # b starts at 0, so its step is the plain −ηg (it scales with c), or 0 under p_bound.
    expected_b = reference_step(params["b"], scaled_grads["b"], 0.1, p_bound, params["b"])
    assert relative_error(params["b"] + scaled["b"], expected_b) < 1e-6
    assert np.all(np.isfinite(scaled["w"]))


@pytest.mark.parametrize("c", [1e-30, 1e30])
def test_norms_are_exact_for_tiny_and_huge_weights(c):
    rng = np.random.default_rng(1)
    w = (rng.normal(size=(50, 20)) * c).astype(np.float32)
    g = rng.normal(size=(50, 20)).astype(np.float32)
    opt = fromage_optax.fromage(0.05)
    u, _ = jax.jit(opt.update)(g, opt.init(w), w)
    assert relative_error(w + u, reference_step(w, g, 0.05)) < 1e-6


scales = st.integers(-30, 30).map(lambda k: 10.0**k)
shapes_with_empty = st.lists(st.integers(0, 6), min_size=0, max_size=3).map(tuple)


@given(shapes_with_empty, scales, scales, st.sampled_from([None, 0.9, 2.0]), seeds)
def test_step_is_exact_at_every_scale_of_weights_and_gradients(
    shape, w_scale, g_scale, p_bound, seed
):
    """W and g scaled independently anywhere in float32's range: the step W' − W is the
    float64 reference's to float32 rounding, and never under- or overflows."""
    eta = 0.01
    w = normal(seed, shape, w_scale)
    g = normal(seed + 1, shape, g_scale)
    bounded = p_bound is not None
    state = _INJECTED[bounded].init(w)
    if bounded:
        state.hyperparams["p_bound"] = np.float32(p_bound)
    state.hyperparams["learning_rate"] = np.float32(eta)
    updates, _ = _UPDATE[bounded](g, state, w)
    expected = reference_step(w, g, eta, p_bound, w) - w.astype(np.float64)
    # u = a·W + b·g, each term rounded to a few float32 ulps (norms, coefficients, products).
    w64, g64 = w.astype(np.float64), g.astype(np.float64)
    w_norm, g_norm = np.linalg.norm(w64), np.linalg.norm(g64)
    ratio = w_norm / g_norm if w_norm > 0 and g_norm > 0 else 1.0
    terms = (1 - 1 / np.sqrt(1 + eta**2)) * w_norm + eta * ratio * g_norm
    error = np.linalg.norm(np.asarray(updates, np.float64) - expected)
    assert np.all(np.isfinite(updates))
    assert error <= 32 * np.finfo(np.float32).eps * (terms + np.linalg.norm(expected))
