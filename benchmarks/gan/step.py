"""The GAN experiment's pure train step: hinge losses, the state, one step of both networks.

* Loss: the **hinge** loss used by projection-discriminator and BigGAN-style
  class-conditional GANs: the discriminator minimises
  E[relu(1 − D(x, y))] + E[relu(1 + D(G(z, y), y))], the generator minimises
  −E[D(G(z, y), y)].

`make_train_step` builds the pure ``(state, batch) -> (state, metrics)`` step:
one discriminator step, then one generator step against the updated
discriminator, both with the same optimiser (and learning rate).

* Non-trainable state: each network's ``batch_stats`` collection (BatchNorm's
  running averages, spectral normalisation's power-iteration vectors) lives in
  the `GANState` beside its params and changes only in a train step, once per
  step: the discriminator's in its update (one forward pass over the real and
  generated images together), the generator's in its update. The generated
  images of the discriminator's update come from the generator in training mode
  (batch statistics) without touching its state. Networks without such state
  (the MLPs) carry an empty dict.

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
      generator_batch_stats, discriminator_batch_stats: their ``batch_stats``
        collections (BatchNorm running averages, spectral-norm vectors; ``{}`` if none).
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
    generator_batch_stats: Any
    discriminator_batch_stats: Any


def _variables(params, batch_stats) -> dict:
    return {"params": params, "batch_stats": batch_stats}


def _with_batch_stats(variables) -> dict:
    """``{"params", "batch_stats"}`` (``{}`` for a network without such state)."""
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def init_gan_variables(
    generator: nn.Module, discriminator: nn.Module, key: jax.Array, *, latent_size: int
) -> tuple[dict, dict, jax.Array]:
    """Fresh ``{"params", "batch_stats"}`` of both networks and the run's own key, from `key`."""
    generator_key, discriminator_key, run_key = jax.random.split(key, 3)
    labels = jnp.zeros((1,), jnp.int32)
    generator_variables = generator.init(generator_key, jnp.zeros((1, latent_size)), labels)
    images = generator.apply(generator_variables, jnp.zeros((1, latent_size)), labels)
    discriminator_variables = discriminator.init(discriminator_key, jnp.zeros_like(images), labels)
    generator_variables = _with_batch_stats(generator_variables)
    return generator_variables, _with_batch_stats(discriminator_variables), run_key


def init_gan_state(
    generator: nn.Module,
    discriminator: nn.Module,
    optimizer: optax.GradientTransformation,
    key: jax.Array,
    *,
    latent_size: int,
) -> GANState:
    """Fresh variables for both networks and one `optimizer` state for each."""
    generator_variables, discriminator_variables, run_key = init_gan_variables(
        generator, discriminator, key, latent_size=latent_size
    )
    return gan_state(generator_variables, discriminator_variables, optimizer, run_key)


def gan_state(
    generator_variables: dict,
    discriminator_variables: dict,
    optimizer: optax.GradientTransformation,
    run_key: jax.Array,
) -> GANState:
    """The state of a run starting from the networks' variables, with fresh optimiser states."""
    return GANState(
        generator_params=generator_variables["params"],
        discriminator_params=discriminator_variables["params"],
        generator_opt_state=optimizer.init(generator_variables["params"]),
        discriminator_opt_state=optimizer.init(discriminator_variables["params"]),
        key=run_key,
        step=jnp.zeros((), jnp.int32),
        generator_batch_stats=generator_variables["batch_stats"],
        discriminator_batch_stats=discriminator_variables["batch_stats"],
    )


def generate(generator: nn.Module, state: GANState, latents, labels):
    """Images of the generator in `state` in evaluation mode (running averages; no update)."""
    variables = _variables(state.generator_params, state.generator_batch_stats)
    return generator.apply(variables, latents, labels, train=False)


def make_train_step(
    generator: nn.Module,
    discriminator: nn.Module,
    optimizer: optax.GradientTransformation,
    *,
    latent_size: int,
):
    """The pure GAN train step ``(state, batch) -> (state, metrics)``.

    Args:
      generator, discriminator: the two modules, called as ``(latents or images,
        labels, train=...)``.
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
        # Training mode (batch statistics); the generator's state moves in its own update.
        fakes, _ = generator.apply(
            _variables(state.generator_params, state.generator_batch_stats),
            jax.random.normal(discriminator_key, latent_shape),
            labels,
            train=True,
            mutable=["batch_stats"],
        )
        discriminator_update = _discriminator_update(
            discriminator, optimizer, state, images, jax.lax.stop_gradient(fakes), labels
        )
        discriminator_params, discriminator_batch_stats, discriminator_opt_state, metrics = (
            discriminator_update
        )
        generator_params, generator_batch_stats, generator_opt_state, generator_loss = (
            _generator_update(
                generator,
                discriminator,
                optimizer,
                state,
                _variables(discriminator_params, discriminator_batch_stats),
                jax.random.normal(generator_key, latent_shape),
                labels,
            )
        )
        new_state = GANState(
            generator_params=generator_params,
            discriminator_params=discriminator_params,
            generator_opt_state=generator_opt_state,
            discriminator_opt_state=discriminator_opt_state,
            key=key,
            step=state.step + 1,
            generator_batch_stats=generator_batch_stats,
            discriminator_batch_stats=discriminator_batch_stats,
        )
        return new_state, {**metrics, "generator_loss": generator_loss}

    return train_step


def _discriminator_update(discriminator, optimizer, state: GANState, images, fakes, labels):
    """One discriminator step on real `images` and `fakes`, scored in one forward pass:
    (params, batch_stats, opt state, metrics)."""
    count = images.shape[0]

    def loss_fn(params):
        scores, mutated = discriminator.apply(
            _variables(params, state.discriminator_batch_stats),
            jnp.concatenate([images, fakes]),
            jnp.concatenate([labels, labels]),
            train=True,
            mutable=["batch_stats"],
        )
        real_scores, fake_scores = scores[:count], scores[count:]
        loss = discriminator_hinge_loss(real_scores, fake_scores)
        batch_stats = mutated.get("batch_stats", state.discriminator_batch_stats)
        return loss, (batch_stats, real_scores.mean(), fake_scores.mean())

    (loss, (batch_stats, real_score, fake_score)), grads = jax.value_and_grad(
        loss_fn, has_aux=True
    )(state.discriminator_params)
    updates, opt_state = optimizer.update(
        grads, state.discriminator_opt_state, state.discriminator_params
    )
    params = optax.apply_updates(state.discriminator_params, updates)
    metrics = {"discriminator_loss": loss, "real_score": real_score, "fake_score": fake_score}
    return params, batch_stats, opt_state, metrics


def _generator_update(
    generator, discriminator, optimizer, state: GANState, discriminator_variables, latents, labels
):
    """One generator step against the updated discriminator (read, not updated):
    (params, batch_stats, opt state, loss)."""

    def loss_fn(params):
        fakes, mutated = generator.apply(
            _variables(params, state.generator_batch_stats),
            latents,
            labels,
            train=True,
            mutable=["batch_stats"],
        )
        scores = discriminator.apply(discriminator_variables, fakes, labels, train=False)
        batch_stats = mutated.get("batch_stats", state.generator_batch_stats)
        return generator_hinge_loss(scores), batch_stats

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.generator_params)
    updates, opt_state = optimizer.update(grads, state.generator_opt_state, state.generator_params)
    return optax.apply_updates(state.generator_params, updates), batch_stats, opt_state, loss
