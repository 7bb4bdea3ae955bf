"""Low- and high-precision parameters: float32 accumulation, results in each param's dtype."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _reference import reference_step, relative_error

import fromage_optax


@pytest.mark.parametrize(
    "dtype, tolerance", [(jnp.bfloat16, 2e-2), (jnp.float16, 2e-3), (jnp.float32, 1e-6)]
)
@pytest.mark.parametrize("p_bound", [None, 1.0])
def test_low_precision_params(dtype, tolerance, p_bound):
    rng = np.random.default_rng(0)
    # 256k elements: a bfloat16 running sum of squares would stall far below the true norm.
    w = jnp.asarray(rng.normal(size=(512, 512)), dtype)
    g = jnp.asarray(rng.normal(size=(512, 512)), dtype)
    params = {"w": w, "b": jnp.zeros(8, dtype)}
    grads = {"w": g, "b": jnp.ones(8, dtype)}
    opt = fromage_optax.fromage(0.1, p_bound)
    updates, _ = jax.jit(opt.update)(grads, opt.init(params), params)
    assert updates["w"].dtype == dtype and updates["b"].dtype == dtype
    new = optax.apply_updates(params, updates)
    assert new["w"].dtype == dtype
    # Reference from the very same (rounded) inputs, in float64.
    expected = reference_step(
        np.asarray(w, np.float64),
        np.asarray(g, np.float64),
        0.1,
        p_bound,
        np.asarray(w, np.float64),
    )
    assert relative_error(np.asarray(new["w"], np.float64), expected) < tolerance
    np.testing.assert_allclose(
        np.linalg.norm(np.asarray(new["w"], np.float64)),
        np.linalg.norm(expected),
        rtol=tolerance / 4,
    )


def test_float32_grads_on_bfloat16_params():
    rng = np.random.default_rng(1)
    w = jnp.asarray(rng.normal(size=(64, 64)), jnp.bfloat16)
    g = jnp.asarray(rng.normal(size=(64, 64)), jnp.float32)
    opt = fromage_optax.fromage(0.05)
    u, _ = jax.jit(opt.update)(g, opt.init(w), w)
    assert u.dtype == jnp.bfloat16
    expected = reference_step(np.asarray(w, np.float64), np.asarray(g, np.float64), 0.05)
    assert relative_error(np.asarray(w + u, np.float64), expected) < 1e-2


def test_float64_params_accumulate_in_float64(enable_x64):
    rng = np.random.default_rng(2)
    w = jnp.asarray(rng.normal(size=(30, 30)) * 1e-200)  # far below float32's range
    g = jnp.asarray(rng.normal(size=(30, 30)) * 1e200)
    assert w.dtype == jnp.float64
    for opt in [
        fromage_optax.fromage(1e-3, p_bound=1.5),
        optax.chain(
            fromage_optax.scale_by_fromage(),
            optax.scale_by_learning_rate(1e-3),
            fromage_optax.control_weight_norm(1e-3),
            fromage_optax.bound_weight_norm(1.5),
        ),
    ]:
        u, _ = jax.jit(opt.update)(g, opt.init(w), w)
        assert u.dtype == jnp.float64
        expected = reference_step(np.asarray(w), np.asarray(g), 1e-3, 1.5, np.asarray(w))
        assert relative_error(w + u, expected) < 1e-12
