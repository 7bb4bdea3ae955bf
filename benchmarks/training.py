"""Generic training pieces shared by the benchmarks: the loss, pure jitted steps, loops.

Every train step is a pure function ``(state, batch) -> (state, metrics)`` with
the optimiser (from `benchmarks.optimizers`) inside the state, so comparing
optimisers is a change of one argument. `make_epoch_fn` runs a whole epoch of
any such step in one jitted ``lax.scan``, gathering batches from data kept on
the device.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from flax.training import train_state

from benchmarks.data import epoch_batch_indices
from benchmarks.optimizers import relative_trust
from benchmarks.reporting import progress


def cross_entropy(logits, labels):
    """Softmax cross-entropy (nats) of integer `labels`, one value per label (any leading shape)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def cross_entropy_loss(logits, labels):
    """Mean softmax cross-entropy of integer `labels`."""
    return cross_entropy(logits, labels).mean()


def classification_metrics(logits, labels) -> dict:
    """{"loss", "accuracy"} of a batch."""
    return {
        "loss": cross_entropy_loss(logits, labels),
        "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels),
    }


def create_train_state(model, optimizer, example_inputs, key) -> train_state.TrainState:
    """A Linen ``TrainState`` holding freshly initialised params and `optimizer`."""
    params = model.init(key, example_inputs)["params"]
    return train_state.TrainState.create(apply_fn=model.apply, params=params, tx=optimizer)


def classifier_train_step(state: train_state.TrainState, batch):
    """One optimiser step on a batch ``{"image", "label"}``; returns (state, metrics).

    The metrics are the batch's loss and accuracy before the step and, if the
    optimiser has a monitor, the step's relative trust metrics.
    """

    def loss_fn(params):
        logits = state.apply_fn({"params": params}, batch["image"])
        return cross_entropy_loss(logits, batch["label"]), logits

    (_, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads)
    metrics = classification_metrics(logits, batch["label"])
    metrics.update(relative_trust(state.opt_state))
    return state, metrics


def classifier_eval_step(state: train_state.TrainState, batch):
    """{"loss", "accuracy"} of the model in `state` on a batch ``{"image", "label"}``."""
    logits = state.apply_fn({"params": state.params}, batch["image"])
    return classification_metrics(logits, batch["label"])


def make_nnx_classifier_steps(graphdef):
    """Pure train and eval steps over the state of ``nnx.split((model, optimizer))``.

    NNX objects are mutable; splitting them once into a static graph and a
    state pytree gives the same ``(state, batch) -> (state, metrics)`` step as
    Linen's, which jits, scans and vmaps like any pure function.

    Args:
      graphdef: the first output of ``nnx.split((model, nnx_optimizer))``.

    Returns:
      (train_step, eval_step).
    """

    def train_step(state, batch):
        model, optimizer = nnx.merge(graphdef, state)

        def loss_fn(model):
            logits = model(batch["image"])
            return cross_entropy_loss(logits, batch["label"]), logits

        (_, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        optimizer.update(model, grads)
        metrics = classification_metrics(logits, batch["label"])
        metrics.update(relative_trust(nnx.as_pure(optimizer.opt_state)))
        return nnx.state((model, optimizer)), metrics

    def eval_step(state, batch):
        model, _ = nnx.merge(graphdef, state)
        return classification_metrics(model(batch["image"]), batch["label"])

    return train_step, eval_step


def make_epoch_fn(train_step):
    """A jitted ``(state, data, batch_indices) -> (state, metrics)`` running one epoch.

    Args:
      train_step: a pure ``(state, batch) -> (state, metrics)``.

    Returns:
      A function taking `data`, a dict of arrays whose first axis indexes
      examples (kept on the device), and `batch_indices`, int (num_steps,
      batch_size); it scans `train_step` over the batches ``data[indices]`` and
      returns the final state and every step's metrics stacked (leading axis
      num_steps).
    """

    def run_epoch(state, data, batch_indices):
        def body(state, indices):
            return train_step(state, jax.tree.map(lambda array: array[indices], data))

        return jax.lax.scan(body, state, batch_indices)

    return jax.jit(run_epoch)


def evaluate(eval_step, state, data, batch_size: int = 4096) -> dict:
    """Example-weighted mean of `eval_step`'s metrics over all of `data`, in batches.

    Pass a jitted `eval_step` (``jax.jit(eval_step)``, made once) to evaluate fast.
    """
    jitted = eval_step
    num_examples = len(jax.tree.leaves(data)[0])
    totals: dict = {}
    for start in range(0, num_examples, batch_size):
        rows = slice(start, start + batch_size)
        batch = jax.tree.map(lambda array, rows=rows: array[rows], data)
        size = len(jax.tree.leaves(batch)[0])
        for key, value in jitted(state, batch).items():
            totals[key] = totals.get(key, 0.0) + float(value) * size
    return {key: total / num_examples for key, total in totals.items()}


def epoch_means(metrics) -> dict:
    """Per-step metrics (arrays with a leading step axis) averaged over the epoch, as floats."""
    return {key: float(np.mean(np.asarray(value), axis=0)) for key, value in metrics.items()}


def train_and_evaluate(
    train_step,
    eval_step,
    state,
    train_data: dict,
    test_data: dict,
    *,
    epochs: int,
    batch_size: int,
    seed: int = 0,
    description: str = "",
) -> dict:
    """Trains `state` for `epochs` shuffled epochs, evaluating on `test_data` after each.

    Args:
      train_step: pure ``(state, batch) -> (state, metrics)``.
      eval_step: pure ``(state, batch) -> metrics``.
      state: the initial train state (model and optimiser).
      train_data, test_data: dicts of arrays, first axis indexing examples.
      epochs: number of passes over `train_data`.
      batch_size: examples per step (the last incomplete batch is dropped).
      seed: seed of the shuffling.
      description: label of the progress bar.

    Returns:
      ``{"state", "history", "compile_seconds", "train_seconds"}``: `history`
      maps "epoch", "train_<metric>" (the epoch's mean of every train-step
      metric) and "test_<metric>" to per-epoch lists; `train_seconds` is the wall
      time of the epochs (and the test evaluations), `compile_seconds` that of
      compiling the epoch function ahead of time.
    """
    rng = np.random.default_rng(seed)
    num_examples = len(jax.tree.leaves(train_data)[0])
    train_data = jax.device_put(train_data)
    test_data = jax.device_put(test_data)
    first_indices = epoch_batch_indices(num_examples, batch_size, rng)
    eval_step = jax.jit(eval_step)

    start = time.perf_counter()
    run_epoch = make_epoch_fn(train_step).lower(state, train_data, first_indices).compile()
    compile_seconds = time.perf_counter() - start

    history: dict = {"epoch": []}
    start = time.perf_counter()
    for epoch in progress(range(1, epochs + 1), desc=description, leave=False):
        if epoch > 1:
            indices = epoch_batch_indices(num_examples, batch_size, rng)
        else:
            indices = first_indices
        state, step_metrics = run_epoch(state, train_data, indices)
        _append_epoch(history, epoch, step_metrics, evaluate(eval_step, state, test_data))
    jax.block_until_ready(state)
    return {
        "state": state,
        "history": history,
        "compile_seconds": compile_seconds,
        "train_seconds": time.perf_counter() - start,
    }


def _append_epoch(history: dict, epoch: int, step_metrics, test_metrics: dict) -> None:
    means = {f"train_{k}": v for k, v in epoch_means(step_metrics).items()}
    means.update({f"test_{k}": v for k, v in test_metrics.items()})
    history["epoch"].append(epoch)
    for key, value in means.items():
        history.setdefault(key, []).append(value)
