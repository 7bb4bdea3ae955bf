"""Resumable sweeps: the grid cut into pieces, each trained, checkpointed and saved on its own.

A piece is one (optimiser, depth, width, seeds) with all its learning rates and seeds
vmapped (`benchmarks.depth.train.Grid`). Each finished piece is written to
``<out>/pieces/<optimizer>_d<depth>_w<width>[_s<seeds>].json`` at once (the suffix names
seeds other than the config's, e.g. ``_s1-2``); a rerun skips the
pieces whose JSON exists (for the same protocol) and resumes an unfinished one
from its Orbax checkpoint in ``<out>/checkpoints/<piece>/``: the stacked
TrainState, the per-epoch history and, as JSON, the epoch reached, the data
RNGs' state and the wall time spent. A checkpoint is written every
``checkpoint_every_epochs`` epochs and when a run stops early
(``stop_after_seconds``, ``max_epochs_this_run``, SIGTERM), so a resumed piece gives the
numbers of an uninterrupted one, bitwise on CPU.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp

from benchmarks import reporting
from benchmarks.depth import milestones
from benchmarks.depth.configs import PAPER_LEARNING_RATES, Config
from benchmarks.depth.train import Grid

HISTORY_KEYS = (
    "accuracy",
    "loss",
    "mean_relative_update_norm",
    "max_relative_update_norm",
    "deep_relative_trust",
)


@dataclasses.dataclass(frozen=True)
class Piece:
    """One (optimiser, depth, width) and the learning rates and seeds it trains (vmapped).
    `default_seeds`: the config's seeds, which the name leaves out."""

    optimizer: str
    depth: int
    width: int
    learning_rates: tuple[float, ...]
    seeds: tuple[int, ...] = (0,)
    default_seeds: tuple[int, ...] = dataclasses.field(default=(0,), compare=False, repr=False)

    @property
    def base_name(self) -> str:
        return f"{self.optimizer}_d{self.depth}_w{self.width}"

    @property
    def name(self) -> str:
        if tuple(self.seeds) == tuple(self.default_seeds):
            return self.base_name
        return f"{self.base_name}_s{'-'.join(str(s) for s in self.seeds)}"


def all_pieces(config: Config) -> list[Piece]:
    """Every piece of `config`: each optimiser at its depths (width `config.width`, its three
    lrs), the width study (each width x depth, one lr per optimiser, the seeds
    `width_study_seeds`), then the seed study (the pieces named in `seed_study_pieces` again
    with the seeds `seed_study`); `piece_order` first."""
    seeds = tuple(config.seeds)

    def piece(optimizer, depth, width, lrs, piece_seeds=seeds):
        return Piece(optimizer, depth, width, tuple(lrs), tuple(piece_seeds), seeds)

    pieces = [
        piece(o, d, config.width, PAPER_LEARNING_RATES[o])
        for o in config.optimizers
        for d in config.depths_of(o)
    ]
    study_lrs = dict(config.width_study_learning_rates)
    pieces += [
        piece(o, d, w, (study_lrs[o],), config.width_study_seeds or seeds)
        for w in config.width_study
        for d in config.width_study_depths
        for o in config.optimizers
        if o in study_lrs
    ]
    if config.seed_study:
        pieces += [
            piece(p.optimizer, p.depth, p.width, p.learning_rates, config.seed_study)
            for p in list(pieces)
            if p.name in config.seed_study_pieces
        ]
    first = {name: rank for rank, name in enumerate(config.piece_order)}
    return sorted(pieces, key=lambda p: first.get(p.name, len(first)))


def protocol(config: Config, piece: Piece) -> dict:
    """What decides a piece's numbers: a saved piece (or checkpoint) counts only if it matches."""
    fields = ("dataset", "epochs", "seeds", "batch_size", "lr_decay", "lr_decay_every_steps")
    fields += ("init", "data_dir", "window_steps")
    values = {f: getattr(config, f) for f in fields} | {"learning_rates": piece.learning_rates}
    values["seeds"] = piece.seeds
    return json.loads(json.dumps(values))


def piece_path(config: Config, piece: Piece) -> Path:
    return Path(config.out) / "pieces" / f"{piece.name}.json"


def load_finished(config: Config, piece: Piece) -> dict | None:
    """The saved result of `piece` if it finished under the current protocol, else None."""
    return reporting.read_finished(piece_path(config, piece), protocol(config, piece))


def _checkpoint_manager(config: Config, piece: Piece) -> ocp.CheckpointManager:
    directory = (Path(config.out) / "checkpoints" / piece.name).absolute()
    options = ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=False)
    return ocp.CheckpointManager(directory, options=options)


def _save(manager, epoch: int, state, history: dict, meta: dict) -> None:
    args = ocp.args.Composite(
        state=ocp.args.StandardSave({"train_state": state, "history": history}),
        meta=ocp.args.JsonSave({**meta, "epoch": epoch}),
    )
    manager.save(epoch, args=args, force=True)


