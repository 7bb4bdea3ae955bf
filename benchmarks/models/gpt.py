"""A decoder-only (GPT-style) transformer language model in Flax Linen.

Pre-LayerNorm blocks (causal self-attention, then a GELU MLP), learned
position embeddings, a final LayerNorm and an output head that is either the
token embedding itself (tied) or a separate Dense layer. With
``GPTConfig.scan_layers`` the blocks are stacked with ``nn.scan``: every block
parameter then has a leading axis of size ``num_layers``, and `gpt_layer_axes`
gives the matching ``layer_axes`` for ``fromage_optax.fromage`` so that norms
stay per layer.

Example:
  >>> import jax
  >>> config = gpt_config("quick")
  >>> params = init_gpt_params(config, jax.random.key(0))
  >>> tokens = jax.numpy.zeros((2, config.context_length), jax.numpy.int32)
  >>> GPT(config).apply({"params": params}, tokens).shape
  (2, 16, 256)
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    """Shape of a GPT model.

    Attributes:
      vocab_size: number of token ids (256 for bytes).
      context_length: longest sequence the position embedding covers.
      num_layers: number of transformer blocks.
      num_heads: attention heads per block; must divide `width`.
      width: model (embedding) dimension.
      mlp_ratio: hidden width of the MLP as a multiple of `width`.
      tie_embeddings: output logits from the token embedding (tied) or from a
        separate Dense layer.
      scan_layers: stack the blocks with ``nn.scan`` (one compiled block, block
        parameters with a leading layer axis).
      dtype: computation dtype (parameters are always float32).
      init: "gpt2": every matrix and embedding normal with std 0.02, the residual
        projections 0.02/√(2·num_layers) (GPT-2, nanoGPT); "lecun": every Dense
        kernel normal with std 1/√fan_in and embeddings with std 1/√width, which
        gives weights several times larger (norm-preserving optimisers such as
        Fromage keep roughly the initial scale).
    """

    vocab_size: int = 256
    context_length: int = 64
    num_layers: int = 4
    num_heads: int = 4
    width: int = 128
    mlp_ratio: int = 4
    tie_embeddings: bool = True
    scan_layers: bool = False
    dtype: str = "float32"
    init: str = "gpt2"

    def __post_init__(self):
        if self.width % self.num_heads:
            raise ValueError(
                f"GPTConfig: width {self.width} is not divisible by num_heads {self.num_heads}."
            )
        if self.init not in ("gpt2", "lecun"):
            raise ValueError(f"GPTConfig: init must be 'gpt2' or 'lecun', got {self.init!r}.")
        for field in ("vocab_size", "context_length", "num_layers", "num_heads", "width"):
            if getattr(self, field) < 1:
                raise ValueError(f"GPTConfig: {field} must be positive.")


_PRESETS = {
    # Seconds on a CPU; the tests run it.
    "quick": GPTConfig(context_length=16, num_layers=2, num_heads=2, width=32),
    # One block: the end-to-end tests' model (their time is compilation, which grows with depth).
    "tiny": GPTConfig(context_length=16, num_layers=1, num_heads=2, width=32),
    # About nanoGPT's CPU configuration (shakespeare_char on a laptop).
    "cpu": GPTConfig(context_length=64, num_layers=4, num_heads=4, width=128),
    # ≈10.7M parameters: the step-speed benchmark's CPU-sized model (not trained).
    "speed_cpu": GPTConfig(context_length=256, num_layers=6, num_heads=6, width=384),
    # ≈114M parameters (GPT-2 small's blocks, 16 deep, byte vocabulary), for a GPU/TPU.
    "gpu": GPTConfig(
        context_length=512,
        num_layers=16,
        num_heads=12,
        width=768,
        tie_embeddings=False,
        scan_layers=True,
        dtype="bfloat16",
    ),
}

PRESET_NAMES = tuple(_PRESETS)


def gpt_config(preset: str, **overrides: Any) -> GPTConfig:
    """The named model configuration, with fields optionally replaced.

    Args:
      preset: one of "quick", "tiny", "cpu", "speed_cpu", "gpu".
      **overrides: `GPTConfig` fields to change, e.g. ``scan_layers=True``.

    Returns:
      A `GPTConfig`.
    """
    if preset not in _PRESETS:
        raise ValueError(f"unknown GPT preset {preset!r}; choose one of {PRESET_NAMES}")
    return dataclasses.replace(_PRESETS[preset], **overrides)


def _dense(features: int, name: str, config: GPTConfig, stddev: float = 0.02) -> nn.Dense:
    return nn.Dense(
        features,
        dtype=jnp.dtype(config.dtype),
        kernel_init=(
            nn.initializers.lecun_normal()
            if config.init == "lecun"
            else nn.initializers.normal(stddev)
        ),
        name=name,
    )


def _embedding_init(config: GPTConfig):
    stddev = 1 / math.sqrt(config.width) if config.init == "lecun" else 0.02
    return nn.initializers.normal(stddev)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which position t sees positions ≤ t."""

    config: GPTConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        config = self.config
        batch, length, width = x.shape
        head_dim = width // config.num_heads
        qkv = _dense(3 * width, "qkv", config)(x)
        qkv = qkv.reshape(batch, length, 3, config.num_heads, head_dim)
        query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        attended = jax.nn.dot_product_attention(query, key, value, is_causal=True)
        # GPT-2's scaling of the residual projections keeps the residual stream's
        # variance independent of depth at init.
        residual_stddev = 0.02 / math.sqrt(2 * config.num_layers)
        return _dense(width, "out", config, residual_stddev)(attended.reshape(batch, length, width))


