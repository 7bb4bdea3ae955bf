"""Command line of the depth experiment: ``python -m benchmarks.depth --preset cpu``.

Every field of `benchmarks.depth.configs.Config` is a flag (``--depths 1,10,20``,
``--width 784``, ...) that overrides the preset's value; ``--report-only``
trains nothing and rebuilds the table and plots from ``--out``/depth.json.
"""

from __future__ import annotations

import argparse
import signal
import time

import jax

from benchmarks import cli, reporting
from benchmarks import data as data_lib
from benchmarks.depth import configs, pieces, pieces_report
from benchmarks.depth.report import report_only, write_outputs
from benchmarks.depth.train import train_grid


def _parser() -> argparse.ArgumentParser:
    import benchmarks.depth

    parser = cli.preset_parser(
        "benchmarks.depth", benchmarks.depth.__doc__, configs.PRESETS, default="quick"
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: rebuild the table and plots from --out/depth.json "
        "(e.g. of an interrupted sweep)",
    )
    return parser


def parse_args(argv=None) -> configs.Config:
    """The preset (default "quick") with the command line's flags applied."""
    parser = _parser()
    return cli.config_from_args(parser, parser.parse_args(argv), configs.PRESETS)


def sweep(config: configs.Config, dataset) -> list[dict]:
    """Every (optimiser, depth) grid of `config`, rewriting depth.json after each."""
    groups = [(o, d) for d in config.depths for o in config.optimizers]
    bar = reporting.progress(total=len(groups) * config.epochs, desc="depth sweep")
    runs: list[dict] = []
    for optimizer_name, depth in groups:
        bar.set_postfix_str(f"{optimizer_name} depth {depth}")
        runs += train_grid(config, dataset, optimizer_name, depth, on_epoch=lambda: bar.update())
        # Rewritten after every group, so an interrupted sweep keeps what it finished.
        write_outputs(config, runs, finished=False, plots=False)
    bar.close()
    return runs


def sweep_pieces(config: configs.Config, dataset) -> dict:
    """Trains the pieces not finished yet (resuming a checkpointed one), rewriting the report
    after each; stops, checkpointing, after ``stop_after_seconds``, on SIGTERM (``kill PID``)
    or when a piece stops early (``max_epochs_this_run``)."""
    deadline = float("inf")
    if config.stop_after_seconds is not None:
        deadline = time.time() + config.stop_after_seconds
    terminated = []
    previous = signal.signal(signal.SIGTERM, lambda *_: terminated.append(True))
    try:
        return _train_pieces(config, dataset, lambda: bool(terminated) or time.time() >= deadline)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _train_pieces(config: configs.Config, dataset, should_stop) -> dict:
    todo = [p for p in pieces.all_pieces(config) if pieces.load_finished(config, p) is None]
    print(f"{len(todo)} pieces to train: {', '.join(p.name for p in todo)}", flush=True)
    for piece in todo:
        if should_stop():
            break
        result = pieces.train_piece(config, dataset, piece, should_stop)
        if result is None:
            print(f"{piece.name}: stopped early, checkpointed; rerun to resume", flush=True)
            break
        best = {step: entry for step, entry in result["best_at"].items() if entry}
        print(
            f"{piece.name}: finished in {result['wall_seconds']:.0f} s "
            f"(+{result['compile_seconds']:.1f} s compile); best "
            + ", ".join(
                f"{s}: {e['train_accuracy']:.3f} (lr {e['learning_rate']:g})"
                for s, e in best.items()
            ),
            flush=True,
        )
        pieces_report.write_pieces_outputs(config)
    return pieces_report.write_pieces_outputs(config)


def main(argv=None) -> dict:
    parser = _parser()
    args = parser.parse_args(argv)
    config = cli.config_from_args(parser, args, configs.PRESETS)
    if args.report_only:
        return report_only(config.out)
    dataset = data_lib.load_dataset(config.dataset, data_dir=config.data_dir)
    depths = {o: list(config.depths_of(o)) for o in config.optimizers}
    print(
        f"depth sweep on {dataset.name} ({len(dataset.train_images)} train images), "
        f"width {config.width}, depths {depths}, {config.epochs} epochs, "
        f"batch {config.batch_size}, lr x{config.lr_decay} per "
        f"{config.lr_decay_every_steps or 'epoch of'} steps, seeds "
        f"{list(config.seeds)}, optimizers {list(config.optimizers)}, "
        f"{jax.devices()[0].platform}",
        flush=True,
    )
    if config.pieces:
        summary = sweep_pieces(config, dataset)
        print(reporting.format_table(summary["rows"]))
        return summary
    start = time.perf_counter()
    runs = sweep(config, dataset)
    summary = write_outputs(config, runs, finished=True)
    print(reporting.format_table(summary["rows"]))
    print(
        f"total {time.perf_counter() - start:.0f} s; wrote depth.json, depth.md, depth.png, "
        f"relative_trust.png to {config.out}"
    )
    return summary


if __name__ == "__main__":
    main()