def _restore(manager, config: Config, piece: Piece, grid: Grid, history: dict):
    """(state, history, meta) of the latest checkpoint, or None if there is none (one written
    under another protocol is deleted)."""
    epoch = manager.latest_step()
    if epoch is None:
        return None
    meta = manager.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    if meta.get("protocol") != protocol(config, piece):
        manager.delete(epoch)
        return None
    target = {"train_state": grid.initial_state, "history": history}
    restored = manager.restore(
        epoch, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))
    )["state"]
    for seed, rng in grid.rngs.items():
        rng.bit_generator.state = meta["rngs"][str(seed)]
    history = {key: np.array(values) for key, values in restored["history"].items()}
    return restored["train_state"], history, meta


def _meta(config, piece, grid: Grid, seconds: float, resumed_at: list[int]) -> dict:
    return {
        "resumed_at": resumed_at,
        "protocol": protocol(config, piece),
        "rngs": {str(seed): rng.bit_generator.state for seed, rng in grid.rngs.items()},
        "wall_seconds": seconds,
    }


def train_piece(config: Config, dataset, piece: Piece, should_stop=None):
    """Trains (or resumes) `piece` until it finishes, ``should_stop()`` turns true (checked
    after every epoch) or ``max_epochs_this_run`` epochs ran; returns its result dict if it
    finished, else None (after checkpointing)."""
    grid = Grid(
        config,
        dataset,
        piece.optimizer,
        piece.depth,
        piece.width,
        piece.learning_rates,
        piece.seeds,
    )
    history = {k: np.full((config.epochs, len(grid.grid)), np.nan) for k in HISTORY_KEYS}
    manager = _checkpoint_manager(config, piece)
    state, first_epoch, seconds, resumed_at = grid.initial_state, 0, 0.0, []
    restored = _restore(manager, config, piece, grid, history)
    if restored is not None:
        state, history, meta = restored
        first_epoch, seconds = meta["epoch"], meta["wall_seconds"]
        resumed_at = [*meta["resumed_at"], first_epoch]
        print(f"{piece.name}: resuming at epoch {first_epoch}", flush=True)
    last_epoch = config.epochs
    if config.max_epochs_this_run is not None:
        last_epoch = min(last_epoch, first_epoch + config.max_epochs_this_run)
    start, epoch = time.perf_counter(), first_epoch
    spent = lambda: seconds + time.perf_counter() - start - grid.compile_seconds  # noqa: E731
    while epoch < last_epoch and not (should_stop is not None and should_stop()):
        state, means = grid.epoch(state, epoch)
        for key in HISTORY_KEYS:
            history[key][epoch] = means[key]
        epoch += 1
        if epoch % config.checkpoint_every_epochs == 0 and epoch < config.epochs:
            _save(manager, epoch, state, history, _meta(config, piece, grid, spent(), resumed_at))
            accuracy = np.round(means["accuracy"], 3)
            step = epoch * grid.steps_per_epoch
            print(
                f"{piece.name}: epoch {epoch}/{config.epochs} (step {step:,}), accuracy "
                f"per lr {accuracy}, {spent():.0f} s",
                flush=True,
            )
    seconds = spent()
    if epoch < config.epochs:
        if manager.latest_step() != epoch:
            _save(manager, epoch, state, history, _meta(config, piece, grid, seconds, resumed_at))
        manager.close()
        return None
    manager.close()
    result = piece_result(config, piece, grid, history, seconds)
    result["resumed_at_epochs"] = resumed_at
    reporting.write_json(piece_path(config, piece), result)
    shutil.rmtree(Path(config.out) / "checkpoints" / piece.name, ignore_errors=True)
    return result


def piece_result(config: Config, piece: Piece, grid: Grid, history: dict, seconds: float):
    """A finished piece: per (lr, seed) the metric at every milestone and the per-window
    history; the best lr at every milestone; the piece's wall time."""
    epochs_per_window = milestones.epochs_per_window(config, grid.steps_per_epoch)
    runs = []
    for index, (lr, seed) in enumerate(grid.grid):
        per_epoch = {key: values[:, index] for key, values in history.items()}
        runs.append(
            {
                "learning_rate": lr,
                "seed": seed,
                "accuracy_at": milestones.metric_at(
                    config, per_epoch["accuracy"], grid.steps_per_epoch
                ),
                **{
                    f"{key}_per_window": milestones.window_means(values, epochs_per_window)
                    for key, values in per_epoch.items()
                },
            }
        )
    fields = dataclasses.asdict(piece)
    del fields["default_seeds"]
    return {
        **fields,
        "piece": piece.name,
        "protocol": protocol(config, piece),
        "steps_per_epoch": grid.steps_per_epoch,
        "window_steps": epochs_per_window * grid.steps_per_epoch,
        "wall_seconds": seconds,
        "compile_seconds": grid.compile_seconds,
        "best_at": milestones.best_at(runs),
        "runs": runs,
    }
