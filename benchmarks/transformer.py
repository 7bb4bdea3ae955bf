"""Byte-level GPT language model trained with Fromage, AdamW, SGD and optax.fromage.

Trains the decoder-only transformer of `benchmarks.models.gpt` on a byte-level corpus
(`benchmarks.text_data`) with every optimiser of a grid, all with the same
steps, batches (the batch at step s depends only on the seed and s) and
initial parameters, and reports train and validation loss (nats per byte,
which is nats per character for ASCII text), perplexity, wall time and
tokens/s, plus the deep relative trust of the steps.

Usage (from the repository root)::

  python -m benchmarks.transformer --preset quick --out /tmp/transformer
  python -m benchmarks.transformer --preset cpu --out docs/results/transformer
  python -m benchmarks.transformer --preset gpu --data-dir ~/wikitext-2 --out runs/gpu
  python -m benchmarks.transformer --preset cpu --data my.txt --optimizers fromage adamw \\
      --fromage-lrs 0.01 --fromage-p-bounds 1.0 --checkpoint-every 500 --resume

Writes ``transformer.json`` (config, every run's curves and summary) and
``transformer.png`` (validation loss of each optimiser at its best setting)
into ``--out``; with ``--checkpoint-every N`` an Orbax checkpoint of every run
is kept under ``--out/checkpoints/<run>`` and ``--resume`` continues from it.

References:
  Bernstein, Vahdat, Yue, Liu. *On the distance between two neural networks
  and the stability of learning*. NeurIPS 2020. https://arxiv.org/abs/2002.03432
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

import fromage_optax
from benchmarks import reporting, text_data
from benchmarks.models import gpt
from fromage_optax._diagnostics import monitor_relative_trust, relative_trust_metrics

OPTIMIZER_NAMES = ("fromage", "adamw", "sgd", "optax_fromage")
OPTIMIZER_LABELS = {
    "fromage": "fromage_optax.fromage",
    "adamw": "optax.adamw",
    "sgd": "optax.sgd (momentum 0.9)",
    "optax_fromage": "optax.fromage",
}
# Leaves that are weight matrices (the "layers" of deep relative trust, and the
# leaves AdamW decays); biases and LayerNorm parameters are left out.
MATRIX_LEAF_NAMES = ("kernel", "embedding", "position_embedding")


@dataclasses.dataclass(frozen=True)
class TrainingPreset:
    """Everything a preset fixes besides the model shape.

    Attributes:
      model: name of the `gpt.gpt_config` preset.
      steps: optimiser steps of every run.
      batch_size: sequences per step.
      eval_interval: steps between evaluations (there is one at step 0 and at the end).
      max_eval_batches: cap on evaluation batches per split (windows are spread evenly).
      eval_batch_size: sequences per evaluation batch.
      warmup_steps: linear warm-up of the AdamW and SGD schedules.
      fromage_learning_rates, fromage_p_bounds, adamw_learning_rates,
      sgd_learning_rates, optax_fromage_learning_rates: the grids.
      fromage_schedules: "constant" (the paper) and/or "cosine" for fromage_optax.fromage.
      fromage_momenta: None (the paper) and/or β: fromage_optax.fromage fed the
        gradients' exponential moving average ``optax.trace(β)`` (a variant).
    """

    model: str
    steps: int
    batch_size: int
    eval_interval: int
    max_eval_batches: int
    eval_batch_size: int
    warmup_steps: int
    fromage_learning_rates: tuple[float, ...] = (0.01, 0.003)
    fromage_p_bounds: tuple[float | None, ...] = (None, 1.0, 2.0)
    adamw_learning_rates: tuple[float, ...] = (3e-3, 1e-3, 3e-4)
    sgd_learning_rates: tuple[float, ...] = (1.0, 0.3, 0.1)
    optax_fromage_learning_rates: tuple[float, ...] = (0.01, 0.003)
    fromage_schedules: tuple[str, ...] = ("constant",)
    fromage_momenta: tuple[float | None, ...] = (None,)


PRESETS = {
    "quick": TrainingPreset(
        model="tiny",
        steps=12,
        batch_size=4,
        eval_interval=6,
        max_eval_batches=2,
        eval_batch_size=8,
        warmup_steps=2,
        fromage_learning_rates=(0.01,),
        fromage_p_bounds=(1.0,),
        adamw_learning_rates=(1e-3,),
        sgd_learning_rates=(0.1,),
        optax_fromage_learning_rates=(0.01,),
    ),
    # nanoGPT's CPU configuration: 4 layers, 4 heads, width 128, context 64, batch 12, 2000 steps.
    "cpu": TrainingPreset(
        model="cpu",
        steps=2000,
        batch_size=12,
        eval_interval=250,
        max_eval_batches=5,
        eval_batch_size=48,
        warmup_steps=100,
    ),
    # ≈114M parameters; for one GPU/TPU, ideally on WikiText-2 (--data-dir).
    "gpu": TrainingPreset(
        model="gpu",
        steps=5000,
        batch_size=32,
        eval_interval=500,
        max_eval_batches=32,
        eval_batch_size=32,
        warmup_steps=200,
    ),
}


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One training run: an optimiser at one setting."""

    optimizer: str
    learning_rate: float
    p_bound: float | None = None
    schedule: str = "constant"  # or "cosine": warm-up + cosine decay to lr/10
    momentum: float | None = None  # fromage only: Fromage steps along an EMA of gradients

    @property
    def name(self) -> str:
        name = f"{self.optimizer}_lr{self.learning_rate:g}"
        if self.optimizer == "fromage":
            name += f"_p{self.p_bound:g}" if self.p_bound is not None else "_pNone"
        if self.optimizer == "fromage" and self.momentum is not None:
            name += f"_m{self.momentum:g}"
        if self.optimizer in ("fromage", "optax_fromage") and self.schedule != "constant":
            name += f"_{self.schedule}"
        return name


