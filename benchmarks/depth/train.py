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
    """A function returning the next epoch's batch indices, (steps, models, batch)."""
    # Every model of one seed sees the same batches, whatever its learning rate.
    rngs = {seed: np.random.default_rng(seed) for seed in config.seeds}

    def epoch_indices():
        per_seed = {
            seed: data_lib.epoch_batch_indices(num_examples, config.batch_size, rng)
            for seed, rng in rngs.items()
        }
        # Scanned over steps, vmapped over models.
        return np.stack([per_seed[seed] for _, seed in grid], axis=1)

    return epoch_indices


def train_grid(config: Config, dataset, optimizer_name: str, depth: int, on_epoch=None):
    """Trains every (learning rate, seed) of `optimizer_name` at `depth` at once; one run each."""
    learning_rates = PAPER_LEARNING_RATES[optimizer_name]
    grid = [(lr, seed) for lr in learning_rates for seed in config.seeds]
    grid_lrs = np.asarray([lr for lr, _ in grid], np.float32)
    model = mlp.MLP((config.width,) * depth, dataset.num_classes, init_scheme=config.init)
    optimizer = optimizers.make_optimizer(
        optimizer_name,
        learning_rates[0],
        injectable=True,
        **OPTIMIZER_OPTIONS.get(optimizer_name, {}),
    )
    seeds = [seed * 1000 + depth for _, seed in grid]
    state = stacked_train_state(model, optimizer, dataset.train_images[:1], seeds, grid_lrs)
    train_data = jax.device_put({"image": dataset.train_images, "label": dataset.train_labels})
    epoch_indices = _epoch_indices_fn(config, grid, len(dataset.train_images))

    indices = epoch_indices()
    start = time.perf_counter()
    run_epoch = (
        training.make_epoch_fn(jax.vmap(training.classifier_train_step))
        .lower(state, train_data, indices)
        .compile()
    )
    compile_seconds = time.perf_counter() - start

    history: dict = {}
    start = time.perf_counter()
    for epoch in range(config.epochs):
        if epoch > 0:
            indices = epoch_indices()
        decayed = grid_lrs * np.float32(config.lr_decay) ** epoch
        state = state.replace(opt_state=optimizers.with_learning_rate(state.opt_state, decayed))
        state, step_metrics = run_epoch(state, train_data, indices)
        for key, value in step_metrics.items():
            # Means over the epoch's steps, one per model (train accuracy: the paper's metric).
            value = np.asarray(value, np.float64)
            history.setdefault(key, []).append(value.mean(axis=0))
        if on_epoch is not None:
            on_epoch()
    timing = {
        # The grid's models train together: this is the whole grid's time.
        "grid_wall_seconds": time.perf_counter() - start,
        "grid_compile_seconds": compile_seconds,
        "grid_size": len(grid),
        "steps_per_epoch": int(indices.shape[0]),
    }
    return _runs(config, optimizer_name, depth, grid, history, timing)


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
