"""Training of the transformer experiment's runs: pure steps, one run's loop, checkpoints.

Every optimiser gets the same initial parameters, the same batches (the batch
at step s depends only on the seed and s, also after a resume) and the same
evaluation windows.
"""

from __future__ import annotations

import copy
import functools
import math
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax.training import train_state

import fromage_optax
from benchmarks import reporting, text_data, training
from benchmarks.models import gpt
from benchmarks.transformer.configs import Config, RunSpec, make_optimizer, matrix_mask


def train_step(state: train_state.TrainState, batch: tuple[jax.Array, jax.Array]):
    """One optimiser step on a batch (inputs, targets): returns (state, metrics).

    Metrics: the batch's loss before the step and the step's relative trust
    (max and mean ‖ΔW‖/‖W‖ over weight matrices, deep relative trust).
    """
    inputs, targets = batch

    def loss_fn(params):
        logits = state.apply_fn({"params": params}, inputs)
        return training.cross_entropy(logits, targets).mean()

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    state = state.apply_gradients(grads=grads)
    metrics = {"loss": loss, **fromage_optax.relative_trust_metrics(state.opt_state)}
    return state, metrics


def eval_step(params: Any, apply_fn, batch: tuple[jax.Array, jax.Array]):
    """Summed loss (nats) and number of target bytes of a batch."""
    inputs, targets = batch
    losses = training.cross_entropy(apply_fn({"params": params}, inputs), targets)
    return losses.sum(), losses.size


# The step donates (reuses) the state's buffers; compiled once per optimiser and model.
jitted_train_step = jax.jit(train_step, donate_argnums=0)
jitted_eval_step = jax.jit(eval_step, static_argnums=1)


@functools.partial(jax.jit, static_argnums=(0, 1))
def create_state(apply_fn, optimizer, params) -> train_state.TrainState:
    """A TrainState of `params` (jitted: run eagerly, Fromage's init compiles op by op)."""
    state = train_state.TrainState.create(apply_fn=apply_fn, params=params, tx=optimizer)
    # A strongly typed step counter, as a restored checkpoint has: both then
    # share the compiled train step.
    return state.replace(step=jnp.zeros([], jnp.int32))


class Experiment(NamedTuple):
    """What every run of one command shares."""

    config: Config
    model: gpt.GPT
    seed: int  # of the initial params and the training batches
    initial_params: Any
    corpus: text_data.TextCorpus
    evaluation_batches: dict  # split -> list of (inputs, targets)
    layer_axes: Any

    def evaluate(self, params, split: str) -> float:
        """Mean loss (nats/byte) on the fixed windows of "train" or "validation"."""
        batches = self.evaluation_batches[split]
        totals = jax.device_get([jitted_eval_step(params, self.model.apply, b) for b in batches])
        return float(sum(total for total, _ in totals) / sum(count for _, count in totals))


def setup(config: Config, seed: int | None = None) -> Experiment:
    """The model, its initial params at `seed` (default: the config's first), the corpus and
    the evaluation windows of `config` (the same windows at every seed)."""
    seed = config.seeds[0] if seed is None else seed
    model_config = gpt.gpt_config(config.model, **config.model_overrides())
    corpus = text_data.load_corpus(config.data, config.data_dir, config.corpus)
    context = model_config.context_length
    caps = {"train": config.max_train_eval_batches, "validation": config.max_eval_batches}
    batches = {
        split: text_data.evaluation_batches(tokens, config.eval_batch_size, context, caps[split])
        for split, tokens in (("train", corpus.train), ("validation", corpus.validation))
    }
    return Experiment(
        config=config,
        model=gpt.GPT(model_config),
        seed=seed,
        initial_params=gpt.init_gpt_params(model_config, jax.random.key(seed)),
        corpus=corpus,
        evaluation_batches=batches,
        layer_axes=gpt.gpt_layer_axes if model_config.scan_layers else None,
    )


