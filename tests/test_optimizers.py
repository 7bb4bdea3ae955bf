"""benchmarks/optimizers.py: every registry name builds the optax function it names."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fromage_optax
from benchmarks import optimizers

PARAMS = {"w": jnp.arange(6.0).reshape(2, 3) - 2.0, "b": jnp.ones(3)}
# "kernel": the name fromage_with_adamw's default mask gives Fromage ("w" and "b" get AdamW).
PARAMS["layer"] = {"kernel": jnp.arange(12.0).reshape(3, 4) / 7 - 0.5, "bias": jnp.zeros(4)}
GRADS = jax.tree.map(lambda p: jnp.cos(p) + 0.5, PARAMS)


def _updates(optimizer):
    updates, _ = optimizer.update(GRADS, optimizer.init(PARAMS), PARAMS)
    return updates


@pytest.mark.parametrize(
    "name, options, reference",
    [
        ("sgd", {"momentum": 0.9}, optax.sgd(0.1, momentum=0.9)),
        ("adam", {"b1": 0.0}, optax.adam(0.1, b1=0.0)),
        ("adamw", {"weight_decay": 0.1}, optax.adamw(0.1, weight_decay=0.1)),
        ("lars", {}, optax.lars(0.1)),
        ("fromage", {"p_bound": 2.0}, fromage_optax.fromage(0.1, p_bound=2.0)),
        ("optax_fromage", {}, optax.fromage(0.1)),
        (
            "fromage_adamw",
            {"adamw_learning_rate": 1e-3, "momentum": 0.5, "weight_decay": 0.1},
            fromage_optax.fromage_with_adamw(0.1, 1e-3, momentum=0.5, weight_decay=0.1),
        ),
        (
            "sgd",
            {"clip_norm": 1.0},
            optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.1)),
        ),
    ],
)
def test_create_builds_the_named_optax_function(name, options, reference):
    jax.tree.map(
        np.testing.assert_array_equal,
        _updates(optimizers.create(name, 0.1, **options)),
        _updates(reference),
    )


def test_make_optimizer_monitors_and_injects():
    optimizer = optimizers.make_optimizer("sgd", 0.1, injectable=True, momentum=0.9)
    state = optimizer.init(PARAMS)
    _, state = optimizer.update(GRADS, state, PARAMS)
    assert set(optimizers.relative_trust(state.inner_state)) == {
        "max_relative_update_norm",
        "mean_relative_update_norm",
        "deep_relative_trust",
    }
    slow = optimizers.with_learning_rate(state, 0.0)
    updates, _ = optimizer.update(GRADS, slow, PARAMS)
    assert all(float(jnp.max(jnp.abs(u))) == 0 for u in jax.tree.leaves(updates))
    plain = optimizers.make_optimizer("sgd", 0.1, monitor=False)
    assert optimizers.relative_trust(plain.init(PARAMS)) == {}
    with pytest.raises(ValueError, match="Unknown optimizer 'lamb'"):
        optimizers.create("lamb", 0.1)


@pytest.mark.parametrize("p_bound", [None, 2.0])
def test_fromage_chain_is_the_fused_step_up_to_rounding(p_bound):
    chain = optimizers.create("fromage_chain", 0.1, p_bound=p_bound)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
        _updates(chain),
        _updates(fromage_optax.fromage(0.1, p_bound=p_bound)),
    )
    # Its learning rate can live in the state, as every experiment's step needs.
    injectable = optimizers.make_optimizer("fromage_chain", 0.1, injectable=True, monitor=False)
    state = optimizers.with_learning_rate(injectable.init(PARAMS), 0.05)
    updates, _ = jax.jit(injectable.update)(GRADS, state, PARAMS)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
        updates,
        _updates(fromage_optax.fromage(0.05)),
    )
