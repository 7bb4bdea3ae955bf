"""Command line of the GAN experiment: ``python -m benchmarks.gan --preset cpu``.

Every field of `benchmarks.gan.configs.Config` is a flag (``--optimizers
fromage,adam``, ``--steps 2000``, ...) that overrides the preset's value;
``--report-only`` trains nothing and rebuilds gan.json, gan.md and the plots from
the finished runs in ``--out``. Rerunning a command skips its finished runs and
resumes an interrupted piece from its checkpoint; ``--stop-after-seconds`` or
SIGTERM (``kill PID``) stop it early.
"""

from __future__ import annotations

import argparse
import functools
import signal
import time

import jax

from benchmarks import cli, reporting
from benchmarks import data as data_lib
from benchmarks.gan import configs, report
from benchmarks.gan import runs as runs_lib
from benchmarks.gan.train import Scorer, Trainer, train_piece


def _parser() -> argparse.ArgumentParser:
    import benchmarks.gan

    parser = cli.preset_parser(
        "benchmarks.gan", benchmarks.gan.__doc__, configs.PRESETS, default="quick"
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: rebuild gan.json, gan.md and the plots from --out/runs/",
    )
    return parser


def parse_args(argv=None) -> configs.Config:
    """The preset (default "quick") with the command line's flags applied."""
    parser = _parser()
    return cli.config_from_args(parser, parser.parse_args(argv), configs.PRESETS)


def _announce(config: configs.Config, dataset, scorer: Scorer, info) -> None:
    classifier = scorer.classifier_info
    print(
        f"class-conditional {config.model} GAN on {dataset.name} ({len(dataset.train_images)} "
        f"train, {len(dataset.test_images)} held-out images), {config.steps} steps of batch "
        f"{config.batch_size}, lr/10 after {config.lr_decay_at:.0%}, optimizers "
        f"{list(config.optimizers)}, variants {list(config.variants)}, grid seed "
        f"{config.grid_seed}, seeds {list(config.seeds)}; feature classifier held-out accuracy "
        f"{classifier['test_accuracy']:.3f}{' (cached)' if classifier['cached'] else ''}; "
        f"floor (training vs held-out images) {scorer.floor['frechet_distance']:.3f}; "
        f"{info['platform']}",
        flush=True,
    )


def _next_piece(config: configs.Config) -> runs_lib.Piece | None:
    """The first piece of the plan with unfinished runs, narrowed to those runs."""
    for piece in runs_lib.plan(config):
        todo = tuple(r for r in piece.runs if runs_lib.load_finished(config, r) is None)
        if todo:
            return runs_lib.Piece(piece.optimizer, piece.phase, todo)
    return None


def train_all(config: configs.Config, trainer: Trainer, scorer: Scorer, should_stop) -> None:
    """Trains every unfinished piece of the plan in turn (the seeds of an optimiser once its
    grid finished), writing each run's JSON as it finishes; returns when all are finished or
    a piece stopped early."""
    while (piece := _next_piece(config)) is not None:
        with reporting.progress(total=len(piece.runs) * config.steps, desc=piece.name) as bar:
            results = train_piece(
                trainer,
                scorer,
                piece,
                should_stop=should_stop,
                on_chunk=functools.partial(_advance, bar, config.eval_every),
            )
        if results is None:
            print(f"{piece.name}: stopped; rerun to resume from its last score", flush=True)
            return
        for run, result in zip(piece.runs, results, strict=True):
            runs_lib.save_finished(config, run, result)
        runs_lib.remove_checkpoints(config, piece)
        for run, result in zip(piece.runs, results, strict=True):
            print(
                f"{run.name}: held-out Fréchet distance {result['frechet_distance']:.3f}, "
                f"accuracy on generated {result['generated_accuracy']:.3f}; "
                f"{result['train_seconds'] + result['score_seconds']:.0f} s "
                f"(+{result['compile_seconds']:.0f} s compile for the piece)",
                flush=True,
            )


def _advance(bar, steps: int, models: int) -> None:
    bar.update(models * steps)


def _stopper(config: configs.Config):
    """(should_stop, restore): stop after ``stop_after_seconds`` or on SIGTERM."""
    deadline = float("inf")
    if config.stop_after_seconds is not None:
        deadline = time.time() + config.stop_after_seconds
    terminated = []
    previous = signal.signal(signal.SIGTERM, lambda *_: terminated.append(True))
    return (
        lambda: bool(terminated) or time.time() >= deadline,
        lambda: signal.signal(signal.SIGTERM, previous),
    )


def main(argv=None) -> dict:
    parser = _parser()
    args = parser.parse_args(argv)
    config = cli.config_from_args(parser, args, configs.PRESETS)
    dataset = data_lib.load_dataset(config.dataset, data_dir=config.data_dir)
    start = time.perf_counter()
    trainer = Trainer(config, dataset)
    scorer = Scorer(config, dataset, trainer.generator)
    info = {
        "classifier": scorer.classifier_info,
        "held_out_floor": scorer.floor,
        "lr_decay_step": configs.learning_rate_decay_step(config),
        "platform": jax.devices()[0].platform,
    }
    _announce(config, dataset, scorer, info)
    if not args.report_only:
        should_stop, restore = _stopper(config)
        try:
            train_all(config, trainer, scorer, should_stop)
        finally:
            restore()
    result = report.write_outputs(config, info)
    print(reporting.format_table(result["rows"]))
    for key in ("fromage_versus_adam", "robustness"):
        if result[key] is not None:
            print(result[key]["sentence"])
    status = "finished" if result["finished"] else f"{len(result['missing_runs'])} runs to go"
    print(
        f"{status}; {time.perf_counter() - start:.0f} s; wrote gan.json, gan.md, gan.png, "
        f"gan_accuracy.png, samples_*.png and runs/ to {config.out}"
    )
    return result


if __name__ == "__main__":
    main()
