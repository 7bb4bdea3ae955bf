"""Command line of the word-level LM experiment: ``python -m benchmarks.word_lm``.

Every field of `benchmarks.word_lm.configs.Config` is a flag (``--epochs``,
``--optimizers fromage adam``, ``--fromage-lrs 0.01``, ``--train-words 20000``,
``--data-dir DIR``, ...) that overrides the preset's value. A run whose JSON
already sits in ``--out/runs`` (same protocol) is not trained again.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from benchmarks import cli, reporting
from benchmarks.word_lm import configs, report, train


def _parser() -> argparse.ArgumentParser:
    import benchmarks.word_lm

    parser = cli.preset_parser(
        "benchmarks.word_lm", benchmarks.word_lm.__doc__, configs.PRESETS, default="quick"
    )
    parser.add_argument("--no-progress", action="store_true")
    return parser


def train_runs(config, data, runs, results: dict, info: dict, show_progress: bool) -> None:
    """Trains the `runs` not finished yet, group by group, writing each run's JSON and the
    report after every group; `results` (name -> result) gains every run of `runs`."""
    for group in configs.groups(runs):
        finished = {run.name: report.load_finished(config, run) for run in group}
        results.update({name: result for name, result in finished.items() if result})
        todo = [run for run in group if finished[run.name] is None]
        if not todo:
            continue
        started = time.perf_counter()
        for result in train.train_group(config, data, todo, show_progress=show_progress):
            report.write_run(config, result)
            results[result["name"]] = result
        print(
            f"{', '.join(run.name for run in todo)}: {time.perf_counter() - started:.0f} s; "
            "best val / test ppl "
            + ", ".join(
                f"{results[r.name]['best_validation_perplexity']:.1f} / "
                f"{results[r.name]['test_perplexity']:.1f}"
                for r in todo
            ),
            flush=True,
        )
        report.write_outputs(config, info, list(results.values()), finished=False)


def seed_runs(config: configs.Config, results: dict) -> list[configs.RunSpec]:
    """The other seeds of each optimiser's best setting at the first seed."""
    best = report.best_per_optimizer(list(results.values()), config.seeds[0])
    return [
        configs.RunSpec(r["optimizer"], r["learning_rate"], r["p_bound"], seed)
        for r in best
        for seed in config.seeds[1:]
    ]


def main(argv: Sequence[str] | None = None) -> dict:
    parser = _parser()
    args = parser.parse_args(argv)
    config = cli.config_from_args(parser, args, configs.PRESETS)
    data = train.prepare_data(config)
    info = report.corpus_info(data)
    print(
        f"word LM, preset {config.preset}: {info['name']}, vocabulary "
        f"{info['vocabulary_size']} (min count {config.min_count}), {info['train_tokens']} train "
        f"tokens ({info['train_steps_per_epoch']} steps/epoch), {config.epochs} epochs; <unk> "
        + ", ".join(f"{split} {rate:.1%}" for split, rate in info["unknown_rates"].items()),
        flush=True,
    )
    grid = configs.grid(config)
    # Fromage without a bound last: the paper's setting, Adam and SGD are the headline.
    grid.sort(key=lambda run: run.optimizer == "fromage" and run.p_bound is None)
    results: dict = {}
    show = not args.no_progress
    train_runs(config, data, grid, results, info, show)
    train_runs(config, data, seed_runs(config, results), results, info, show)
    ordered = sorted(
        results.values(),
        key=lambda r: (
            r["seed"],
            configs.OPTIMIZER_NAMES.index(r["optimizer"]),
            r["p_bound"] is None,
            r["learning_rate"],
        ),
    )
    summary = report.write_outputs(config, info, ordered, finished=True)
    print(reporting.format_table(summary["grid_rows"]))
    print(reporting.format_table(summary["seed_rows"]))
    if summary["paired_rows"]:
        print(reporting.format_table(summary["paired_rows"]))
    print(f"wrote word_lm.json, word_lm.md, word_lm.png and runs/*.json to {config.out}")
    return summary


if __name__ == "__main__":
    main()