def grid(preset: TrainingPreset, optimizers: Sequence[str]) -> list[RunSpec]:
    """Every run of the preset's grids for the chosen optimisers."""
    runs = []
    for name in optimizers:
        if name == "fromage":
            runs += [
                RunSpec(name, lr, p, schedule, momentum)
                for momentum in preset.fromage_momenta
                for schedule in preset.fromage_schedules
                for lr in preset.fromage_learning_rates
                for p in preset.fromage_p_bounds
            ]
        elif name == "adamw":
            runs += [RunSpec(name, lr, schedule="cosine") for lr in preset.adamw_learning_rates]
        elif name == "sgd":
            runs += [RunSpec(name, lr, schedule="cosine") for lr in preset.sgd_learning_rates]
        elif name == "optax_fromage":
            runs += [RunSpec(name, lr) for lr in preset.optax_fromage_learning_rates]
        else:
            raise ValueError(f"unknown optimizer {name!r}; choose from {OPTIMIZER_NAMES}")
    return runs


def matrix_mask(params: Any) -> Any:
    """True for weight matrices and embeddings, False for biases and LayerNorm parameters."""

    def is_matrix(path, _):
        return getattr(path[-1], "key", None) in MATRIX_LEAF_NAMES

    return jax.tree_util.tree_map_with_path(is_matrix, params)


def warmup_cosine(peak: float, warmup_steps: int, steps: int) -> optax.Schedule:
    """Linear warm-up to `peak`, then cosine decay to peak/10 at `steps` (as nanoGPT)."""
    return optax.warmup_cosine_decay_schedule(
        0.0, peak, warmup_steps, max(steps, warmup_steps + 1), end_value=peak / 10
    )


