"""Training and scoring of the GAN experiment's runs.

`Scorer` holds the feature classifier (trained on the training split only), the
held-out images' features, the floor, and the fixed latents that score a
generator; `Trainer` the networks, the training data on the device and one
compiled train step per optimiser; `train_piece` trains (or resumes) the runs of
one piece, scoring and checkpointing after every ``eval_every`` steps.

The runs of a piece are groups of models: with ``vmap_models`` one group, every
model stacked on a leading axis and the step ``jax.vmap``-ed (accelerators);
without, one group per model, trained one after the other with the same compiled
step (CPUs: XLA:CPU runs the vmapped, i.e. grouped, convolutions of several
models far slower than one model after another, and the weights' gradients of a
convolution inside a ``lax.scan`` or ``fori_loop`` about 16× slower than the
same step called from Python; so each step is its own jitted call).
"""

from __future__ import annotations

import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import data as data_lib
from benchmarks import frechet, optimizers
from benchmarks.gan import runs as runs_lib
from benchmarks.gan import step as step_lib
from benchmarks.gan.configs import (
    PAPER_BEST_LEARNING_RATES,
    SAMPLES_PER_CLASS_IN_GRID,
    Config,
    learning_rate_decay_step,
    make_optimizer,
)
from benchmarks.models import cgan
from benchmarks.models import gan as gan_models

CHUNK_METRICS = ("discriminator_loss", "generator_loss", "real_score", "fake_score")


