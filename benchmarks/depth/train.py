"""Training of one (optimiser, depth): all its learning rates and seeds at once, vmapped.

The models are stacked on a leading axis, the learning rates live in the
optimiser state (``optax.inject_hyperparams``), and a whole epoch runs as one
jitted ``lax.scan`` of the vmapped `benchmarks.training.classifier_train_step`
over batches gathered from data held on the device: each (optimiser, depth)
compiles once.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from flax.training import train_state

from benchmarks import data as data_lib
from benchmarks import optimizers, training
from benchmarks.depth.configs import OPTIMIZER_OPTIONS, PAPER_LEARNING_RATES, Config
from benchmarks.models import mlp


def stacked_train_state(model, optimizer, example_inputs, seeds, learning_rates):
    """One TrainState holding len(seeds) models stacked on a leading axis.

    Model i is initialised from ``jax.random.key(seeds[i])`` and trained with
    ``learning_rates[i]`` (the optimiser must come from
    ``optimizers.make_optimizer(..., injectable=True)``).
    """
    keys = jnp.stack([jax.random.key_data(jax.random.key(seed)) for seed in seeds])

    def create(key_data):
        params = model.init(jax.random.wrap_key_data(key_data), example_inputs)["params"]
        return train_state.TrainState.create(apply_fn=model.apply, params=params, tx=optimizer)

    state = jax.jit(jax.vmap(create))(keys)
    opt_state = optimizers.with_learning_rate(state.opt_state, np.asarray(learning_rates))
    return state.replace(opt_state=opt_state)


def _epoch_indices_fn(config: Config, grid, num_examples: int):
    """A function returning the next epoch's batch indices, (steps, models, batch), and the
    data RNGs it draws from (one per seed; their state is what a checkpoint saves)."""
    # Every model of one seed sees the same batches, whatever its learning rate.
    rngs = {seed: np.random.default_rng(seed) for seed in dict.fromkeys(s for _, s in grid)}

    def epoch_indices():
        per_seed = {
            seed: data_lib.epoch_batch_indices(num_examples, config.batch_size, rng)
            for seed, rng in rngs.items()
        }
        # Scanned over steps, vmapped over models.
        return np.stack([per_seed[seed] for _, seed in grid], axis=1)

    return epoch_indices, rngs


def learning_rates_at(config: Config, grid_lrs, epoch: int, steps_per_epoch: int):
    """The grid's learning rates during `epoch` (0-based): x lr_decay once per epoch, or once
    per ``lr_decay_every_steps`` steps (a staircase, counted at the epoch's first step)."""
    decays = epoch
    if config.lr_decay_every_steps is not None:
        decays = epoch * steps_per_epoch // config.lr_decay_every_steps
    return grid_lrs * np.float32(config.lr_decay) ** decays


class Grid:
    """Everything one (optimiser, depth, width) grid trains with: the stacked state of all its
    (learning rate, seed) models, the data on the device, the batch order and the compiled
    epoch. ``Grid(...).epoch(state, epoch)`` runs one epoch and returns (state, epoch means).
    `seeds` (default ``config.seeds``) seed each model's init and its batch order."""

    def __init__(
        self, config, dataset, optimizer_name, depth, width=None, learning_rates=None, seeds=None
    ):
        learning_rates = learning_rates or PAPER_LEARNING_RATES[optimizer_name]
        self.config = config
        self.grid = [(lr, seed) for lr in learning_rates for seed in (seeds or config.seeds)]
        self.grid_lrs = np.asarray([lr for lr, _ in self.grid], np.float32)
        width = width or config.width
        model = mlp.MLP((width,) * depth, dataset.num_classes, init_scheme=config.init)
        optimizer = optimizers.make_optimizer(
            optimizer_name,
            learning_rates[0],
            injectable=True,
            **OPTIMIZER_OPTIONS.get(optimizer_name, {}),
        )
        seeds = [seed * 1000 + depth for _, seed in self.grid]
        self.initial_state = stacked_train_state(
            model, optimizer, dataset.train_images[:1], seeds, self.grid_lrs
        )
        self.data = jax.device_put({"image": dataset.train_images, "label": dataset.train_labels})
        self.next_indices, self.rngs = _epoch_indices_fn(
            config, self.grid, len(dataset.train_images)
        )
        self.steps_per_epoch = len(dataset.train_images) // config.batch_size
        self._run_epoch = None
        self.compile_seconds = 0.0

    def epoch(self, state, epoch: int):
        """Trains `state` one epoch (0-based number `epoch`); returns (state, {metric: means})."""
        indices = self.next_indices()
        if self._run_epoch is None:
            start = time.perf_counter()
            step = jax.vmap(training.classifier_train_step)
            self._run_epoch = (
                training.make_epoch_fn(step).lower(state, self.data, indices).compile()
            )
            self.compile_seconds = time.perf_counter() - start
        lrs = learning_rates_at(self.config, self.grid_lrs, epoch, self.steps_per_epoch)
        state = state.replace(opt_state=optimizers.with_learning_rate(state.opt_state, lrs))
        state, step_metrics = self._run_epoch(state, self.data, indices)
        # Means over the epoch's steps, one per model (train accuracy: the paper's metric).
        return state, {
            key: np.asarray(value, np.float64).mean(axis=0) for key, value in step_metrics.items()
        }


def train_grid(config: Config, dataset, optimizer_name: str, depth: int, on_epoch=None):
    """Trains every (learning rate, seed) of `optimizer_name` at `depth` at once; one run each."""
    grid = Grid(config, dataset, optimizer_name, depth)
    state = grid.initial_state
    history: dict = {}
    start = time.perf_counter()
    for epoch in range(config.epochs):
        state, means = grid.epoch(state, epoch)
        for key, value in means.items():
            history.setdefault(key, []).append(value)
        if on_epoch is not None:
            on_epoch()
    timing = {
        # The grid's models train together: this is the whole grid's time.
        "grid_wall_seconds": time.perf_counter() - start - grid.compile_seconds,
        "grid_compile_seconds": grid.compile_seconds,
        "grid_size": len(grid.grid),
        "steps_per_epoch": grid.steps_per_epoch,
    }
    return _runs(config, optimizer_name, depth, grid.grid, history, timing)


def _runs(config: Config, optimizer_name, depth, grid, history, timing) -> list[dict]:
    runs = []
    for index, (lr, seed) in enumerate(grid):
        per_epoch = {key: [float(v[index]) for v in values] for key, values in history.items()}
        runs.append(
            {
                "optimizer": optimizer_name,
                "learning_rate": lr,
                "depth": depth,
                "seed": seed,
                "width": config.width,
                "train_accuracy": per_epoch["accuracy"][-1],
                "accuracy_per_epoch": per_epoch["accuracy"],
                "loss_per_epoch": per_epoch["loss"],
                "mean_relative_update_norm_per_epoch": per_epoch["mean_relative_update_norm"],
                "max_relative_update_norm_per_epoch": per_epoch["max_relative_update_norm"],
                "deep_relative_trust_per_epoch": per_epoch["deep_relative_trust"],
                **timing,
            }
        )
    return runs