class Block(nn.Module):
    """One pre-LayerNorm transformer block: x + attn(LN(x)), then x + mlp(LN(x))."""

    config: GPTConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        config = self.config
        dtype = jnp.dtype(config.dtype)
        x = x + CausalSelfAttention(config, name="attention")(
            nn.LayerNorm(dtype=dtype, name="attention_norm")(x)
        )
        hidden = nn.LayerNorm(dtype=dtype, name="mlp_norm")(x)
        hidden = nn.gelu(_dense(config.mlp_ratio * config.width, "mlp_in", config)(hidden))
        residual_stddev = 0.02 / math.sqrt(2 * config.num_layers)
        return x + _dense(config.width, "mlp_out", config, residual_stddev)(hidden)


class _ScannedBlock(nn.Module):
    """`Block` with the (carry, input) -> (carry, output) signature `nn.scan` needs."""

    config: GPTConfig

    @nn.compact
    def __call__(self, x: jax.Array, _: None) -> tuple[jax.Array, None]:
        return Block(self.config, name="block")(x), None


class GPT(nn.Module):
    """Decoder-only transformer: token ids [batch, length] -> logits [batch, length, vocab]."""

    config: GPTConfig

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        config = self.config
        dtype = jnp.dtype(config.dtype)
        length = tokens.shape[-1]
        if length > config.context_length:
            raise ValueError(
                f"sequence length {length} exceeds context_length {config.context_length}"
            )
        embed = nn.Embed(
            config.vocab_size,
            config.width,
            embedding_init=_embedding_init(config),
            dtype=dtype,
            name="token_embedding",
        )
        positions = self.param(
            "position_embedding",
            _embedding_init(config),
            (config.context_length, config.width),
        )
        x = embed(tokens) + positions[:length].astype(dtype)
        if config.scan_layers:
            stack = nn.scan(
                _ScannedBlock,
                variable_axes={"params": 0},
                split_rngs={"params": True},
                length=config.num_layers,
            )
            x, _ = stack(config, name="blocks")(x, None)
        else:
            for index in range(config.num_layers):
                x = Block(config, name=f"block_{index}")(x)
        x = nn.LayerNorm(dtype=dtype, name="final_norm")(x)
        if config.tie_embeddings:
            logits = embed.attend(x)
        else:
            logits = _dense(config.vocab_size, "output_head", config)(x)
        return logits.astype(jnp.float32)


def init_gpt_params(config: GPTConfig, rng: jax.Array) -> dict:
    """The initial parameter tree (the ``"params"`` collection) of `GPT(config)`.

    Wrap in ``jax.eval_shape(lambda: init_gpt_params(config, rng))`` for the
    shapes without allocating anything.
    """
    return _jitted_init(config)(rng)["params"]


@functools.cache
def _jitted_init(config: GPTConfig):
    # One compiled initialiser per config: eager Linen init dispatches (and
    # compiles) every initialiser op separately, which is slow on a CPU.
    tokens = jax.ShapeDtypeStruct((1, config.context_length), jnp.int32)
    return jax.jit(lambda rng: GPT(config).init(rng, jnp.zeros(tokens.shape, tokens.dtype)))


def parameter_count(params: Any) -> int:
    """Number of scalars in a params tree (arrays or ``jax.ShapeDtypeStruct``s)."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))


def gpt_parameter_count(config: GPTConfig) -> int:
    """Number of parameters of `GPT(config)`, found by shape inference alone."""
    shapes = jax.eval_shape(lambda: init_gpt_params(config, jax.random.key(0)))
    return parameter_count(shapes)


def gpt_layer_axes(params: dict) -> dict:
    """The ``layer_axes`` prefix for `fromage`: 0 for blocks stacked by scan, else None.

    Use as ``fromage(lr, layer_axes=gpt_layer_axes)`` (a callable, so it also
    works under ``optax.masked``) or ``layer_axes=gpt_layer_axes(params)``.
    """
    return {name: (0 if name == "blocks" else None) for name in params}
