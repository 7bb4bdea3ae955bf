"""Tests for benchmarks/models/gpt.py: shapes, parameter counts, causality, scan equivalence."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fromage_optax
from benchmarks.models import gpt


def _expected_parameter_count(config: gpt.GPTConfig) -> int:
    """Counted by hand: per block qkv, out, mlp_in, mlp_out (weights + biases), two LayerNorms."""
    w, hidden = config.width, config.mlp_ratio * config.width
    per_block = (w * 3 * w + 3 * w) + (w * w + w) + (w * hidden + hidden) + (hidden * w + w)
    per_block += 2 * 2 * w
    count = config.num_layers * per_block
    count += config.vocab_size * w + config.context_length * w + 2 * w
    if not config.tie_embeddings:
        count += w * config.vocab_size + config.vocab_size
    return count


@pytest.mark.parametrize("preset", gpt.PRESET_NAMES)
def test_parameter_count_matches_hand_count(preset):
    config = gpt.gpt_config(preset)
    assert gpt.gpt_parameter_count(config) == _expected_parameter_count(config)


def test_gpu_preset_has_over_1e8_parameters_without_materialising():
    config = gpt.gpt_config("gpu")
    shapes = jax.eval_shape(lambda: gpt.init_gpt_params(config, jax.random.key(0)))
    assert all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree.leaves(shapes))
    assert gpt.parameter_count(shapes) >= 1e8


def test_speed_cpu_preset_is_about_ten_million_parameters():
    assert 9e6 <= gpt.gpt_parameter_count(gpt.gpt_config("speed_cpu")) <= 12e6


def test_cpu_preset_is_nanogpt_cpu_shape():
    config = gpt.gpt_config("cpu")
    assert (config.num_layers, config.num_heads, config.width, config.context_length) == (
        4,
        4,
        128,
        64,
    )


def test_bad_config_and_preset_rejected():
    with pytest.raises(ValueError, match="divisible"):
        gpt.GPTConfig(width=10, num_heads=3)
    with pytest.raises(ValueError, match="unknown GPT preset"):
        gpt.gpt_config("huge")


@pytest.mark.parametrize("tie", [True, False])
def test_logits_shape_and_causality(tie):
    config = gpt.gpt_config("quick", tie_embeddings=tie)
    params = gpt.init_gpt_params(config, jax.random.key(0))
    model = gpt.GPT(config)
    tokens = jax.random.randint(jax.random.key(1), (2, config.context_length), 0, 256)
    logits = model.apply({"params": params}, tokens)
    assert logits.shape == (2, config.context_length, config.vocab_size)
    assert bool(jnp.all(jnp.isfinite(logits)))
    changed = tokens.at[:, 7].set((tokens[:, 7] + 1) % 256)
    changed_logits = model.apply({"params": params}, changed)
    np.testing.assert_allclose(changed_logits[:, :7], logits[:, :7], atol=1e-6)
    assert not np.allclose(changed_logits[:, 7:], logits[:, 7:], atol=1e-6)


def _stack_blocks(params: dict, num_layers: int) -> dict:
    """The unscanned params rearranged into the tree `scan_layers=True` expects."""
    stacked = {k: v for k, v in params.items() if not k.startswith("block_")}
    blocks = [params[f"block_{i}"] for i in range(num_layers)]
    stacked["blocks"] = {"block": jax.tree.map(lambda *xs: jnp.stack(xs), *blocks)}
    return stacked


def test_scanned_model_matches_unrolled_model():
    config = gpt.gpt_config("quick")
    scanned_config = gpt.gpt_config("quick", scan_layers=True)
    params = gpt.init_gpt_params(config, jax.random.key(0))
    scanned_params = _stack_blocks(params, config.num_layers)
    shapes = jax.eval_shape(lambda: gpt.init_gpt_params(scanned_config, jax.random.key(0)))
    chex.assert_trees_all_equal_shapes(scanned_params, shapes)
    tokens = jax.random.randint(jax.random.key(1), (2, 12), 0, 256)
    chex.assert_trees_all_close(
        gpt.GPT(scanned_config).apply({"params": scanned_params}, tokens),
        gpt.GPT(config).apply({"params": params}, tokens),
        atol=1e-5,
    )


def test_layer_axes_marks_only_stacked_blocks():
    scanned = gpt.init_gpt_params(gpt.gpt_config("quick", scan_layers=True), jax.random.key(0))
    axes = gpt.gpt_layer_axes(scanned)
    assert axes["blocks"] == 0
    assert {k for k, v in axes.items() if v is not None} == {"blocks"}
    unrolled = gpt.init_gpt_params(gpt.gpt_config("quick"), jax.random.key(0))
    assert all(v is None for v in gpt.gpt_layer_axes(unrolled).values())


def _fromage_step(optimizer, params, grads):
    @jax.jit
    def step(params, grads):
        updates, _ = optimizer.update(grads, optimizer.init(params), params)
        return optax.apply_updates(params, updates)

    return step(params, grads)


@pytest.mark.parametrize("p_bound", [None, 1.0])
def test_fromage_step_on_scanned_blocks_matches_per_block_step(p_bound):
    """With gpt_layer_axes, Fromage treats every stacked block as its own layer."""
    config = gpt.gpt_config("quick")
    params = gpt.init_gpt_params(config, jax.random.key(0))
    grads = jax.tree.map(lambda x: jax.random.normal(jax.random.key(x.size), x.shape), params)
    expected = _stack_blocks(
        _fromage_step(fromage_optax.fromage(0.1, p_bound), params, grads), config.num_layers
    )

    scanned_params = _stack_blocks(params, config.num_layers)
    scanned_grads = _stack_blocks(grads, config.num_layers)
    scanned_opt = fromage_optax.fromage(0.1, p_bound, layer_axes=gpt.gpt_layer_axes)
    chex.assert_trees_all_close(
        _fromage_step(scanned_opt, scanned_params, scanned_grads), expected, atol=1e-6
    )


@pytest.mark.parametrize("init", ["gpt2", "lecun"])
def test_initial_weight_scales(init):
    config = gpt.gpt_config("cpu", init=init)
    params = gpt.init_gpt_params(config, jax.random.key(0))
    width, layers = config.width, config.num_layers
    if init == "gpt2":
        expected = {"qkv": 0.02, "mlp_out": 0.02 / np.sqrt(2 * layers), "embedding": 0.02}
    else:
        expected = {"qkv": width**-0.5, "mlp_out": (4 * width) ** -0.5, "embedding": width**-0.5}
    block = params["block_0"]
    measured = {
        "qkv": np.std(block["attention"]["qkv"]["kernel"]),
        "mlp_out": np.std(block["mlp_out"]["kernel"]),
        "embedding": np.std(params["token_embedding"]["embedding"]),
    }
    for name, std in expected.items():
        assert measured[name] == pytest.approx(std, rel=0.05), name
    assert not np.any(block["mlp_in"]["bias"])
    with pytest.raises(ValueError, match="init"):
        gpt.gpt_config("cpu", init="xavier")
