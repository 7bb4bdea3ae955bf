"""Tests of the Flax MLP models, the shared training pieces and the two MLP example scripts."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from benchmarks import mlp_linen, mlp_nnx, optimizers, training
from benchmarks.models import mlp


def test_torch_init_draws_weights_and_biases_from_fan_in_uniform():
    model = mlp.MLP((300, 200), 100)
    params = model.init(jax.random.key(0), jnp.zeros((1, 400)))["params"]
    for name, fan_in in (("hidden_0", 400), ("hidden_1", 300), ("output", 200)):
        bound = 1 / math.sqrt(fan_in)
        for leaf in (params[name]["kernel"], params[name]["bias"]):
            leaf = np.asarray(leaf)
            assert np.abs(leaf).max() <= bound
            # U(-b, b) has standard deviation b/√3; the max comes close to the bound.
            assert np.abs(leaf).max() > 0.9 * bound
            assert abs(leaf.std() - bound / math.sqrt(3)) < 0.1 * bound


def test_flax_init_has_zero_biases():
    model = mlp.MLP((16,), 3, init_scheme="flax")
    params = model.init(jax.random.key(0), jnp.zeros((1, 8)))["params"]
    assert not np.any(np.asarray(params["hidden_0"]["bias"]))
    assert np.abs(np.asarray(params["hidden_0"]["kernel"])).max() > 1 / math.sqrt(8)
    with pytest.raises(ValueError, match="init must be one of"):
        mlp.MLP((4,), 2, init_scheme="kaiming").init(jax.random.key(0), jnp.zeros((1, 3)))


def test_linen_and_nnx_mlps_compute_the_same_function():
    linen_model = mlp.MLP((7, 5), 3)
    params = linen_model.init(jax.random.key(1), jnp.zeros((1, 4)))["params"]
    nnx_model = mlp.NnxMLP(4, (7, 5), 3, rngs=nnx.Rngs(2))
    for index, layer in enumerate(nnx_model.hidden):
        layer.kernel[...] = params[f"hidden_{index}"]["kernel"]
        layer.bias[...] = params[f"hidden_{index}"]["bias"]
    nnx_model.output.kernel[...] = params["output"]["kernel"]
    nnx_model.output.bias[...] = params["output"]["bias"]
    inputs = jax.random.normal(jax.random.key(3), (6, 2, 2))
    expected = linen_model.apply({"params": params}, inputs)
    np.testing.assert_allclose(nnx_model(inputs), expected, rtol=1e-5, atol=1e-6)
    # Every NNX layer starts fan-in uniform too.
    fresh = mlp.NnxMLP(4, (7,), 3, rngs=nnx.Rngs(0))
    assert np.abs(np.asarray(fresh.hidden[0].bias[...])).max() > 0


def _linen_state(optimizer, seed=0):
    model = mlp.MLP((16, 16), 3)
    return training.create_train_state(model, optimizer, jnp.zeros((1, 5)), jax.random.key(seed))


def _toy_data(num_examples=40, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(num_examples, 5)).astype(np.float32)
    labels = (images[:, 0] > 0).astype(np.int32) + (images[:, 1] > 1).astype(np.int32)
    return {"image": images, "label": labels}


def test_epoch_fn_matches_a_python_loop_of_train_steps():
    data = _toy_data()
    indices = np.arange(40, dtype=np.int32).reshape(4, 10)[::-1]
    state = _linen_state(optimizers.make_optimizer("fromage", 0.05))
    scanned, metrics = training.make_epoch_fn(training.classifier_train_step)(state, data, indices)
    looped = state
    step = jax.jit(training.classifier_train_step)
    losses = []
    for batch_indices in indices:
        batch = {key: value[batch_indices] for key, value in data.items()}
        looped, step_metrics = step(looped, batch)
        losses.append(float(step_metrics["loss"]))
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        scanned.params,
        looped.params,
    )
    np.testing.assert_allclose(metrics["loss"], losses, rtol=1e-5)
    assert int(scanned.step) == 4


def test_fromage_moves_every_weight_matrix_by_about_the_learning_rate():
    data = _toy_data()
    state = _linen_state(optimizers.make_optimizer("fromage", 0.02))
    state, metrics = jax.jit(training.classifier_train_step)(state, data)
    # ‖ΔW‖/‖W‖ = η/√(1+η²)·‖W/‖W‖ − ĝ‖·… ≈ η up to the norm-control factor.
    assert 0.015 < float(metrics["max_relative_update_norm"]) < 0.03
    assert 0.015 < float(metrics["mean_relative_update_norm"]) < 0.03


def test_train_step_without_monitor_reports_only_loss_and_accuracy():
    state = _linen_state(optimizers.make_optimizer("sgd", 0.1, monitor=False))
    _, metrics = jax.jit(training.classifier_train_step)(state, _toy_data())
    assert sorted(metrics) == ["accuracy", "loss"]


def test_with_learning_rate_changes_the_injected_learning_rate():
    optimizer = optimizers.make_optimizer("sgd", 0.1, injectable=True)
    state = _linen_state(optimizer)
    slow = state.replace(opt_state=optimizers.with_learning_rate(state.opt_state, 0.0))
    data = _toy_data()
    step = jax.jit(training.classifier_train_step)
    new_slow, _ = step(slow, data)
    new_fast, _ = step(state, data)
    jax.tree.map(np.testing.assert_array_equal, new_slow.params, state.params)
    assert not np.allclose(new_fast.params["output"]["kernel"], state.params["output"]["kernel"])


def test_make_optimizer_rejects_unknown_names():
    with pytest.raises(ValueError, match="Unknown optimizer"):
        optimizers.make_optimizer("lamb", 0.1)
    assert isinstance(optimizers.make_optimizer("adam", 1e-3), optax.GradientTransformation)


def _check_outputs(out, stem, results, optimizer_names):
    payload = json.loads((out / f"{stem}.json").read_text())
    assert (out / f"{stem}_loss.png").stat().st_size > 1000
    assert [r["optimizer"] for r in payload["results"]] == optimizer_names
    for result in payload["results"]:
        for key in ("learning_rate", "train_accuracy", "test_accuracy", "train_seconds"):
            assert isinstance(result[key], float)
        assert len(result["history"]["test_loss"]) == payload["config"]["epochs"]
        # Chance is 10%: a few epochs on digits must do far better.
        assert result["test_accuracy"] > 0.5, result
    assert len(results) == len(optimizer_names)


def test_mlp_linen_quick_preset_compares_fromage_and_adam(tmp_path, capsys):
    results = mlp_linen.main(["--preset", "quick", "--out", str(tmp_path)])
    _check_outputs(tmp_path, "mlp_linen", results, ["fromage", "adam"])
    printed = capsys.readouterr().out
    assert "fromage" in printed and "adam" in printed and "test acc" in printed


def test_mlp_nnx_takes_any_optax_optimizer(tmp_path):
    results = mlp_nnx.main(
        ["--preset", "quick", "--optimizers", "sgd:0.05", "--out", str(tmp_path)]
    )
    _check_outputs(tmp_path, "mlp_nnx", results, ["sgd"])


def test_bad_optimizer_spec_is_rejected():
    with pytest.raises(SystemExit):
        mlp_linen.parse_args(["--optimizers", "fromage"])