def make_optimizer(
    run: RunSpec, *, steps: int, warmup_steps: int, layer_axes: Any = None
) -> optax.GradientTransformation:
    """The optimiser of `run`, followed by `monitor_relative_trust` over the weight matrices.

    Fromage (both implementations) runs at a constant learning rate, as in the
    paper, unless ``run.schedule`` is "cosine" (the same warm-up + cosine as
    the others), and sees the raw gradients unless ``run.momentum`` is set:
    then ``optax.chain(optax.trace(momentum), fromage(...))``, Fromage's
    per-layer relative step along a moving average of the gradients (not in
    the paper). AdamW (weight decay 0.1 on matrices, β₂ = 0.99, as nanoGPT)
    and SGD (momentum 0.9) use warm-up + cosine and clip the global gradient
    norm at 1; clipping would not change a Fromage step, which ignores
    gradient scale.

    Equal arguments return the same object, so the jitted train step (which
    holds the optimiser as a static field of the state) compiles once per
    setting in a process.
    """
    if run.optimizer in ("fromage", "optax_fromage") and run.schedule == "constant":
        steps = warmup_steps = 0  # unused: normalised so the cache sees one setting
    return _make_optimizer(run, steps, warmup_steps, layer_axes)


@functools.cache
def _make_optimizer(run: RunSpec, steps: int, warmup_steps: int, layer_axes: Any):
    if run.schedule == "cosine":
        learning_rate = warmup_cosine(run.learning_rate, warmup_steps, steps)
    elif run.schedule == "constant":
        learning_rate = run.learning_rate
    else:
        raise ValueError(f"unknown schedule {run.schedule!r}; choose 'constant' or 'cosine'")
    if run.optimizer == "fromage":
        optimizer = fromage_optax.fromage(learning_rate, run.p_bound, layer_axes=layer_axes)
        if run.momentum is not None:
            optimizer = optax.chain(optax.trace(decay=run.momentum), optimizer)
    elif run.optimizer == "optax_fromage":
        optimizer = optax.fromage(learning_rate)
    elif run.optimizer == "adamw":
        optimizer = optax.chain(
            optax.clip_by_global_norm(1.0),
            optax.adamw(
                learning_rate,
                b2=0.99,
                weight_decay=0.1,
                mask=matrix_mask,
            ),
        )
    elif run.optimizer == "sgd":
        optimizer = optax.chain(
            optax.clip_by_global_norm(1.0),
            optax.sgd(learning_rate, momentum=0.9),
        )
    else:
        raise ValueError(f"unknown optimizer {run.optimizer!r}; choose from {OPTIMIZER_NAMES}")
    monitor = monitor_relative_trust(mask=matrix_mask, layer_axes=layer_axes)
    return optax.chain(optimizer, monitor)