def at_seed(experiment: Experiment, seed: int) -> Experiment:
    """`experiment` with the initial params of `seed` (corpus and windows shared)."""
    if seed == experiment.seed:
        return experiment
    params = gpt.init_gpt_params(experiment.model.config, jax.random.key(seed))
    return experiment._replace(seed=seed, initial_params=params)


def evaluation_bytes(experiment: Experiment, split: str = "validation") -> int:
    """How many target bytes an evaluation of `split` scores."""
    return sum(targets.size for _, targets in experiment.evaluation_batches[split])


def batch_at_step(tokens: np.ndarray, step: int, seed: int, batch_size: int, context: int):
    """The training batch of `step`: the same for every optimiser and after a resume."""
    return text_data.random_batch(tokens, batch_size, context, np.random.default_rng([seed, step]))


class Checkpointer:
    """Orbax checkpoints of one run's TrainState plus its history so far."""

    def __init__(self, directory: Path, every: int):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.every = every
        self.manager = ocp.CheckpointManager(
            directory.absolute(),
            options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, history: dict) -> None:
        ocp = self._ocp
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), history=ocp.args.JsonSave(history)
            ),
        )

    def restore(self, step: int, abstract_state):
        ocp = self._ocp
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), history=ocp.args.JsonRestore()
            ),
        )
        return restored["state"], restored["history"]

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


# History entries that are means over the steps since the previous evaluation.
_INTERVAL_MEANS = {
    "running_train_loss": "loss",
    "max_relative_update_norm": "max_relative_update_norm",
    "mean_relative_update_norm": "mean_relative_update_norm",
    "deep_relative_trust": "deep_relative_trust",
}


def empty_history() -> dict:
    keys = ("step", "train_loss", "validation_loss", *_INTERVAL_MEANS)
    return {key: [] for key in keys} | {
        "wall_time_s": 0.0,
        "train_time_s": 0.0,
        "compile_time_s": 0.0,
        "timed_steps": 0,
        "diverged": False,
    }


def record(experiment: Experiment, history: dict, step: int, params, step_metrics) -> None:
    """Appends the evaluation at `step` and the means of the steps since the last one."""
    history["step"].append(step)
    history["train_loss"].append(experiment.evaluate(params, "train"))
    history["validation_loss"].append(experiment.evaluate(params, "validation"))
    fetched = jax.device_get(step_metrics)
    for key, source in _INTERVAL_MEANS.items():
        values = [float(m[source]) for m in fetched]
        history[key].append(float(np.mean(values)) if values else None)


def start_run(experiment: Experiment, run: RunSpec, checkpointer, resume: bool):
    """(state, history, first step) of `run`: fresh, or from its latest checkpoint."""
    config = experiment.config
    optimizer = make_optimizer(
        run, steps=config.steps, warmup_steps=config.warmup_steps, layer_axes=experiment.layer_axes
    )
    # A copy: the jitted step donates (reuses) the state's buffers, and every
    # run starts from the same initial params.
    params = jax.tree.map(jnp.copy, experiment.initial_params)
    state = create_state(experiment.model.apply, optimizer, params)
    latest = checkpointer.latest_step() if checkpointer and resume else None
    if latest is None:
        return state, empty_history(), 0
    state, history = checkpointer.restore(latest, state)
    # Plain (uncommitted) device arrays, like those of a fresh state.
    return jax.tree.map(lambda x: jnp.asarray(np.asarray(x)), state), history, latest


def train_run(experiment: Experiment, run: RunSpec, *, resume=False, show_progress=True) -> dict:
    """Trains one run (or its remaining steps after a checkpoint); returns its history."""
    segment_started = time.perf_counter()
    config = experiment.config
    checkpointer = None
    if config.checkpoint_every > 0:
        directory = Path(config.out) / "checkpoints" / run.name
        checkpointer = Checkpointer(directory, config.checkpoint_every)
    state, history, first_step = start_run(experiment, run, checkpointer, resume)
    if first_step == 0:
        record(experiment, history, 0, state.params, [])
    bar = reporting.progress(
        total=config.steps, initial=first_step, desc=run.name, disable=not show_progress
    )
    state = _steps(experiment, state, history, first_step, checkpointer, segment_started, bar)
    bar.close()
    record_scales(experiment, history, state.params)
    if checkpointer:
        checkpointer.close()
    if first_step < config.steps:  # a finished run only loaded from its checkpoint adds no time
        history["wall_time_s"] += time.perf_counter() - segment_started
    return history


