"""Command line of the transformer experiment: ``python -m benchmarks.transformer``.

Every field of `benchmarks.transformer.configs.Config` is a flag (``--steps``,
``--optimizers fromage adamw``, ``--fromage-lrs 0.01 0.003``, ``--data FILE``,
...) that overrides the preset's value; ``--runs`` picks runs of the grid by
name, ``--resume`` continues them from their checkpoints.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from benchmarks import cli
from benchmarks.transformer import configs, report, train


def _parser() -> argparse.ArgumentParser:
    import benchmarks.transformer

    parser = cli.preset_parser(
        "benchmarks.transformer", benchmarks.transformer.__doc__, configs.PRESETS, default="quick"
    )
    parser.add_argument("--resume", action="store_true", help="continue runs from checkpoints")
    parser.add_argument(
        "--runs",
        nargs="+",
        help="only these runs of the grid, by name (e.g. fromage_lr0.01_p1 adamw_lr0.001)",
    )
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> dict:
    parser = _parser()
    args = parser.parse_args(argv)
    config = cli.config_from_args(parser, args, configs.PRESETS)
    runs = configs.grid(config, config.optimizers)
    if args.runs:
        unknown = set(args.runs) - {run.name for run in runs}
        if unknown:
            parser.error(f"--runs: {sorted(unknown)} are not in the grid {[r.name for r in runs]}")
        runs = [run for run in runs if run.name in args.runs]
    experiment = train.setup(config)
    tokens_per_step = config.batch_size * experiment.model.config.context_length
    results = []
    for run in runs:
        history = train.train_run(
            experiment, run, resume=args.resume, show_progress=not args.no_progress
        )
        results.append(report.summarise_run(run, history, tokens_per_step=tokens_per_step))
    return report.write_outputs(experiment, results)


if __name__ == "__main__":
    main()
