"""Training of one group of runs (one optimiser kind; its learning rates and seeds) at once.

The group's models are stacked on a leading axis and ``jax.vmap``-ed, their
learning rates live in the optimiser state (``optax.inject_hyperparams``) and
are divided by 10 between epochs on the host, and a whole epoch runs as one
jitted ``lax.scan`` over the training windows held on the device. Every model
sees the same windows in the same order (the example does not shuffle); a seed
fixes the initial parameters and the dropout masks, so all optimisers start
from the same parameters at the same seed.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax.training import train_state

from benchmarks import optimizers, reporting, training, word_data
from benchmarks.models import word_transformer
from benchmarks.word_lm.configs import LABELS, Config, RunSpec, learning_rate_at, make_optimizer


class Data(NamedTuple):
    """The corpus and its windows: training (full windows only), validation and test."""

    corpus: word_data.WordCorpus
    train: word_data.Windows
    validation: word_data.Windows
    test: word_data.Windows


def prepare_data(config: Config) -> Data:
    """The corpus of `config`, batchified and cut into bptt windows as the example does."""
    corpus = word_data.load_word_corpus(
        config.data,
        config.data_dir,
        train_words=config.train_words,
        min_count=config.min_count,
        corpus=config.corpus,
    )

    def windows(tokens, batch_size, drop_last=False):
        source = word_data.batchify(tokens, batch_size)
        return word_data.bptt_windows(source, config.bptt, drop_last=drop_last)

    return Data(
        corpus,
        windows(corpus.train, config.batch_size, drop_last=True),
        windows(corpus.validation, config.eval_batch_size),
        windows(corpus.test, config.eval_batch_size),
    )


def train_step(state: train_state.TrainState, dropout_key: jax.Array, batch):
    """One optimiser step on a window (inputs, targets); returns (state, the loss before it)."""
    inputs, targets = batch
    key = jax.random.fold_in(dropout_key, state.step)

    def loss_fn(params):
        logits = state.apply_fn({"params": params}, inputs, train=True, rngs={"dropout": key})
        return training.cross_entropy(logits, targets).mean()

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss


@jax.jit
def run_epoch(state, dropout_keys, inputs, targets):
    """One epoch of every stacked model: the scan of the vmapped `train_step` over windows.

    Returns:
      (state, losses) with losses (num_windows, num_models).
    """
    step = jax.vmap(train_step, in_axes=(0, 0, None))
    return jax.lax.scan(lambda s, batch: step(s, dropout_keys, batch), state, (inputs, targets))


@functools.partial(jax.jit, static_argnums=0)
def evaluate(apply_fn: Callable, params, windows: word_data.Windows) -> jax.Array:
    """Mean loss per target word of every stacked model (dropout off): (num_models,)."""

    def one_model(params):
        def body(total, window):
            inputs, targets, weights = window
            losses = training.cross_entropy(apply_fn({"params": params}, inputs), targets)
            return total + (losses * weights).sum(), None

        total, _ = jax.lax.scan(body, jnp.zeros([], jnp.float32), windows)
        return total / windows.weights.sum()

    return jax.vmap(one_model)(params)


@jax.jit
def keep_best(best_params, params, improved: jax.Array):
    """`best_params` with model i replaced by its `params` where ``improved[i]``."""

    def pick(best, new):
        return jnp.where(improved.reshape((-1,) + (1,) * (new.ndim - 1)), new, best)

    return jax.tree.map(pick, best_params, params)


def stacked_state(model, optimizer, seeds: Sequence[int]):
    """(TrainState of one model per seed stacked on axis 0, their dropout keys).

    A seed's key splits into the initial parameters' key and the dropout key.
    """
    keys = [jax.random.split(jax.random.key(seed)) for seed in seeds]
    params = [word_transformer.init_word_transformer_params(model.config, k[0]) for k in keys]
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *params)

    def create(params):
        return train_state.TrainState.create(apply_fn=model.apply, params=params, tx=optimizer)

    return jax.jit(jax.vmap(create))(stacked), jnp.stack([k[1] for k in keys])


def _perplexity(loss: float) -> float:
    return math.exp(loss) if math.isfinite(loss) and loss < 700 else math.inf


class _Tracker:
    """Per-epoch losses of a group and the parameters of each model's best validation epoch."""

    def __init__(self, params, num_models: int):
        self.best_params = jax.tree.map(jnp.copy, params)
        self.best_loss = np.full(num_models, np.inf)
        self.best_epoch = np.zeros(num_models, int)
        self.history: dict[str, list] = {
            "train_loss": [],
            "validation_loss": [],
            "learning_rate": [],
        }
        # Wall seconds of every epoch's training and evaluation (the first ones include
        # compiling, unless an earlier group of the same shape compiled them).
        self.seconds: dict[str, list[float]] = {"train": [], "evaluation": []}

    def update(self, epoch, params, train_losses, validation_losses, learning_rates):
        self.history["train_loss"].append(train_losses)
        self.history["validation_loss"].append(validation_losses)
        self.history["learning_rate"].append(learning_rates)
        improved = validation_losses < self.best_loss  # False for NaN
        self.best_params = keep_best(self.best_params, params, jnp.asarray(improved))
        self.best_loss = np.where(improved, validation_losses, self.best_loss)
        self.best_epoch = np.where(improved, epoch, self.best_epoch)


