"""A class-conditional GAN's networks in Flax Linen: MLP generator, projection discriminator.

* `Generator`: a latent vector concatenated with a learned label embedding,
  ReLU hidden layers, a tanh output of ``num_pixels`` values in [−1, 1].
* `Discriminator`: a projection discriminator (Miyato & Koyama, 2018): LeakyReLU
  hidden layers give features φ(x); the score is ``w·φ(x) + b + embed(y)·φ(x)``,
  so the label enters through an inner product with the features.

Both networks are MLPs on flat images, without normalisation, so a model is
just its params. They were the GAN benchmark's models on 8×8 digits before the
convolutional, spectrally normalised networks of `benchmarks.models.cgan` (the
authors' kind of GAN) replaced them in every preset; ``--model mlp`` still
trains them, a cheap second architecture. The hinge loss and the train step are
in `benchmarks.gan.step`.

References:
  Miyato & Koyama, "cGANs with Projection Discriminator", ICLR 2018.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
from flax import linen as nn


class Generator(nn.Module):
    """Class-conditional MLP generator.

    Attributes:
      hidden_sizes: widths of the ReLU hidden layers.
      num_pixels: size of a flat output image.
      num_classes: number of labels.
      embedding_size: size of the label embedding concatenated to the latent.
    """

    hidden_sizes: Sequence[int]
    num_pixels: int
    num_classes: int
    embedding_size: int = 16

    @nn.compact
    def __call__(self, latents, labels, train: bool = False):
        """Images in [−1, 1], (batch, num_pixels), for `latents` (batch, d) and int `labels`
        (`train` is accepted for the convolutional models' signature; nothing depends on it)."""
        del train
        embedded = nn.Embed(self.num_classes, self.embedding_size)(labels)
        x = jnp.concatenate([latents, embedded], axis=-1)
        for width in self.hidden_sizes:
            x = nn.relu(nn.Dense(width)(x))
        return jnp.tanh(nn.Dense(self.num_pixels)(x))


class Discriminator(nn.Module):
    """Projection discriminator on flat images.

    Attributes:
      hidden_sizes: widths of the LeakyReLU (slope 0.2) hidden layers; the last is
        the size of the features φ(x) and of the label embedding.
      num_classes: number of labels.
    """

    hidden_sizes: Sequence[int]
    num_classes: int

    @nn.compact
    def __call__(self, images, labels, train: bool = False):
        """Real-valued scores (batch,) of `images` (batch, num_pixels) labelled `labels`."""
        del train
        features = images.reshape(images.shape[0], -1)
        for width in self.hidden_sizes:
            features = nn.leaky_relu(nn.Dense(width)(features), negative_slope=0.2)
        unconditional = nn.Dense(1)(features)[:, 0]
        projection = jnp.sum(nn.Embed(self.num_classes, features.shape[-1])(labels) * features, -1)
        return unconditional + projection