def next_byte_loss(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Cross-entropy (nats) of every target byte, shape [batch, length]."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets)


def train_step(state: train_state.TrainState, batch: tuple[jax.Array, jax.Array]):
    """One optimiser step on a batch (inputs, targets): returns (state, metrics).

    Metrics: the batch's loss before the step and the step's relative trust
    (max and mean ‖ΔW‖/‖W‖ over weight matrices, deep relative trust).
    """
    inputs, targets = batch

    def loss_fn(params):
        logits = state.apply_fn({"params": params}, inputs)
        return next_byte_loss(logits, targets).mean()

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    state = state.apply_gradients(grads=grads)
    metrics = {"loss": loss, **relative_trust_metrics(state.opt_state)}
    return state, metrics


def eval_step(params: Any, apply_fn: Callable, batch: tuple[jax.Array, jax.Array]):
    """Summed loss and number of target bytes of a batch."""
    inputs, targets = batch
    losses = next_byte_loss(apply_fn({"params": params}, inputs), targets)
    return losses.sum(), losses.size


# One jitted step for the whole process: runs with equal settings (same
# optimiser object from `make_optimizer`, same model from `gpt_model`) share
# its compiled code, e.g. a run and its resumption.
_jitted_train_step = jax.jit(train_step, donate_argnums=0)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _jitted_create_state(apply_fn, optimizer, params) -> train_state.TrainState:
    # Jitted: run eagerly, the optimiser's init (Fromage's norms) compiles op by op.
    state = train_state.TrainState.create(apply_fn=apply_fn, params=params, tx=optimizer)
    # A strongly typed step counter, as a restored checkpoint has: both then
    # share the compiled train step.
    return state.replace(step=jnp.zeros([], jnp.int32))


_jitted_eval_step = jax.jit(eval_step, static_argnums=1)


@functools.cache
def gpt_model(config: gpt.GPTConfig) -> gpt.GPT:
    """The `gpt.GPT` module of `config`, one object per config (see `_jitted_train_step`)."""
    return gpt.GPT(config)


def make_evaluator(
    model: gpt.GPT, corpus: text_data.TextCorpus, preset: TrainingPreset
) -> Callable[[Any, str], float]:
    """`evaluate(params, split)`: mean loss (nats/byte) on fixed windows of "train" or "validation".

    Built once and shared by all runs, so its jitted step compiles once.
    """
    context = model.config.context_length
    eval_sets = {
        split: text_data.evaluation_batches(
            tokens, preset.eval_batch_size, context, preset.max_eval_batches
        )
        for split, tokens in (("train", corpus.train), ("validation", corpus.validation))
    }

    def evaluate(params, split):
        batches = eval_sets[split]
        totals = jax.device_get([_jitted_eval_step(params, model.apply, b) for b in batches])
        return float(sum(total for total, _ in totals) / sum(count for _, count in totals))

    return evaluate


def batch_at_step(tokens: np.ndarray, step: int, seed: int, batch_size: int, context: int):
    """The training batch of `step`: the same for every optimiser and after a resume."""
    return text_data.random_batch(tokens, batch_size, context, np.random.default_rng([seed, step]))


class _Checkpointer:
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


def _empty_history() -> dict:
    keys = (
        "step",
        "train_loss",
        "validation_loss",
        "running_train_loss",
        "max_relative_update_norm",
        "mean_relative_update_norm",
        "deep_relative_trust",
    )
    return {key: [] for key in keys} | {
        "wall_time_s": 0.0,
        "train_time_s": 0.0,
        "compile_time_s": 0.0,
        "timed_steps": 0,
        "diverged": False,
    }


def train_run(
    run: RunSpec,
    *,
    model: gpt.GPT,
    initial_params: Any,
    corpus: text_data.TextCorpus,
    evaluate: Callable[[Any, str], float],
    preset: TrainingPreset,
    steps: int,
    batch_size: int,
    seed: int,
    layer_axes: Any = None,
    checkpoint_dir: Path | None = None,
    checkpoint_every: int = 0,
    resume: bool = False,
    show_progress: bool = True,
) -> dict:
    """Trains one run and returns its curves and summary (see the module docstring)."""
    segment_started = time.perf_counter()
    context = model.config.context_length
    optimizer = make_optimizer(
        run, steps=steps, warmup_steps=preset.warmup_steps, layer_axes=layer_axes
    )
    # A copy: the jitted step donates (reuses) the state's buffers, and every
    # run starts from the same initial params.
    params = jax.tree.map(jnp.copy, initial_params)
    state = _jitted_create_state(model.apply, optimizer, params)

    history, first_step = _empty_history(), 0
    checkpointer = None
    if checkpoint_dir is not None and checkpoint_every > 0:
        checkpointer = _Checkpointer(checkpoint_dir, checkpoint_every)
        latest = checkpointer.latest_step() if resume else None
        if latest is not None:
            state, history = checkpointer.restore(latest, state)
            # Plain (uncommitted) device arrays, like those of a fresh state.
            state = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)), state)
            first_step = latest

    def record(step, step_metrics):
        history["step"].append(step)
        history["train_loss"].append(evaluate(state.params, "train"))
        history["validation_loss"].append(evaluate(state.params, "validation"))
        fetched = jax.device_get(step_metrics)
        for key, source in _INTERVAL_MEANS.items():
            values = [float(m[source]) for m in fetched]
            history[key].append(float(np.mean(values)) if values else None)

    def save(step):
        # A snapshot: Orbax writes the JSON in the background, after `history`
        # has moved on. Wall time so far goes in, so a resumed run reports the total.
        snapshot = copy.deepcopy(history)
        snapshot["wall_time_s"] += time.perf_counter() - segment_started
        checkpointer.save(step, state, snapshot)

    if first_step == 0:
        record(0, [])
    interval_metrics: list = []
    bar = reporting.progress(
        total=steps, initial=first_step, desc=run.name, disable=not show_progress
    )
    diverged = history["diverged"]
    train_started = time.perf_counter()
    for step in range(first_step, steps if not diverged else first_step):
        inputs, targets = batch_at_step(corpus.train, step, seed, batch_size, context)
        step_started = time.perf_counter()
        state, metrics = _jitted_train_step(state, (inputs, targets))
        if step == first_step:
            jax.block_until_ready(state.params)
            history["compile_time_s"] += time.perf_counter() - step_started
            history["timed_steps"] -= 1
            train_started = time.perf_counter()
        history["timed_steps"] += 1
        interval_metrics.append(metrics)
        bar.update(1)
        done = step + 1
        if done % 20 == 0 or done == steps:
            loss = float(metrics["loss"])
            bar.set_postfix(loss=f"{loss:.3f}")
            if not math.isfinite(loss):
                diverged = history["diverged"] = True
        if done % preset.eval_interval == 0 or done == steps or diverged:
            jax.block_until_ready(state.params)
            history["train_time_s"] += time.perf_counter() - train_started
            record(done, interval_metrics)
            interval_metrics = []
            if checkpointer and (done % checkpoint_every == 0 or done == steps or diverged):
                save(done)
            train_started = time.perf_counter()
        elif checkpointer and done % checkpoint_every == 0:
            history["train_time_s"] += time.perf_counter() - train_started
            save(done)
            train_started = time.perf_counter()
        if diverged:
            break
    bar.close()
    if checkpointer:
        checkpointer.close()
    if first_step < steps:  # a finished run only loaded from its checkpoint adds no time
        history["wall_time_s"] += time.perf_counter() - segment_started
    return summarise_run(run, history, tokens_per_step=batch_size * context)


