"""The GAN experiment's pure train step: hinge losses, the state, one step of both networks.

* Loss: the **hinge** loss used by projection-discriminator and BigGAN-style
  class-conditional GANs: the discriminator minimises
  E[relu(1 − D(x, y))] + E[relu(1 + D(G(z, y), y))], the generator minimises
  −E[D(G(z, y), y)].

`make_train_step` builds the pure ``(state, batch) -> (state, metrics)`` step:
one discriminator step, then one generator step against the updated
discriminator, both with the same optimiser (and learning rate).

References:
  Bernstein et al., "On the distance between two neural networks and the
  stability of learning", NeurIPS 2020 (arXiv 2002.03432).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn

from benchmarks.models.gan import Discriminator, Generator


def discriminator_hinge_loss(real_scores, fake_scores):
    """E[relu(1 − D(real))] + E[relu(1 + D(fake))]."""
    return jnp.mean(nn.relu(1.0 - real_scores)) + jnp.mean(nn.relu(1.0 + fake_scores))


def generator_hinge_loss(fake_scores):
    """−E[D(fake)]."""
    return -jnp.mean(fake_scores)


class GANState(NamedTuple):
    """Everything one GAN run carries between steps (arrays only: it jits and vmaps).

    Attributes:
      generator_params, discriminator_params: the two networks' params.
      generator_opt_state, discriminator_opt_state: their optimiser states.
      key: PRNG key of the latents drawn in the next step.
      step: number of steps taken.
    """

    generator_params: Any
    discriminator_params: Any
    generator_opt_state: Any
    discriminator_opt_state: Any
    key: jax.Array
    step: jax.Array


def init_gan_params(
    generator: Generator, discriminator: Discriminator, key: jax.Array, *, latent_size: int
) -> tuple[Any, Any, jax.Array]:
    """Fresh (generator params, discriminator params, the run's own key) from `key`."""
    generator_key, discriminator_key, run_key = jax.random.split(key, 3)
    labels = jnp.zeros((1,), jnp.int32)
    generator_params = generator.init(generator_key, jnp.zeros((1, latent_size)), labels)["params"]
    discriminator_params = discriminator.init(
        discriminator_key, jnp.zeros((1, generator.num_pixels)), labels
    )["params"]
    return generator_params, discriminator_params, run_key


def init_gan_state(
    generator: Generator,
    discriminator: Discriminator,
    optimizer: optax.GradientTransformation,
    key: jax.Array,
    *,
    latent_size: int,
) -> GANState:
    """Fresh params for both networks and one `optimizer` state for each."""
    generator_params, discriminator_params, run_key = init_gan_params(
        generator, discriminator, key, latent_size=latent_size
    )
    return GANState(
        generator_params=generator_params,
        discriminator_params=discriminator_params,
        generator_opt_state=optimizer.init(generator_params),
        discriminator_opt_state=optimizer.init(discriminator_params),
        key=run_key,
        step=jnp.zeros((), jnp.int32),
    )


def make_train_step(
    generator: Generator,
    discriminator: Discriminator,
    optimizer: optax.GradientTransformation,
    *,
    latent_size: int,
):
    """The pure GAN train step ``(state, batch) -> (state, metrics)``.

    Args:
      generator, discriminator: the two modules.
      optimizer: used for both networks (separate states), e.g. an
        ``optax.inject_hyperparams`` optimiser whose learning rate lives in the
        state, so one compiled step serves every learning rate.
      latent_size: size of the standard-normal latent vectors.

    Returns:
      A function of a `GANState` and a batch ``{"image", "label"}`` (real images in
      [−1, 1] and their labels; the fakes get the same labels) returning the new
      state and ``{"discriminator_loss", "generator_loss", "real_score",
      "fake_score"}`` (the losses before the step's updates).
    """

    def train_step(state: GANState, batch):
        images, labels = batch["image"], batch["label"]
        key, discriminator_key, generator_key = jax.random.split(state.key, 3)
        latent_shape = (images.shape[0], latent_size)
        fakes = generator.apply(
            {"params": state.generator_params},
            jax.random.normal(discriminator_key, latent_shape),
            labels,
        )
        discriminator_params, discriminator_opt_state, metrics = _discriminator_update(
            discriminator, optimizer, state, images, jax.lax.stop_gradient(fakes), labels
        )
        generator_params, generator_opt_state, generator_loss = _generator_update(
            generator,
            discriminator,
            optimizer,
            state,
            discriminator_params,
            jax.random.normal(generator_key, latent_shape),
            labels,
        )
        new_state = GANState(
            generator_params=generator_params,
            discriminator_params=discriminator_params,
            generator_opt_state=generator_opt_state,
            discriminator_opt_state=discriminator_opt_state,
            key=key,
            step=state.step + 1,
        )
        return new_state, {**metrics, "generator_loss": generator_loss}

    return train_step


def _discriminator_update(discriminator, optimizer, state: GANState, images, fakes, labels):
    """One discriminator step on real `images` and `fakes`: (params, opt state, metrics)."""

    def loss_fn(params):
        real_scores = discriminator.apply({"params": params}, images, labels)
        fake_scores = discriminator.apply({"params": params}, fakes, labels)
        loss = discriminator_hinge_loss(real_scores, fake_scores)
        return loss, (real_scores.mean(), fake_scores.mean())

    (loss, (real_score, fake_score)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.discriminator_params
    )
    updates, opt_state = optimizer.update(
        grads, state.discriminator_opt_state, state.discriminator_params
    )
    params = optax.apply_updates(state.discriminator_params, updates)
    metrics = {"discriminator_loss": loss, "real_score": real_score, "fake_score": fake_score}
    return params, opt_state, metrics


def _generator_update(
    generator, discriminator, optimizer, state: GANState, discriminator_params, latents, labels
):
    """One generator step against the updated discriminator: (params, opt state, loss)."""

    def loss_fn(params):
        fakes = generator.apply({"params": params}, latents, labels)
        return generator_hinge_loss(
            discriminator.apply({"params": discriminator_params}, fakes, labels)
        )

    loss, grads = jax.value_and_grad(loss_fn)(state.generator_params)
    updates, opt_state = optimizer.update(grads, state.generator_opt_state, state.generator_params)
    return optax.apply_updates(state.generator_params, updates), opt_state, loss