def unit_range_images(dataset: data_lib.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Train and held-out images mapped affinely to [−1, 1] (the generator's tanh range).

    The loaders standardise pixels with one mean and scale, so this is the raw
    pixel scale again, from the training images' minimum and maximum.
    """
    low, high = dataset.train_images.min(), dataset.train_images.max()
    scale = (high - low) or 1.0
    train = 2.0 * (dataset.train_images - low) / scale - 1.0
    test = np.clip(2.0 * (dataset.test_images - low) / scale - 1.0, -1.0, 1.0)
    return train.astype(np.float32), test.astype(np.float32)


def make_networks(config: Config, num_pixels: int, num_classes: int):
    """(generator, discriminator) of `config.model` for flat images of `num_pixels`."""
    if config.model == "mlp":
        return (
            gan_models.Generator(tuple(config.generator_hidden), num_pixels, num_classes),
            gan_models.Discriminator(tuple(config.discriminator_hidden), num_classes),
        )
    side = math.isqrt(num_pixels)
    if side * side != num_pixels:
        raise ValueError(f"the conv model needs square images; got {num_pixels} pixels.")
    return (
        cgan.ConditionalGenerator(tuple(config.generator_channels), side, num_classes),
        cgan.ProjectionDiscriminator(tuple(config.discriminator_channels), side, num_classes),
    )


def balanced_subset(labels: np.ndarray, per_class: int, num_classes: int) -> np.ndarray:
    """Indices of the first `per_class` examples of each class (all of a class with fewer)."""
    return np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(num_classes)])


class Scorer:
    """Held-out Fréchet distance and conditioning accuracy of generated images.

    The classifier is trained (seeded, cached in ``config.out``) on the training
    split only. A generator is scored by the Fréchet distance of its images to the
    **held-out** images in that classifier's features (and, for comparison, to the
    training images); ``floor`` is the distance of as many training images
    (``eval_samples_per_class`` of each class) to the held-out ones: what a
    generator that reproduced training images would score. Generated images come
    from the same latents for every model and every score, so curves compare.
    """

    def __init__(self, config: Config, dataset: data_lib.Dataset, generator):
        self.config = config
        self.num_classes = dataset.num_classes
        train_images, held_out_images = unit_range_images(dataset)
        self.image_side = math.isqrt(train_images.shape[1])
        self.classifier, self.classifier_params, self.classifier_info = (
            frechet.train_feature_classifier(
                dataset.name,
                train_images,
                dataset.train_labels,
                held_out_images,
                dataset.test_labels,
                num_classes=self.num_classes,
                hidden_sizes=config.classifier_hidden,
                epochs=config.classifier_epochs,
                seed=config.classifier_seed,
                cache_dir=config.out,
            )
        )
        self.train_features = np.asarray(self._features(train_images))
        self.held_out_features = np.asarray(self._features(held_out_images))
        per_class = config.eval_samples_per_class
        subset = balanced_subset(dataset.train_labels, per_class, self.num_classes)
        self.floor = {
            "frechet_distance": frechet.frechet_distance(
                self.train_features[subset], self.held_out_features
            ),
            "train_images": len(subset),
            "held_out_images": len(held_out_images),
        }
        self.generator = generator
        self.eval_labels = jnp.repeat(jnp.arange(self.num_classes, dtype=jnp.int32), per_class)
        self.eval_latents = jax.random.normal(
            jax.random.key(12345), (len(self.eval_labels), config.latent_size)
        )
        features = self._generated_features
        self._score_features = jax.jit(jax.vmap(features) if config.vmap_models else features)

    def _features(self, images):
        _, features = self.classifier.apply({"params": self.classifier_params}, images)
        return features

    def _generated_features(self, generator_params, generator_batch_stats):
        variables = {"params": generator_params, "batch_stats": generator_batch_stats}
        images = self.generator.apply(variables, self.eval_latents, self.eval_labels)
        logits, features = self.classifier.apply({"params": self.classifier_params}, images)
        return features, jnp.argmax(logits, -1)

    def score(self, group: step_lib.GANState) -> list[dict]:
        """Distances and per-class accuracy of the generated images, one dict per model."""
        features, predictions = self._score_features(
            group.generator_params, group.generator_batch_stats
        )
        features, predictions = np.asarray(features), np.asarray(predictions)
        if not self.config.vmap_models:
            features, predictions = features[None], predictions[None]
        labels = np.asarray(self.eval_labels)
        return [self._score_one(f, p, labels) for f, p in zip(features, predictions, strict=True)]

    def _score_one(self, features, predictions, labels) -> dict:
        correct = predictions == labels
        per_class = [float(correct[labels == c].mean()) for c in range(self.num_classes)]
        distances = {"frechet_distance": math.nan, "train_frechet_distance": math.nan}
        if np.all(np.isfinite(features)):
            distances = {
                "frechet_distance": frechet.frechet_distance(self.held_out_features, features),
                "train_frechet_distance": frechet.frechet_distance(self.train_features, features),
            }
        return {
            **distances,
            "generated_accuracy": float(np.mean(per_class)),
            "accuracy_per_class": per_class,
        }

    def sample_grid(self, generator_params, generator_batch_stats) -> np.ndarray:
        """(num_classes, SAMPLES_PER_CLASS_IN_GRID, side, side) images in [−1, 1] of one model."""
        images = self._samples(generator_params, generator_batch_stats)
        side = self.image_side
        return np.asarray(images).reshape(self.num_classes, SAMPLES_PER_CLASS_IN_GRID, side, side)

    @functools.partial(jax.jit, static_argnums=0)
    def _samples(self, generator_params, generator_batch_stats):
        labels = jnp.repeat(
            jnp.arange(self.num_classes, dtype=jnp.int32), SAMPLES_PER_CLASS_IN_GRID
        )
        latents = jax.random.normal(jax.random.key(54321), (len(labels), self.config.latent_size))
        variables = {"params": generator_params, "batch_stats": generator_batch_stats}
        return self.generator.apply(variables, latents, labels)


class Trainer:
    """The networks, the training data on the device and the compiled step of each optimiser."""

    def __init__(self, config: Config, dataset: data_lib.Dataset):
        self.config = config
        train_images, _ = unit_range_images(dataset)
        self.train_data = jax.device_put({"image": train_images, "label": dataset.train_labels})
        self.num_train = len(train_images)
        self.generator, self.discriminator = make_networks(
            config, train_images.shape[1], dataset.num_classes
        )
        self._steps: dict = {}
        self._states: dict = {}
        # The networks' init compiles once for every optimiser and phase.
        self._init_variables = jax.jit(
            lambda key: step_lib.init_gan_variables(
                self.generator, self.discriminator, key, latent_size=config.latent_size
            )
        )

    def optimizer(self, name: str):
        """The optimiser of protocol optimiser or variant `name` (its lr is set per chunk)."""
        learning_rate = PAPER_BEST_LEARNING_RATES.get(name, PAPER_BEST_LEARNING_RATES["fromage"])
        return make_optimizer(name, learning_rate, p_bound=self.config.p_bound)

    def init_state(self, optimizer_name: str, seed: int) -> step_lib.GANState:
        """`step.init_gan_state` of ``key(seed)``, the networks' init compiled once."""
        if optimizer_name not in self._states:
            optimizer = self.optimizer(optimizer_name)
            self._states[optimizer_name] = jax.jit(
                lambda generator, discriminator, key: step_lib.gan_state(
                    generator, discriminator, optimizer, key
                )
            )
        return self._states[optimizer_name](*self._init_variables(jax.random.key(seed)))

    def init_groups(self, optimizer_name: str, seeds) -> list[step_lib.GANState]:
        """Fresh models of `seeds` (`init_state`) in their groups."""
        models = [self.init_state(optimizer_name, seed) for seed in seeds]
        if not self.config.vmap_models:
            return models
        return [jax.tree.map(lambda *leaves: jnp.stack(leaves), *models)]

    def step_fn(self, optimizer_name: str):
        """Jitted ``(group, data, indices) -> (group, metrics)``: one step of a group's models."""
        if optimizer_name not in self._steps:
            step = step_lib.make_train_step(
                self.generator,
                self.discriminator,
                self.optimizer(optimizer_name),
                latent_size=self.config.latent_size,
            )

            def one_step(state, data, indices):
                return step(state, jax.tree.map(lambda array: array[indices], data))

            if self.config.vmap_models:
                one_step = jax.vmap(one_step, in_axes=(0, None, 0))
            self._steps[optimizer_name] = jax.jit(one_step)
        return self._steps[optimizer_name]

    def warm_up(self, optimizer_name: str, group: step_lib.GANState) -> float:
        """Compiles the step of `optimizer_name` for `group`'s shapes (one step, thrown away);
        returns the seconds it took."""
        start = time.perf_counter()
        indices = np.zeros(self.batch_indices(0, 0).shape[1:], np.int32)
        if self.config.vmap_models:
            indices = np.broadcast_to(indices, (len(group.step), *indices.shape))
        jax.block_until_ready(self.step_fn(optimizer_name)(group, self.train_data, indices))
        return time.perf_counter() - start

    def batch_indices(self, seed: int, chunk: int) -> np.ndarray:
        """(eval_every, batch_size) indices of chunk `chunk` of seed `seed`'s runs: the same
        batches at every learning rate and for every optimiser, and after a resume."""
        rng = np.random.default_rng([seed, chunk])
        shape = (self.config.eval_every, self.config.batch_size)
        return rng.integers(0, self.num_train, shape).astype(np.int32)


def group_sizes(config: Config, num_models: int) -> list[int]:
    return [num_models] if config.vmap_models else [1] * num_models


def _with_learning_rates(group: step_lib.GANState, learning_rates) -> step_lib.GANState:
    return group._replace(
        generator_opt_state=optimizers.with_learning_rate(
            group.generator_opt_state, learning_rates
        ),
        discriminator_opt_state=optimizers.with_learning_rate(
            group.discriminator_opt_state, learning_rates
        ),
    )


def _piece_learning_rates(config: Config, piece: runs_lib.Piece, chunk: int) -> np.ndarray:
    factor = 0.1 if chunk * config.eval_every >= learning_rate_decay_step(config) else 1.0
    return np.asarray([run.learning_rate for run in piece.runs], np.float32) * np.float32(factor)


def _train_group_chunk(trainer, optimizer_name, group, seeds, chunk, learning_rates, stop):
    """`eval_every` steps of one group; (group, {metric: per-model chunk means}) or None if
    `stop()` turned true."""
    config = trainer.config
    indices = np.stack([trainer.batch_indices(seed, chunk) for seed in seeds], axis=1)
    if not config.vmap_models:
        indices, learning_rates = indices[:, 0], learning_rates[0]
    group = _with_learning_rates(group, learning_rates)
    step = trainer.step_fn(optimizer_name)
    metrics = []
    for step_indices in indices:
        if stop():
            return None
        group, step_metrics = step(group, trainer.train_data, step_indices)
        metrics.append(step_metrics)
    means = {
        key: np.atleast_1d(np.mean([np.asarray(m[key]) for m in metrics], axis=0))
        for key in CHUNK_METRICS
    }
    # The rates the chunk actually trained with, read back from the optimiser state.
    means["learning_rate"] = np.atleast_1d(
        np.asarray(group.discriminator_opt_state.hyperparams["learning_rate"], np.float64)
    )
    return group, means


def _new_history(piece: runs_lib.Piece) -> dict:
    return {
        "steps": [],
        "scores": [],  # per eval: one score dict per run
        "chunks": {key: [] for key in (*CHUNK_METRICS, "learning_rate")},  # per chunk: per run
        "train_seconds": [0.0] * len(piece.runs),
        "score_seconds": [0.0] * len(piece.runs),
        "resumed_at_steps": [],
    }


def _score(scorer, groups, sizes, history, step: int) -> None:
    scores = []
    for group, size in zip(groups, sizes, strict=True):
        start = time.perf_counter()
        scores += scorer.score(group)
        seconds = (time.perf_counter() - start) / size
        first = len(scores) - size
        for index in range(first, first + size):
            history["score_seconds"][index] += seconds
    history["steps"].append(step)
    history["scores"].append(scores)


def train_piece(
    trainer: Trainer, scorer: Scorer, piece: runs_lib.Piece, *, should_stop=None, on_chunk=None
) -> list[dict] | None:
    """Trains (or resumes from its checkpoint) every run of `piece`; returns one result dict
    per run once all finished, or None if ``should_stop()`` turned true (checked before every
    step) or ``max_steps_this_run`` steps ran, the piece checkpointed at its last score.

    `on_chunk(size)` is called after each group's chunk of ``eval_every`` steps.
    """
    config = trainer.config
    seeds = [run.seed for run in piece.runs]
    sizes = group_sizes(config, len(seeds))
    groups = trainer.init_groups(piece.optimizer, seeds)
    manager = runs_lib.checkpoint_manager(config, piece)
    history = _new_history(piece)
    restored = runs_lib.restore_checkpoint(manager, config, piece, groups)
    if restored is not None:
        groups, meta, step = restored
        history = meta["history"]
        history["resumed_at_steps"].append(step)
    compile_seconds = _warm_up(trainer, scorer, piece, groups[0])
    if not history["steps"]:
        _score(scorer, groups, sizes, history, 0)
    stop = should_stop or (lambda: False)
    first_chunk = history["steps"][-1] // config.eval_every
    num_chunks = config.steps // config.eval_every
    for chunk in range(first_chunk, num_chunks):
        groups = _train_chunk(trainer, piece, groups, sizes, chunk, history, stop, on_chunk)
        if groups is None:
            manager.close()
            return None
        _score(scorer, groups, sizes, history, (chunk + 1) * config.eval_every)
        if chunk + 1 == num_chunks:
            break
        meta = {"protocol": runs_lib.piece_protocol(config, piece), "history": history}
        runs_lib.save_checkpoint(manager, (chunk + 1) * config.eval_every, groups, meta)
        limit = config.max_steps_this_run
        if limit is not None and (chunk + 1 - first_chunk) * config.eval_every >= limit:
            manager.close()
            return None
    manager.close()
    results = _results(trainer, scorer, piece, groups, sizes, history)
    return [{**result, "compile_seconds": compile_seconds} for result in results]


def _warm_up(trainer, scorer, piece, group) -> float:
    """Compiles the train step and the score for `group` outside the runs' timed work."""
    config = trainer.config
    learning_rates = _piece_learning_rates(config, piece, 0)
    learning_rates = learning_rates[: len(group.step)] if config.vmap_models else learning_rates[0]
    seconds = trainer.warm_up(piece.optimizer, _with_learning_rates(group, learning_rates))
    start = time.perf_counter()
    scorer.score(group)
    return seconds + time.perf_counter() - start


def _train_chunk(trainer, piece, groups, sizes, chunk, history, stop, on_chunk):
    """One chunk of every group, its metrics appended to `history`; None if stopped."""
    learning_rates = _piece_learning_rates(trainer.config, piece, chunk)
    new_groups, chunk_means, first = [], {}, 0
    for group, size in zip(groups, sizes, strict=True):
        models = slice(first, first + size)
        start = time.perf_counter()
        seeds = [run.seed for run in piece.runs[models]]
        trained = _train_group_chunk(
            trainer, piece.optimizer, group, seeds, chunk, learning_rates[models], stop
        )
        if trained is None:
            return None
        group, means = jax.block_until_ready(trained)
        for index in range(first, first + size):
            history["train_seconds"][index] += (time.perf_counter() - start) / size
        for key, values in means.items():
            chunk_means.setdefault(key, []).extend(float(v) for v in values)
        new_groups.append(group)
        first += size
        if on_chunk is not None:
            on_chunk(size)
    for key, values in chunk_means.items():
        history["chunks"][key].append(values)
    return new_groups


def _results(trainer, scorer, piece, groups, sizes, history) -> list[dict]:
    """One result dict per run of a finished piece (its sample grid under "_sample_grid")."""
    config = trainer.config
    decay_step = learning_rate_decay_step(config)
    steps = history["steps"]
    models = [
        jax.tree.map(lambda leaf, i=i: leaf[i], group) if config.vmap_models else group
        for group, size in zip(groups, sizes, strict=True)
        for i in range(size)
    ]
    results = []
    for index, (run, model) in enumerate(zip(piece.runs, models, strict=True)):
        scores = [per_eval[index] for per_eval in history["scores"]]
        per_eval = {
            f"{key}_per_eval": [float(s[key]) for s in scores]
            for key in ("frechet_distance", "train_frechet_distance", "generated_accuracy")
        }
        before_decay = steps.index(decay_step) if 0 < decay_step < config.steps else -1
        results.append(
            {
                "run": run.name,
                "optimizer": run.optimizer,
                "learning_rate": run.learning_rate,
                "seed": run.seed,
                "steps": list(steps),
                **per_eval,
                "frechet_distance": float(scores[-1]["frechet_distance"]),
                "frechet_distance_before_decay": float(scores[before_decay]["frechet_distance"]),
                "train_frechet_distance": float(scores[-1]["train_frechet_distance"]),
                "generated_accuracy": float(scores[-1]["generated_accuracy"]),
                "accuracy_per_class": scores[-1]["accuracy_per_class"],
                # Means over each chunk of eval_every steps (one fewer than the scores).
                **{
                    f"{key}_per_chunk": [chunk[index] for chunk in values]
                    for key, values in history["chunks"].items()
                },
                "train_seconds": history["train_seconds"][index],
                "score_seconds": history["score_seconds"][index],
                "piece": piece.name,
                "piece_models": len(piece.runs),
                "resumed_at_steps": list(history["resumed_at_steps"]),
                "_sample_grid": scorer.sample_grid(
                    model.generator_params, model.generator_batch_stats
                ),
            }
        )
    return results