def summarise_run(run: RunSpec, history: dict, *, tokens_per_step: int) -> dict:
    """Best and final losses, perplexities and speed of a run from its history."""
    validation = np.array(history["validation_loss"], dtype=float)
    finite = np.where(np.isfinite(validation), validation, np.inf)
    best_index = int(np.argmin(finite))
    best = float(validation[best_index]) if np.isfinite(finite[best_index]) else math.nan
    final_validation = float(validation[-1])
    final_train = float(history["train_loss"][-1])
    return {
        "name": run.name,
        "optimizer": run.optimizer,
        "label": OPTIMIZER_LABELS[run.optimizer]
        + ("" if run.momentum is None else f" + trace({run.momentum:g})"),
        "learning_rate": run.learning_rate,
        "p_bound": run.p_bound,
        "schedule": run.schedule,
        "momentum": run.momentum,
        "steps": history["step"][-1],
        "diverged": history["diverged"] or not math.isfinite(final_validation),
        "best_validation_loss": best,
        "best_step": history["step"][best_index],
        "best_validation_perplexity": math.exp(best) if math.isfinite(best) else math.nan,
        "final_validation_loss": final_validation,
        "final_train_loss": final_train,
        "final_validation_perplexity": _perplexity(final_validation),
        "final_train_perplexity": _perplexity(final_train),
        "wall_time_s": history["wall_time_s"],
        "train_time_s": history["train_time_s"],
        "compile_time_s": history["compile_time_s"],
        "tokens_per_s": history["timed_steps"]
        * tokens_per_step
        / max(history["train_time_s"], 1e-9),
        "history": history,
    }


def _perplexity(loss: float) -> float:
    return math.exp(loss) if math.isfinite(loss) and loss < 700 else math.inf


def variant(result: dict) -> str:
    """The optimiser's name, with "+momentum" for Fromage fed a gradient average."""
    if result.get("momentum") is not None:
        return f"{result['optimizer']}+momentum"
    return result["optimizer"]


