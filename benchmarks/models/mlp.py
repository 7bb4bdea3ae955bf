"""ReLU multilayer perceptrons in Flax Linen and Flax NNX.

``init="torch"`` (default) initialises every weight and bias like PyTorch's
``nn.Linear``, and so like the Fromage paper's models: U(−1/√fan_in, 1/√fan_in).
``init="flax"`` keeps Flax's defaults (LeCun-normal weights, zero biases).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import nnx

INIT_SCHEMES = ("torch", "flax")


def fan_in_uniform(fan_in: int):
    """Initializer drawing from U(−1/√fan_in, 1/√fan_in) (PyTorch's nn.Linear default)."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _check_init(init: str) -> None:
    if init not in INIT_SCHEMES:
        raise ValueError(f"init must be one of {INIT_SCHEMES}, got {init!r}.")


def _dense_initializers(init: str, fan_in: int) -> dict:
    _check_init(init)
    if init == "flax":
        return {}
    return {"kernel_init": fan_in_uniform(fan_in), "bias_init": fan_in_uniform(fan_in)}


class MLP(nn.Module):
    """Linen MLP: Dense + ReLU for every hidden size, then a linear output layer.

    Attributes:
      hidden_sizes: widths of the hidden layers (their number is the depth).
      num_outputs: width of the output layer (number of classes).
      init_scheme: "torch" or "flax", see the module docstring.
    """

    hidden_sizes: Sequence[int]
    num_outputs: int
    init_scheme: str = "torch"

    @nn.compact
    def __call__(self, inputs):
        x = inputs.reshape(inputs.shape[0], -1)
        for index, width in enumerate(self.hidden_sizes):
            initializers = _dense_initializers(self.init_scheme, x.shape[-1])
            x = nn.Dense(width, name=f"hidden_{index}", **initializers)(x)
            x = nn.relu(x)
        return nn.Dense(
            self.num_outputs, name="output", **_dense_initializers(self.init_scheme, x.shape[-1])
        )(x)


class NnxMLP(nnx.Module):
    """NNX MLP with the same layers and initialisation as `MLP`.

    Args:
      num_inputs: number of input features.
      hidden_sizes: widths of the hidden layers.
      num_outputs: width of the output layer.
      rngs: ``nnx.Rngs`` for the initialisation.
      init_scheme: "torch" or "flax".
    """

    def __init__(
        self,
        num_inputs: int,
        hidden_sizes: Sequence[int],
        num_outputs: int,
        *,
        rngs: nnx.Rngs,
        init_scheme: str = "torch",
    ):
        sizes = [num_inputs, *hidden_sizes]
        self.hidden = nnx.List(
            [
                nnx.Linear(fan_in, width, rngs=rngs, **_dense_initializers(init_scheme, fan_in))
                for fan_in, width in zip(sizes[:-1], sizes[1:], strict=True)
            ]
        )
        self.output = nnx.Linear(
            sizes[-1], num_outputs, rngs=rngs, **_dense_initializers(init_scheme, sizes[-1])
        )

    def __call__(self, inputs):
        x = inputs.reshape(inputs.shape[0], -1)
        for layer in self.hidden:
            x = nnx.relu(layer(x))
        return self.output(x)
