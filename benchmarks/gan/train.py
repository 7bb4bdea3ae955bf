"""Training and scoring of the GAN experiment's runs.

`Scorer` holds the feature classifier and the fixed latents that score a
generator; `Trainer` the networks, the data on the device and one compiled
chunk of ``eval_every`` vmapped steps per optimiser; `train_models` trains the
stacked models of one phase (a learning-rate grid or the seeds at one rate).
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import data as data_lib
from benchmarks import frechet, optimizers, training
from benchmarks.gan import step as step_lib
from benchmarks.gan.configs import (
    PAPER_BEST_LEARNING_RATES,
    SAMPLES_PER_CLASS_IN_GRID,
    Config,
    learning_rate_decay_step,
    make_optimizer,
)
from benchmarks.models import gan as gan_models


def unit_range_images(dataset: data_lib.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Train and test images mapped affinely to [−1, 1] (the generator's tanh range).

    The loaders standardise pixels with one mean and scale, so this is the raw
    pixel scale again, from the training images' minimum and maximum.
    """
    low, high = dataset.train_images.min(), dataset.train_images.max()
    scale = (high - low) or 1.0
    train = 2.0 * (dataset.train_images - low) / scale - 1.0
    test = np.clip(2.0 * (dataset.test_images - low) / scale - 1.0, -1.0, 1.0)
    return train.astype(np.float32), test.astype(np.float32)


def make_generator(config: Config, num_pixels: int, num_classes: int) -> gan_models.Generator:
    return gan_models.Generator(tuple(config.generator_hidden), num_pixels, num_classes)


class Scorer:
    """Fréchet distance and conditioning accuracy of generated images, from a trained classifier.

    The classifier is trained (seeded, cached in ``config.out``) on the same
    data; generated images come from the same latents for every model and
    every score, so curves are comparable.
    """

    def __init__(self, config: Config, dataset: data_lib.Dataset):
        self.config = config
        self.num_classes = dataset.num_classes
        train_images, test_images = unit_range_images(dataset)
        self.image_side = math.isqrt(train_images.shape[1])
        self.classifier, self.classifier_params, self.classifier_info = (
            frechet.train_feature_classifier(
                dataset.name,
                train_images,
                dataset.train_labels,
                test_images,
                dataset.test_labels,
                num_classes=self.num_classes,
                hidden_sizes=config.classifier_hidden,
                epochs=config.classifier_epochs,
                seed=config.classifier_seed,
                cache_dir=config.out,
            )
        )
        self.real_features = np.asarray(self._features(train_images))
        # Two sets of real images: the distance a perfect generator would roughly reach.
        self.real_test_frechet_distance = frechet.frechet_distance(
            self.real_features, np.asarray(self._features(test_images))
        )
        self.generator = make_generator(config, train_images.shape[1], self.num_classes)
        per_class = config.eval_samples_per_class
        self.eval_labels = jnp.repeat(jnp.arange(self.num_classes, dtype=jnp.int32), per_class)
        self.eval_latents = jax.random.normal(
            jax.random.key(12345), (len(self.eval_labels), config.latent_size)
        )
        self._score_features = jax.jit(jax.vmap(self._generated_features))

    def _features(self, images):
        _, features = self.classifier.apply({"params": self.classifier_params}, images)
        return features

    def _generated_features(self, generator_params):
        images = self.generator.apply(
            {"params": generator_params}, self.eval_latents, self.eval_labels
        )
        logits, features = self.classifier.apply({"params": self.classifier_params}, images)
        return features, jnp.argmax(logits, -1)

    def score(self, generator_params) -> list[dict]:
        """Fréchet distance and per-class accuracy of the generated images, one dict per model."""
        features, predictions = self._score_features(generator_params)
        features, predictions = np.asarray(features), np.asarray(predictions)
        labels = np.asarray(self.eval_labels)
        scores = []
        for model_features, model_predictions in zip(features, predictions, strict=True):
            correct = model_predictions == labels
            per_class = [float(correct[labels == c].mean()) for c in range(self.num_classes)]
            if np.all(np.isfinite(model_features)):
                distance = frechet.frechet_distance(self.real_features, model_features)
            else:
                distance = float("nan")
            scores.append(
                {
                    "frechet_distance": distance,
                    "generated_accuracy": float(np.mean(per_class)),
                    "accuracy_per_class": per_class,
                }
            )
        return scores

    def sample_grid(self, generator_params) -> np.ndarray:
        """(num_classes, SAMPLES_PER_CLASS_IN_GRID, side, side) images in [−1, 1]."""
        count = SAMPLES_PER_CLASS_IN_GRID
        labels = jnp.repeat(jnp.arange(self.num_classes, dtype=jnp.int32), count)
        latents = jax.random.normal(jax.random.key(54321), (len(labels), self.config.latent_size))
        images = self.generator.apply({"params": generator_params}, latents, labels)
        side = self.image_side
        return np.asarray(images).reshape(self.num_classes, count, side, side)