def best_per_optimizer(results: Sequence[dict]) -> list[dict]:
    """For each optimiser (and variant), its run with the lowest best validation loss."""
    best: dict[str, dict] = {}
    for result in results:
        current = best.get(variant(result))
        score = result["best_validation_loss"]
        if current is None or (
            math.isfinite(score)
            and not score >= current["best_validation_loss"]  # NaN-safe comparison
        ):
            best[variant(result)] = result
    order = [v for name in OPTIMIZER_NAMES for v in (name, f"{name}+momentum")]
    return [best[v] for v in order if v in best]


def _setting(result: dict) -> str:
    setting = f"lr={result['learning_rate']:g}"
    if result["optimizer"] == "fromage":
        setting += f", p_bound={result['p_bound']}"
        if result.get("momentum") is not None:
            setting += f", momentum={result['momentum']:g}"
    if result["schedule"] == "cosine":
        setting += " (warm-up+cosine)"
    return setting


def table_rows(results: Sequence[dict]) -> list[dict]:
    """One row per run for the console and README tables."""
    return [
        {
            "optimizer": r["label"],
            "setting": _setting(r),
            "best val loss": r["best_validation_loss"],
            "best val ppl": r["best_validation_perplexity"],
            "final val loss": r["final_validation_loss"],
            "final train loss": r["final_train_loss"],
            "wall s": r["wall_time_s"],
            "tokens/s": r["tokens_per_s"],
            "max ΔW/W": r["history"]["max_relative_update_norm"][-1],
        }
        for r in results
    ]


