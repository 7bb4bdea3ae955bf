"""A class-conditional convolutional GAN in Flax Linen, after the Fromage authors' CIFAR-10 GAN.

The authors' GAN (Bernstein et al., 2020, ``generate-cifar/`` of their code) is a
ResNet generator with conditional BatchNorm and a ResNet projection discriminator,
spectral normalisation on every convolution, linear map and embedding, and
orthogonal initialisation. These modules keep that design at a size two CPU
cores can train on 28×28 (or 8×8) grey digits:

* `ConditionalGenerator`: a spectrally normalised (SN) linear map of the latent
  to a ``base × base`` map, then residual blocks that each double the side
  (conditional BatchNorm, ReLU, nearest-neighbour upsampling, SN 3×3
  convolutions; a 1×1 SN convolution on the shortcut where the width changes),
  BatchNorm, ReLU, an SN 3×3 convolution to one channel and tanh. Conditional
  BatchNorm normalises with batch statistics in training (running averages
  otherwise, both in the ``batch_stats`` collection) and then scales by
  ``1 + γ(e)`` and shifts by ``β(e)``, where γ, β are SN linear maps of the
  class embedding ``e`` (an SN embedding shared by all blocks).
* `ProjectionDiscriminator`: residual blocks of SN 3×3 convolutions with
  average-pool downsampling (the first without a pre-activation), ReLU, global
  average pooling to features φ(x), and the projection head
  ``scale · (w·φ(x) + b + embed(y)·φ(x))`` (Miyato & Koyama, 2018) with an SN
  linear map and an SN embedding; ``output_scale`` 10 as the authors'.

Spectral normalisation is Flax's ``nn.SpectralNorm``: the power-iteration vector
``u`` and the estimate ``sigma`` of each layer live in the ``batch_stats``
collection beside the BatchNorm statistics. ``train=True`` updates them (pass
``mutable=["batch_stats"]``); ``train=False`` reads them and changes nothing,
so sampling and scoring are deterministic. Both networks take and return flat
images ``(batch, side²)`` in [−1, 1], like the MLPs of `benchmarks.models.gan`.

Left out of the authors' design at this size: the self-attention block, the
latent split across blocks, and their BatchNorm momentum of 0.999 (with a few
thousand steps the running averages would still remember the initial weights;
0.9 here, PyTorch's default).

References:
  Miyato et al., "Spectral Normalization for Generative Adversarial Networks", ICLR 2018.
  Miyato & Koyama, "cGANs with Projection Discriminator", ICLR 2018.
  Bernstein et al., "On the distance between two neural networks and the stability of
  learning", NeurIPS 2020 (arXiv 2002.03432).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

ORTHOGONAL = nn.initializers.orthogonal()
BATCH_NORM_MOMENTUM = 0.9


def _conv(features: int, size: int) -> nn.Conv:
    return nn.Conv(features, (size, size), padding="SAME", kernel_init=ORTHOGONAL)


def _upsample(x):
    """Nearest-neighbour upsampling by 2 of (batch, height, width, channels)."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def _downsample(x):
    return nn.avg_pool(x, (2, 2), strides=(2, 2))


class ConditionalBatchNorm(nn.Module):
    """BatchNorm without its own scale and shift, then ``x̂·(1 + γ(e)) + β(e)``.

    Attributes:
      momentum: of the running averages (kept in ``batch_stats``).
    """

    momentum: float = BATCH_NORM_MOMENTUM

    @nn.compact
    def __call__(self, x, condition, train: bool):
        """`x` (batch, h, w, c) normalised and modulated by `condition` (batch, e)."""
        channels = x.shape[-1]
        normalized = nn.BatchNorm(
            use_running_average=not train, momentum=self.momentum, use_scale=False, use_bias=False
        )(x)
        gain = nn.SpectralNorm(nn.Dense(channels, kernel_init=ORTHOGONAL, name="gain"))(
            condition, update_stats=train
        )
        shift = nn.SpectralNorm(nn.Dense(channels, kernel_init=ORTHOGONAL, name="shift"))(
            condition, update_stats=train
        )
        return normalized * (1.0 + gain[:, None, None, :]) + shift[:, None, None, :]


class UpBlock(nn.Module):
    """Generator residual block: (CBN, ReLU, upsample, conv, CBN, ReLU, conv) + upsampled skip."""

    features: int

    @nn.compact
    def __call__(self, x, condition, train: bool):
        skip = _upsample(x)
        if x.shape[-1] != self.features:
            skip = nn.SpectralNorm(_conv(self.features, 1))(skip, update_stats=train)
        h = nn.relu(ConditionalBatchNorm()(x, condition, train))
        h = nn.SpectralNorm(_conv(self.features, 3))(_upsample(h), update_stats=train)
        h = nn.relu(ConditionalBatchNorm()(h, condition, train))
        h = nn.SpectralNorm(_conv(self.features, 3))(h, update_stats=train)
        return h + skip