class Trainer:
    """The networks, the training data on the device and the compiled functions of all runs."""

    def __init__(self, config: Config, dataset: data_lib.Dataset):
        self.config = config
        train_images, _ = unit_range_images(dataset)
        self.train_data = jax.device_put({"image": train_images, "label": dataset.train_labels})
        self.num_train = len(train_images)
        self.generator = make_generator(config, train_images.shape[1], dataset.num_classes)
        self.discriminator = gan_models.Discriminator(
            tuple(config.discriminator_hidden), dataset.num_classes
        )
        self._chunk_fns: dict = {}
        # The networks' (vmapped) init compiles once for every optimiser and phase.
        self._init_params = jax.jit(
            jax.vmap(
                lambda key_data: step_lib.init_gan_params(
                    self.generator,
                    self.discriminator,
                    jax.random.wrap_key_data(key_data),
                    latent_size=config.latent_size,
                )
            )
        )

    def chunk_fn(self, optimizer_name: str):
        """Jitted ``(state, data, indices) -> (state, metrics)``: `eval_every` vmapped steps."""
        if optimizer_name not in self._chunk_fns:
            step = step_lib.make_train_step(
                self.generator,
                self.discriminator,
                make_optimizer(optimizer_name, PAPER_BEST_LEARNING_RATES[optimizer_name]),
                latent_size=self.config.latent_size,
            )
            self._chunk_fns[optimizer_name] = training.make_epoch_fn(jax.vmap(step))
        return self._chunk_fns[optimizer_name]

    def init_states(self, optimizer, seeds) -> step_lib.GANState:
        """`step.init_gan_state` of every seed, stacked on a leading axis."""
        keys = jnp.stack([jax.random.key_data(jax.random.key(seed)) for seed in seeds])
        generator_params, discriminator_params, run_keys = self._init_params(keys)
        init = jax.jit(jax.vmap(optimizer.init))
        return step_lib.GANState(
            generator_params=generator_params,
            discriminator_params=discriminator_params,
            generator_opt_state=init(generator_params),
            discriminator_opt_state=init(discriminator_params),
            key=run_keys,
            step=jnp.zeros((len(seeds),), jnp.int32),
        )


def _set_learning_rates(state: step_lib.GANState, learning_rates) -> step_lib.GANState:
    return state._replace(
        generator_opt_state=optimizers.with_learning_rate(
            state.generator_opt_state, learning_rates
        ),
        discriminator_opt_state=optimizers.with_learning_rate(
            state.discriminator_opt_state, learning_rates
        ),
    )


def _train_chunks(
    trainer: Trainer, scorer: Scorer, state, run_chunk, learning_rates, seeds, history, on_chunk
):
    """Trains `state` for the configured steps, one chunk at a time, appending to `history`."""
    config = trainer.config
    # Models of one seed see the same batches whatever their learning rate.
    rngs = {seed: np.random.default_rng(seed) for seed in seeds}
    eval_every, batch_size = config.eval_every, config.batch_size
    decay_step = learning_rate_decay_step(config)
    chunk_metrics = history["chunks"]
    for chunk_start in range(0, config.steps, eval_every):
        factor = 0.1 if chunk_start >= decay_step else 1.0
        state = _set_learning_rates(state, learning_rates * np.float32(factor))
        per_seed = {
            seed: rng.integers(0, trainer.num_train, (eval_every, batch_size))
            for seed, rng in rngs.items()
        }
        indices = np.stack([per_seed[seed] for seed in seeds], axis=1).astype(np.int32)
        state, metrics = run_chunk(state, trainer.train_data, indices)
        for key, value in metrics.items():
            chunk_metrics.setdefault(key, []).append(np.asarray(value, np.float64).mean(axis=0))
        # The rates the chunk actually trained with, read back from the optimiser state.
        chunk_metrics.setdefault("learning_rate", []).append(
            np.asarray(state.discriminator_opt_state.hyperparams["learning_rate"], np.float64)
        )
        history["step"].append(chunk_start + eval_every)
        history["scores"].append(scorer.score(state.generator_params))
        if on_chunk is not None:
            on_chunk({key: float(np.nanmean(values[-1])) for key, values in chunk_metrics.items()})
    return state


def train_models(
    trainer: Trainer,
    scorer: Scorer,
    optimizer_name: str,
    learning_rates,
    seeds,
    *,
    phase: str,
    on_chunk=None,
) -> list[dict]:
    """Trains one GAN per (learning rate, seed) pair, all stacked together; one run dict each."""
    learning_rates = np.asarray(learning_rates, np.float32)
    optimizer = make_optimizer(optimizer_name, PAPER_BEST_LEARNING_RATES[optimizer_name])
    state = trainer.init_states(optimizer, seeds)
    run_chunk = trainer.chunk_fn(optimizer_name)
    history: dict = {"step": [0], "scores": [scorer.score(state.generator_params)], "chunks": {}}
    start = time.perf_counter()
    state = _train_chunks(
        trainer, scorer, state, run_chunk, learning_rates, seeds, history, on_chunk
    )
    wall_seconds = time.perf_counter() - start

    runs = []
    for index, (lr, seed) in enumerate(zip(learning_rates, seeds, strict=True)):
        scores = [chunk[index] for chunk in history["scores"]]
        params = jax.tree.map(lambda leaf, i=index: leaf[i], state.generator_params)
        runs.append(
            {
                "optimizer": optimizer_name,
                "phase": phase,
                "learning_rate": float(f"{lr:.6g}"),
                "seed": int(seed),
                "steps": list(history["step"]),
                "frechet_distance_per_eval": [s["frechet_distance"] for s in scores],
                "generated_accuracy_per_eval": [s["generated_accuracy"] for s in scores],
                "frechet_distance": scores[-1]["frechet_distance"],
                "generated_accuracy": scores[-1]["generated_accuracy"],
                "accuracy_per_class": scores[-1]["accuracy_per_class"],
                # Means over each chunk of eval_every steps (one fewer than the scores).
                **{
                    f"{key}_per_chunk": [float(v[index]) for v in vals]
                    for key, vals in history["chunks"].items()
                },
                # The models of one phase train together: this is the whole phase's time.
                "phase_wall_seconds": wall_seconds,
                "phase_models": len(seeds),
                "_sample_grid": scorer.sample_grid(params),
            }
        )
    return runs
