"""Command line of the transformer experiment: ``python -m benchmarks.transformer``.

Every field of `benchmarks.transformer.configs.Config` is a flag (``--steps``,
``--optimizers fromage adamw``, ``--fromage-lrs 0.01 0.003``, ``--data FILE``,
...) that overrides the preset's value; ``--runs`` picks runs of the grid by
name (a setting, e.g. ``adamw_lr0.003_wd0.3``, or one seed of it,
``adamw_lr0.003_wd0.3_seed1``), ``--resume`` continues unfinished runs from
their checkpoints. Each finished run writes ``runs/<name>.json`` under
``--out`` at once; a rerun with the same protocol (everything but the grids
and seeds) loads those instead of training again (``--rerun`` trains them anew).
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
    parser.add_argument("--rerun", action="store_true", help="retrain runs that have a result")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> dict:
    parser = _parser()
    args = parser.parse_args(argv)
    config = cli.config_from_args(parser, args, configs.PRESETS)
    runs = configs.grid(config, config.optimizers)
    if args.runs:
        known = {run.name for run in runs} | {run.setting for run in runs}
        unknown = set(args.runs) - known
        if unknown:
            parser.error(
                f"--runs: {sorted(unknown)} are not in the grid {sorted({r.setting for r in runs})}"
            )
        runs = [run for run in runs if {run.name, run.setting} & set(args.runs)]
    experiment = train.setup(config)
    print(
        f"{experiment.corpus.name}: validation on "
        f"{train.evaluation_bytes(experiment):,} of {len(experiment.corpus.validation):,} bytes"
    )
    tokens_per_step = config.batch_size * experiment.model.config.context_length
    results = []
    for run in runs:
        path = report.run_path(config.out, run)
        finished = None if args.rerun else report.load_finished(path, config.protocol())
        if finished is not None:
            results.append(finished)
            print(f"{run.name}: finished before, loaded from {path}")
            continue
        seeded = train.at_seed(experiment, run.seed)
        history = train.train_run(
            seeded, run, resume=args.resume, show_progress=not args.no_progress
        )
        results.append(report.summarise_run(run, history, tokens_per_step=tokens_per_step))
        report.write_run(path, results[-1], config.protocol())
    return report.write_outputs(experiment, results)


if __name__ == "__main__":
    main()