def record_scales(experiment: Experiment, history: dict, params) -> None:
    """Final ‖W‖ and ‖W‖/‖W₀‖ of every matrix, and the RMS of the logits about their mean.

    The scales an optimiser reached: Fromage keeps each tensor near its initial
    norm, AdamW lets them grow, and the logits' spread (on the first validation
    batch) is what the loss finally sees.
    """
    mask = matrix_mask(params)
    norms, ratios = {}, {}
    for (path, w), (_, w0), (_, chosen) in zip(
        jax.tree_util.tree_leaves_with_path(params),
        jax.tree_util.tree_leaves_with_path(experiment.initial_params),
        jax.tree_util.tree_leaves_with_path(mask),
    ):
        if chosen:
            name = jax.tree_util.keystr(path)
            norms[name] = float(jnp.linalg.norm(w))
            ratios[name] = norms[name] / float(jnp.linalg.norm(w0))
    inputs, _ = experiment.evaluation_batches["validation"][0]
    logits = experiment.model.apply({"params": params}, inputs)
    centred = logits - logits.mean(axis=-1, keepdims=True)
    history["final_weight_norms"] = norms
    history["final_weight_norm_ratios"] = ratios
    history["final_logit_rms"] = float(jnp.sqrt(jnp.mean(jnp.square(centred))))


def _steps(experiment: Experiment, state, history, first_step, checkpointer, started, bar):
    """The training loop from `first_step`: evaluations, checkpoints, divergence; the last state."""
    config = experiment.config
    context = experiment.model.config.context_length

    def save(step):
        # A snapshot: Orbax writes the JSON in the background, after `history`
        # has moved on. Wall time so far goes in, so a resumed run reports the total.
        snapshot = copy.deepcopy(history)
        snapshot["wall_time_s"] += time.perf_counter() - started
        checkpointer.save(step, state, snapshot)

    interval_metrics: list = []
    diverged = history["diverged"]
    train_started = time.perf_counter()
    for step in range(first_step, config.steps if not diverged else first_step):
        batch = batch_at_step(
            experiment.corpus.train, step, experiment.seed, config.batch_size, context
        )
        step_started = time.perf_counter()
        state, metrics = jitted_train_step(state, batch)
        if step == first_step:
            jax.block_until_ready(state.params)
            history["compile_time_s"] += time.perf_counter() - step_started
            history["timed_steps"] -= 1
            train_started = time.perf_counter()
        history["timed_steps"] += 1
        interval_metrics.append(metrics)
        bar.update(1)
        done = step + 1
        if done % 20 == 0 or done == config.steps:
            loss = float(metrics["loss"])
            bar.set_postfix(loss=f"{loss:.3f}")
            if not math.isfinite(loss):
                diverged = history["diverged"] = True
        evaluate = done % config.eval_interval == 0 or done == config.steps or diverged
        checkpoint = checkpointer and (
            done % config.checkpoint_every == 0 or (evaluate and (done == config.steps or diverged))
        )
        if evaluate or checkpoint:
            jax.block_until_ready(state.params)
            history["train_time_s"] += time.perf_counter() - train_started
            if evaluate:
                record(experiment, history, done, state.params, interval_metrics)
                interval_metrics = []
                bar.set_postfix(
                    loss=f"{float(metrics['loss']):.3f}",
                    val=f"{history['validation_loss'][-1]:.4f}",
                )
            if checkpoint:
                save(done)
            train_started = time.perf_counter()
        if diverged:
            break
    return state