class ConditionalGenerator(nn.Module):
    """Class-conditional ResNet generator of flat grey images.

    Attributes:
      channels: width of the first ``base × base`` map, then of each block's output;
        ``len(channels) − 1`` blocks, so ``base = image_side / 2**(len(channels) − 1)``.
      image_side: side of the square output images.
      num_classes: number of labels.
      embedding_size: size of the class embedding that conditions every BatchNorm.
    """

    channels: Sequence[int]
    image_side: int
    num_classes: int
    embedding_size: int = 32

    @property
    def base_side(self) -> int:
        blocks = len(self.channels) - 1
        if blocks < 1 or self.image_side % 2**blocks:
            raise ValueError(
                f"image side {self.image_side} is not divisible by 2**{blocks} "
                f"({len(self.channels)} generator channels: the first map, then one per block)."
            )
        return self.image_side // 2**blocks

    @nn.compact
    def __call__(self, latents, labels, train: bool = False):
        """Images in [−1, 1], (batch, side²), for `latents` (batch, d) and int `labels`."""
        base, first = self.base_side, self.channels[0]
        embed = nn.Embed(self.num_classes, self.embedding_size, embedding_init=ORTHOGONAL)
        condition = nn.SpectralNorm(embed)(labels, update_stats=train)
        dense = nn.Dense(base * base * first, kernel_init=ORTHOGONAL)
        x = nn.SpectralNorm(dense)(latents, update_stats=train)
        x = x.reshape(latents.shape[0], base, base, first)
        for features in self.channels[1:]:
            x = UpBlock(features)(x, condition, train)
        x = nn.BatchNorm(use_running_average=not train, momentum=BATCH_NORM_MOMENTUM)(x)
        x = nn.SpectralNorm(_conv(1, 3))(nn.relu(x), update_stats=train)
        return jnp.tanh(x).reshape(latents.shape[0], -1)


class DownBlock(nn.Module):
    """Discriminator residual block: (ReLU, conv, ReLU, conv, [pool]) + (1×1 conv, [pool]) skip.

    Attributes:
      features: output width.
      downsample: halve the side with 2×2 average pooling.
      first: the input block: no ReLU before its first convolution, and the skip
        pools before its 1×1 convolution (the authors' and SNGAN's "optimised" block).
    """

    features: int
    downsample: bool = True
    first: bool = False

    @nn.compact
    def __call__(self, x, train: bool):
        h = x if self.first else nn.relu(x)
        h = nn.SpectralNorm(_conv(self.features, 3))(h, update_stats=train)
        h = nn.SpectralNorm(_conv(self.features, 3))(nn.relu(h), update_stats=train)
        if self.downsample:
            h = _downsample(h)
        skip = x
        if self.first:
            skip = nn.SpectralNorm(_conv(self.features, 1))(_downsample(x), update_stats=train)
        elif self.downsample or x.shape[-1] != self.features:
            skip = nn.SpectralNorm(_conv(self.features, 1))(skip, update_stats=train)
            skip = _downsample(skip) if self.downsample else skip
        return h + skip


class ProjectionDiscriminator(nn.Module):
    """ResNet projection discriminator of flat grey images.

    Attributes:
      channels: width of each block; the first (input) block and every block but
        the last halve the side.
      image_side: side of the square input images.
      num_classes: number of labels.
      output_scale: the scores are multiplied by this (the authors' 10).
    """

    channels: Sequence[int]
    image_side: int
    num_classes: int
    output_scale: float = 10.0

    @nn.compact
    def __call__(self, images, labels, train: bool = False):
        """Real-valued scores (batch,) of `images` (batch, side²) labelled `labels`."""
        side = self.image_side
        x = images.reshape(images.shape[0], side, side, 1)
        x = DownBlock(self.channels[0], first=True)(x, train)
        for index, features in enumerate(self.channels[1:], start=2):
            x = DownBlock(features, downsample=index < len(self.channels))(x, train)
        features = jnp.mean(nn.relu(x), axis=(1, 2))
        dense = nn.Dense(1, kernel_init=ORTHOGONAL)
        unconditional = nn.SpectralNorm(dense)(features, update_stats=train)[:, 0]
        embed = nn.Embed(self.num_classes, features.shape[-1], embedding_init=ORTHOGONAL)
        projection = jnp.sum(nn.SpectralNorm(embed)(labels, update_stats=train) * features, -1)
        return self.output_scale * (unconditional + projection)


def spectral_norm_estimates(batch_stats) -> dict[str, jax.Array]:
    """Every ``sigma`` of `batch_stats` by its path: the power iteration's spectral norms."""
    flat = jax.tree_util.tree_flatten_with_path(batch_stats)[0]
    return {
        "/".join(str(getattr(k, "key", k)) for k in path): leaf
        for path, leaf in flat
        if str(getattr(path[-1], "key", "")).endswith("/sigma")
    }