@functools.cache
def _model(model_config: word_transformer.WordTransformerConfig):
    # One module object per shape, so its ``apply`` (static in the jitted functions) is the
    # same across groups and a group of the same shape reuses their compilations.
    return word_transformer.WordTransformer(model_config)


def train_group(
    config: Config, data: Data, runs: Sequence[RunSpec], *, show_progress: bool = True
) -> list[dict]:
    """Trains the runs of one group (same optimiser and p_bound) together; one result each."""
    model = _model(config.model(len(data.corpus.vocabulary)))
    state, dropout_keys = stacked_state(
        model, make_optimizer(runs[0].optimizer, runs[0].p_bound), [r.seed for r in runs]
    )
    inputs, targets = jax.device_put((data.train.inputs, data.train.targets))
    validation, test = jax.device_put((data.validation, data.test))
    tracker = _Tracker(state.params, len(runs))
    bar = reporting.progress(
        total=config.epochs, desc=" ".join(r.name for r in runs), disable=not show_progress
    )
    for epoch in range(1, config.epochs + 1):
        lrs = np.asarray([learning_rate_at(config, r.learning_rate, epoch) for r in runs])
        state = state.replace(opt_state=optimizers.with_learning_rate(state.opt_state, lrs))
        started = time.perf_counter()
        state, losses = run_epoch(state, dropout_keys, inputs, targets)
        train_losses = np.asarray(losses, np.float64).mean(axis=0)
        tracker.seconds["train"].append(time.perf_counter() - started)
        started = time.perf_counter()
        validation_losses = np.asarray(evaluate(model.apply, state.params, validation), float)
        tracker.update(epoch, state.params, train_losses, validation_losses, lrs)
        tracker.seconds["evaluation"].append(time.perf_counter() - started)
        bar.update(1)
        bar.set_postfix_str(
            "val ppl " + " ".join(f"{_perplexity(v):.1f}" for v in validation_losses)
        )
    bar.close()
    test_losses = np.asarray(evaluate(model.apply, tracker.best_params, test), float)
    return [
        _result(config, data, run, index, tracker, float(test_losses[index]), runs)
        for index, run in enumerate(runs)
    ]


def _result(config, data, run: RunSpec, index, tracker, test_loss, runs) -> dict[str, Any]:
    """The result of model `index` of a trained group."""
    history = {key: [float(v[index]) for v in values] for key, values in tracker.history.items()}
    best_epoch = int(tracker.best_epoch[index])  # 0: no finite validation loss
    decay_epoch = min(config.decay_after_epoch, config.epochs) or 1
    return {
        "name": run.name,
        "setting": run.setting,
        "optimizer": run.optimizer,
        "label": LABELS[run.optimizer],
        "learning_rate": run.learning_rate,
        "p_bound": run.p_bound,
        "seed": run.seed,
        "epochs": list(range(1, config.epochs + 1)),
        "learning_rate_per_epoch": history["learning_rate"],
        "train_loss_per_epoch": history["train_loss"],
        "validation_loss_per_epoch": history["validation_loss"],
        "train_perplexity_per_epoch": [_perplexity(v) for v in history["train_loss"]],
        "validation_perplexity_per_epoch": [_perplexity(v) for v in history["validation_loss"]],
        "best_epoch": best_epoch or None,
        "best_validation_perplexity": (
            _perplexity(history["validation_loss"][best_epoch - 1]) if best_epoch else math.nan
        ),
        "test_perplexity": _perplexity(test_loss) if best_epoch else math.nan,
        "decay_epoch": decay_epoch,
        "train_perplexity_at_decay_epoch": _perplexity(history["train_loss"][decay_epoch - 1]),
        "final_train_perplexity": _perplexity(history["train_loss"][-1]),
        "diverged": not all(math.isfinite(v) for v in history["train_loss"]),
        "group": [r.name for r in runs],
        "group_train_seconds_per_epoch": tracker.seconds["train"],
        "group_evaluation_seconds_per_epoch": tracker.seconds["evaluation"],
        "group_seconds": sum(tracker.seconds["train"]) + sum(tracker.seconds["evaluation"]),
        "steps_per_epoch": int(data.train.inputs.shape[0]),
        "protocol": config.protocol(),
        "device": str(jax.devices()[0]),
    }
