"""The GAN experiment's runs and pieces on disk: one JSON per finished run, Orbax checkpoints.

A run is one GAN (optimiser, learning rate, seed); a piece is the runs of one phase
of one optimiser that train together (one compiled step). Each finished run is
written to ``<out>/runs/<run>.json`` (and its samples to ``<out>/runs/<run>.png``)
at once, with the `protocol` that decided its numbers; a rerun skips the runs whose
JSON exists for the same protocol, so a run shared by two phases (the grid's
seed at the best rate) trains once. An unfinished piece is checkpointed with Orbax
in ``<out>/checkpoints/<piece>/`` after every scored chunk of ``eval_every`` steps:
the networks' params and ``batch_stats`` (BatchNorm averages, spectral-norm
vectors), both optimiser states and the latents' keys, with the history of scores
and the time spent as JSON. Batches are drawn from ``(seed, chunk)`` alone, so a
resumed piece gives the numbers of an uninterrupted one (bitwise on CPU).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from benchmarks import reporting
from benchmarks.gan.configs import Config

# The fields of `Config` that decide a run's numbers.
PROTOCOL_FIELDS = (
    "dataset", "data_dir", "model", "steps", "eval_every", "batch_size", "latent_size",
    "generator_channels", "discriminator_channels", "generator_hidden", "discriminator_hidden",
    "lr_decay_at", "classifier_hidden", "classifier_epochs", "classifier_seed",
    "eval_samples_per_class",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Run:
    """One GAN: `optimizer` (a protocol optimiser or a variant) at `learning_rate`, `seed`."""

    optimizer: str
    learning_rate: float
    seed: int

    @property
    def name(self) -> str:
        return f"{self.optimizer}_lr{self.learning_rate:g}_s{self.seed}"


@dataclasses.dataclass(frozen=True)
class Piece:
    """Runs of one optimiser that train together, named after their `phase`."""

    optimizer: str
    phase: str
    runs: tuple[Run, ...]

    @property
    def name(self) -> str:
        return f"{self.optimizer}_{self.phase}"


def protocol(config: Config, run: Run) -> dict:
    """What decides `run`'s numbers: a saved run (or checkpoint) counts only if it matches."""
    values = {field: getattr(config, field) for field in PROTOCOL_FIELDS}
    if config.model == "conv":
        del values["generator_hidden"], values["discriminator_hidden"]
    else:
        del values["generator_channels"], values["discriminator_channels"]
    values |= dataclasses.asdict(run)
    if run.optimizer == "fromage_p_bound":
        values["p_bound"] = config.p_bound
    return json.loads(json.dumps(values))


def grid_runs(config: Config, optimizer: str) -> list[Run]:
    return [Run(optimizer, lr, config.grid_seed) for lr in config.learning_rates_of(optimizer)]


def seed_runs(config: Config, optimizer: str, learning_rate: float) -> list[Run]:
    return [Run(optimizer, learning_rate, seed) for seed in config.seeds]


def best_learning_rate(grid_results: list[dict]) -> float:
    """The grid's learning rate with the lowest final held-out Fréchet distance (diverged runs
    last)."""

    def distance(result):
        value = float(result["frechet_distance"])
        return value if math.isfinite(value) else math.inf

    return min(grid_results, key=distance)["learning_rate"]


def plan(config: Config) -> list[Piece]:
    """The pieces of `config` that can be named now, in training order: per optimiser its grid,
    then (once the grid finished) its seeds at the grid's best rate, and after Fromage's seeds
    the variants at Fromage's best rate. Each piece lists all its runs, finished or not."""
    pieces = []
    for name in config.optimizers:
        grid = grid_runs(config, name)
        pieces.append(Piece(name, "grid", tuple(grid)))
        results = [load_finished(config, run) for run in grid]
        if any(result is None for result in results):
            continue
        best = best_learning_rate(results)
        pieces.append(Piece(name, "seeds", tuple(seed_runs(config, name, best))))
        if name == "fromage":
            for variant in config.variants:
                runs = tuple(Run(variant, best, seed) for seed in config.seeds)
                pieces.append(Piece(variant, "robustness", runs))
    return pieces


def expected_pieces(config: Config) -> int:
    """How many pieces `plan` names once every grid finished."""
    variants = len(config.variants) if "fromage" in config.optimizers else 0
    return 2 * len(config.optimizers) + variants


def run_path(config: Config, run: Run) -> Path:
    return Path(config.out) / "runs" / f"{run.name}.json"


def load_finished(config: Config, run: Run) -> dict | None:
    """The saved result of `run` if it finished under the current protocol, else None."""
    return reporting.read_finished(run_path(config, run), protocol(config, run))


def save_finished(config: Config, run: Run, result: dict) -> Path:
    """Writes `run`'s result (and its "_sample_grid" as a PNG beside it) under ``runs/``."""
    path = run_path(config, run)
    grid = result.get("_sample_grid")
    if grid is not None:
        title = f"{run.name} (rows: classes)"
        reporting.write_image_grid(path.with_suffix(".png"), grid, title)
    public = {key: value for key, value in result.items() if not key.startswith("_")}
    return reporting.write_json(path, {**public, "protocol": protocol(config, run)})


def _checkpoint_directory(config: Config, piece: Piece) -> Path:
    return (Path(config.out) / "checkpoints" / piece.name).absolute()


def checkpoint_manager(config: Config, piece: Piece) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=False)
    return ocp.CheckpointManager(_checkpoint_directory(config, piece), options=options)


def piece_protocol(config: Config, piece: Piece) -> dict:
    """The protocol of every run of `piece`, and how its models are laid out."""
    return {
        "runs": [protocol(config, run) for run in piece.runs],
        "vmap_models": config.vmap_models,
        "p_bound": config.p_bound,
    }


def _storable(groups):
    """Typed PRNG keys as their raw data (what Orbax can write)."""
    return [group._replace(key=jax.random.key_data(group.key)) for group in groups]


def save_checkpoint(manager, step: int, groups, meta: dict) -> None:
    """Saves the piece's model groups (`benchmarks.gan.step.GANState`s) and `meta` at `step`."""
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(_storable(groups)), meta=ocp.args.JsonSave(meta)
    )
    manager.save(step, args=args, force=True)


def restore_checkpoint(manager, config: Config, piece: Piece, initial_groups):
    """(groups, meta, step) of the latest checkpoint of `piece`, or None if there is none (one
    written under another protocol is deleted)."""
    step = manager.latest_step()
    if step is None:
        return None
    meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    if meta.get("protocol") != piece_protocol(config, piece):
        manager.delete(step)
        return None
    target = _storable(initial_groups)
    restored = manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))
    )["state"]
    # Uncommitted, like fresh arrays: committed ones would make every jitted function compile
    # again for them.
    restored = jax.tree.map(lambda leaf: jnp.asarray(np.asarray(leaf)), restored)
    groups = [
        saved._replace(key=jax.random.wrap_key_data(saved.key, impl=jax.random.key_impl(group.key)))
        for saved, group in zip(restored, initial_groups, strict=True)
    ]
    return groups, meta, step


def remove_checkpoints(config: Config, piece: Piece) -> None:
    """Deletes `piece`'s checkpoints (and the checkpoints folder once empty)."""
    directory = _checkpoint_directory(config, piece)
    shutil.rmtree(directory, ignore_errors=True)
    if directory.parent.is_dir() and not any(directory.parent.iterdir()):
        directory.parent.rmdir()