def _none_or_floats(values: Sequence[str] | None) -> tuple[float | None, ...] | None:
    if not values:
        return None
    return tuple(None if value.lower() == "none" else float(value) for value in values)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=tuple(PRESETS), default="quick")
    parser.add_argument("--out", default="results/transformer", help="output folder")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--data", help="a UTF-8 text file, split 90/10 into train/validation")
    source.add_argument("--data-dir", help="a folder with wiki.{train,valid,test}.tokens or .raw")
    parser.add_argument("--optimizers", nargs="+", choices=OPTIMIZER_NAMES, default=OPTIMIZER_NAMES)
    parser.add_argument("--steps", type=int, help="override the preset's steps")
    parser.add_argument("--batch-size", type=int, help="override the preset's batch size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fromage-lrs", type=float, nargs="+")
    parser.add_argument(
        "--fromage-p-bounds", nargs="+", help="numbers or 'none', e.g. none 1.0 2.0"
    )
    parser.add_argument("--adamw-lrs", type=float, nargs="+")
    parser.add_argument("--sgd-lrs", type=float, nargs="+")
    parser.add_argument("--optax-fromage-lrs", type=float, nargs="+")
    parser.add_argument(
        "--fromage-schedules",
        nargs="+",
        choices=("constant", "cosine"),
        help="Fromage learning-rate schedules to try (default: constant, as the paper)",
    )
    parser.add_argument(
        "--fromage-momenta",
        nargs="+",
        help="'none' (the paper) and/or β: Fromage along optax.trace(β) of the gradients",
    )
    parser.add_argument(
        "--scan-layers",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="stack the blocks with nn.scan and give Fromage per-layer layer_axes "
        "(default: the preset's choice)",
    )
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), help="computation dtype")
    parser.add_argument(
        "--init", choices=("gpt2", "lecun"), help="weight initialisation (default: gpt2)"
    )
    parser.add_argument("--checkpoint-every", type=int, default=0, help="Orbax checkpoint period")
    parser.add_argument("--resume", action="store_true", help="continue runs from checkpoints")
    parser.add_argument(
        "--runs",
        nargs="+",
        help="only these runs of the grid, by name (e.g. fromage_lr0.01_p1 adamw_lr0.001)",
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    preset = PRESETS[args.preset]
    overrides = {
        "fromage_learning_rates": args.fromage_lrs,
        "fromage_p_bounds": _none_or_floats(args.fromage_p_bounds),
        "adamw_learning_rates": args.adamw_lrs,
        "sgd_learning_rates": args.sgd_lrs,
        "optax_fromage_learning_rates": args.optax_fromage_lrs,
        "fromage_schedules": args.fromage_schedules,
        "fromage_momenta": _none_or_floats(args.fromage_momenta),
    }
    preset = dataclasses.replace(
        preset, **{k: tuple(v) for k, v in overrides.items() if v is not None}
    )
    steps = args.steps or preset.steps
    batch_size = args.batch_size or preset.batch_size
    model_overrides = {}
    if args.scan_layers is not None:
        model_overrides["scan_layers"] = args.scan_layers
    if args.dtype:
        model_overrides["dtype"] = args.dtype
    if args.init:
        model_overrides["init"] = args.init
    config = gpt.gpt_config(preset.model, **model_overrides)
    corpus = text_data.load_corpus(args.data, args.data_dir)
    model = gpt_model(config)
    initial_params = gpt.init_gpt_params(config, jax.random.key(args.seed))
    layer_axes = gpt.gpt_layer_axes if config.scan_layers else None
    evaluate = make_evaluator(model, corpus, preset)
    out = Path(args.out)

    runs = grid(preset, args.optimizers)
    if args.runs:
        unknown = set(args.runs) - {run.name for run in runs}
        if unknown:
            parser.error(f"--runs: {sorted(unknown)} are not in the grid {[r.name for r in runs]}")
        runs = [run for run in runs if run.name in args.runs]
    results = []
    for run in runs:
        results.append(
            train_run(
                run,
                model=model,
                initial_params=initial_params,
                corpus=corpus,
                evaluate=evaluate,
                preset=preset,
                steps=steps,
                batch_size=batch_size,
                seed=args.seed,
                layer_axes=layer_axes,
                checkpoint_dir=out / "checkpoints" / run.name,
                checkpoint_every=args.checkpoint_every,
                resume=args.resume,
                show_progress=not args.no_progress,
            )
        )
    best = best_per_optimizer(results)
    by_name = {variant(r): r for r in best}
    gap = None
    if "fromage" in by_name and "adamw" in by_name:
        gap = by_name["fromage"]["best_validation_loss"] - by_name["adamw"]["best_validation_loss"]

    print(f"\nAll runs ({corpus.name}, {steps} steps × {batch_size} × {config.context_length}):")
    print(reporting.format_table(table_rows(results)))
    print("\nEach optimiser at its best setting:")
    print(reporting.format_table(table_rows(best)))
    print("\n" + reporting.format_markdown_table(table_rows(best)))
    momentum_gap = None
    if "fromage+momentum" in by_name and "adamw" in by_name:
        momentum_gap = (
            by_name["fromage+momentum"]["best_validation_loss"]
            - by_name["adamw"]["best_validation_loss"]
        )
    if gap is not None:
        print(f"\nFromage best − AdamW best validation loss: {gap:+.4f} nats/byte")
    if momentum_gap is not None:
        print(f"Fromage+momentum best − AdamW best validation loss: {momentum_gap:+.4f} nats/byte")

    summary = {
        "benchmark": "transformer",
        "preset": args.preset,
        "model": dataclasses.asdict(config),
        "parameters": gpt.parameter_count(initial_params),
        "training": dataclasses.asdict(preset)
        | {"steps": steps, "batch_size": batch_size, "seed": args.seed},
        "data": {
            "name": corpus.name,
            "train_bytes": len(corpus.train),
            "validation_bytes": len(corpus.validation),
            "unit": "nats per byte",
        },
        "device": str(jax.devices()[0]),
        "jax_version": jax.__version__,
        "runs": results,
        "best": [{k: v for k, v in r.items() if k != "history"} for r in best],
        "fromage_minus_adamw_best_validation_loss": gap,
        "fromage_momentum_minus_adamw_best_validation_loss": momentum_gap,
    }
    reporting.write_json(out / "transformer.json", summary)
    series = {
        f"{r['label']} ({_setting(r)})": (r["history"]["step"], r["history"]["validation_loss"])
        for r in best
    }
    reporting.line_plot(
        out / "transformer.png",
        series,
        xlabel="step",
        ylabel="validation loss (nats/byte)",
        title=f"GPT {args.preset} on {Path(corpus.name).name}: best setting per optimiser",
    )
    return summary


if __name__ == "__main__":
    main()
