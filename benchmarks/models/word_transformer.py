"""The transformer of PyTorch's ``word_language_model`` example, in Flax Linen.

The model the Fromage authors trained on WikiText-2: a token embedding scaled
by √width, sinusoidal positions, dropout, then ``nn.TransformerEncoder``'s
post-LayerNorm layers (causal self-attention, then a ReLU feed-forward; dropout
on the attention weights, inside the feed-forward and on both residual
branches) and an untied linear decoder. No final LayerNorm. The parameters
mirror PyTorch's tensors one for one (``in_proj`` is the fused query/key/value
matrix), so an optimiser that works per tensor, like Fromage, sees the same
tensors, and they are initialised as PyTorch does:

* embedding and decoder weight U(±0.1), decoder bias 0 (the example's ``init_weights``);
* ``in_proj`` Xavier-uniform over the fused (width, 3·width) matrix, its bias
  0, ``out_proj`` bias 0 (``nn.MultiheadAttention._reset_parameters``) and
  ``out_proj`` weight U(±1/√fan_in) (``nn.Linear``'s default, which that reset
  leaves alone);
* feed-forward weights and biases U(±1/√fan_in) (``nn.Linear``'s default);
* LayerNorm scale 1, bias 0 (ε = 1e-5).

Example:
  >>> import jax
  >>> config = WordTransformerConfig(vocab_size=50, width=16, hidden=16)
  >>> params = init_word_transformer_params(config, jax.random.key(0))
  >>> tokens = jax.numpy.zeros((3, 7), jax.numpy.int32)
  >>> WordTransformer(config).apply({"params": params}, tokens).shape
  (3, 7, 50)
"""

from __future__ import annotations

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

EMBEDDING_INIT_RANGE = 0.1
LAYER_NORM_EPSILON = 1e-5


@dataclasses.dataclass(frozen=True)
class WordTransformerConfig:
    """Shape of the word-level transformer (defaults: the example as the authors ran it).

    Attributes:
      vocab_size: number of word ids.
      width: d_model, the embedding and attention width.
      num_heads: attention heads; must divide `width`.
      hidden: the feed-forward layer's width.
      num_layers: encoder layers.
      dropout: rate of every dropout.
    """

    vocab_size: int
    width: int = 200
    num_heads: int = 2
    hidden: int = 200
    num_layers: int = 2
    dropout: float = 0.2

    def __post_init__(self):
        for field in ("vocab_size", "width", "num_heads", "hidden", "num_layers"):
            if getattr(self, field) < 1:
                raise ValueError(f"WordTransformerConfig: {field} must be positive.")
        if self.width % self.num_heads:
            raise ValueError(
                f"WordTransformerConfig: width {self.width} is not divisible by "
                f"num_heads {self.num_heads}."
            )
        if not 0 <= self.dropout < 1:
            raise ValueError(
                f"WordTransformerConfig: dropout must be in [0, 1), got {self.dropout}"
            )


def uniform(bound: float):
    """An initialiser drawing U(−bound, bound)."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def torch_linear(fan_in: int):
    """``nn.Linear``'s default initialiser of weight and bias: U(±1/√fan_in)."""
    return uniform(1 / math.sqrt(fan_in))


def sinusoidal_positions(length: int, width: int) -> np.ndarray:
    """The example's ``PositionalEncoding`` table: sin on even features, cos on odd ones.

    Returns:
      float32 (length, width): ``pe[p, 2i] = sin(p·w_i)``, ``pe[p, 2i+1] = cos(p·w_i)``,
      ``w_i = 10000^(−2i/width)``.
    """
    positions = np.arange(length, dtype=np.float64)[:, None]
    frequencies = np.exp(np.arange(0, width, 2) * (-math.log(10000.0) / width))
    table = np.zeros((length, width))
    table[:, 0::2] = np.sin(positions * frequencies)
    table[:, 1::2] = np.cos(positions * frequencies[: width // 2])
    return table.astype(np.float32)


class CausalSelfAttention(nn.Module):
    """``nn.MultiheadAttention`` under a causal mask: position t attends to positions ≤ t."""

    config: WordTransformerConfig

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        config = self.config
        batch, length, width = x.shape
        head_dim = width // config.num_heads
        qkv = nn.Dense(
            3 * width,
            kernel_init=nn.initializers.xavier_uniform(),
            bias_init=nn.initializers.zeros,
            name="in_proj",
        )(x)
        qkv = qkv.reshape(batch, length, 3, config.num_heads, head_dim)
        query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        logits = jnp.einsum("bqhd,bkhd->bhqk", query, key) / math.sqrt(head_dim)
        causal = jnp.tril(jnp.ones((length, length), bool))
        weights = jax.nn.softmax(jnp.where(causal, logits, -jnp.inf), axis=-1)
        weights = nn.Dropout(config.dropout)(weights, deterministic=not train)
        attended = jnp.einsum("bhqk,bkhd->bqhd", weights, value).reshape(batch, length, width)
        return nn.Dense(
            width, kernel_init=torch_linear(width), bias_init=nn.initializers.zeros, name="out_proj"
        )(attended)


class EncoderLayer(nn.Module):
    """``nn.TransformerEncoderLayer`` (post-LayerNorm, ReLU): x = LN(x + attn(x)), then
    x = LN(x + ff(x)), with dropout on both branches and inside ff."""

    config: WordTransformerConfig

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        config = self.config
        dropout = functools.partial(nn.Dropout(config.dropout), deterministic=not train)
        attended = CausalSelfAttention(config, name="self_attn")(x, train=train)
        x = nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, name="norm1")(x + dropout(attended))
        hidden = nn.Dense(
            config.hidden,
            kernel_init=torch_linear(config.width),
            bias_init=torch_linear(config.width),
            name="linear1",
        )(x)
        hidden = dropout(nn.relu(hidden))
        out = nn.Dense(
            config.width,
            kernel_init=torch_linear(config.hidden),
            bias_init=torch_linear(config.hidden),
            name="linear2",
        )(hidden)
        return nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, name="norm2")(x + dropout(out))


class WordTransformer(nn.Module):
    """Word ids [batch, length] -> next-word logits [batch, length, vocab_size].

    Call with ``train=True`` and ``rngs={"dropout": key}`` for dropout; the
    default ``train=False`` is deterministic.
    """

    config: WordTransformerConfig

    @nn.compact
    def __call__(self, tokens: jax.Array, *, train: bool = False) -> jax.Array:
        config = self.config
        embedded = nn.Embed(
            config.vocab_size,
            config.width,
            embedding_init=uniform(EMBEDDING_INIT_RANGE),
            name="encoder",
        )(tokens)
        x = embedded * math.sqrt(config.width)
        x = x + sinusoidal_positions(tokens.shape[-1], config.width)
        x = nn.Dropout(config.dropout)(x, deterministic=not train)
        for index in range(config.num_layers):
            x = EncoderLayer(config, name=f"layers_{index}")(x, train=train)
        return nn.Dense(
            config.vocab_size,
            kernel_init=uniform(EMBEDDING_INIT_RANGE),
            bias_init=nn.initializers.zeros,
            name="decoder",
        )(x)


def init_word_transformer_params(config: WordTransformerConfig, key: jax.Array) -> dict:
    """The initial parameters (the ``"params"`` collection) of `WordTransformer(config)`."""
    return _jitted_init(config)(key)


@functools.cache
def _jitted_init(config: WordTransformerConfig):
    # One compiled initialiser per config (eager Linen init compiles op by op).
    tokens = jnp.zeros((1, 2), jnp.int32)
    return jax.jit(lambda key: WordTransformer(config).init(key, tokens)["params"])
