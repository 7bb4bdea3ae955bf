"""The depth experiment's results: best learning rate per (optimiser, depth), the deepest
trainable net, the table (``depth.md``), ``depth.json`` and the plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmarks import cli, reporting
from benchmarks.depth.configs import (
    LABELS,
    PAPER_DEEPEST_TRAINABLE,
    TRAINABLE_ACCURACY,
    Config,
)


def _floats(values) -> np.ndarray:
    # depth.json stores NaN and Inf as strings ("nan", "inf"); float() reads both forms.
    return np.asarray([float(v) for v in values], np.float64)


def best_runs(runs: list[dict]) -> dict:
    """{(optimizer, depth): summary at the learning rate with the best seed-mean accuracy}."""
    by_setting: dict = {}
    for run in runs:
        key = (run["optimizer"], run["depth"], run["learning_rate"])
        by_setting.setdefault(key, []).append(run)
    best: dict = {}
    for (optimizer, depth, lr), group in by_setting.items():
        accuracy = float(np.mean(_floats([r["train_accuracy"] for r in group])))
        accuracy = accuracy if np.isfinite(accuracy) else 0.0
        if (optimizer, depth) not in best or accuracy > best[(optimizer, depth)]["train_accuracy"]:
            # Relative update sizes averaged over all epochs (and seeds) of the run.
            run_mean = lambda key: float(np.mean([np.mean(_floats(r[key])) for r in group]))  # noqa: B023
            best[(optimizer, depth)] = {
                "optimizer": optimizer,
                "depth": depth,
                "learning_rate": lr,
                "train_accuracy": accuracy,
                "mean_relative_update_norm": run_mean("mean_relative_update_norm_per_epoch"),
                "max_relative_update_norm": run_mean("max_relative_update_norm_per_epoch"),
            }
    return best


def deepest_trainable(best: dict, optimizers, depths) -> dict:
    """{optimizer: the deepest depth whose best accuracy is ≥ 90 % (None if none)}."""
    result = {}
    for optimizer in optimizers:
        trainable = [
            d
            for d in depths
            if (optimizer, d) in best
            and best[(optimizer, d)]["train_accuracy"] >= TRAINABLE_ACCURACY
        ]
        result[optimizer] = max(trainable) if trainable else None
    return result


def results_table(best: dict, optimizers, depths) -> list[dict]:
    """One row per depth: best train accuracy (and its lr) per optimiser, then the summary."""
    rows = []
    for depth in depths:
        row: dict = {"depth": depth}
        for optimizer in optimizers:
            entry = best.get((optimizer, depth))
            row[optimizer] = (
                None
                if entry is None
                else f"{entry['train_accuracy']:.3f} (lr {entry['learning_rate']:g})"
            )
        rows.append(row)
    deepest = deepest_trainable(best, optimizers, depths)
    rows.append({"depth": "deepest ≥ 90 %", **{o: deepest[o] for o in optimizers}})
    rows.append(
        {"depth": "paper (MNIST, W=784)", **{o: PAPER_DEEPEST_TRAINABLE.get(o) for o in optimizers}}
    )
    return rows


def write_outputs(config: Config, runs: list[dict], *, finished: bool, plots: bool = True) -> dict:
    """Writes depth.json, depth.md and (if `plots`) the two plots; returns the summary."""
    optimizers, depths = config.optimizers, sorted({r["depth"] for r in runs})
    best = best_runs(runs)
    summary = {
        "deepest_trainable": deepest_trainable(best, optimizers, depths),
        "paper_deepest_trainable": PAPER_DEEPEST_TRAINABLE,
        "best": list(best.values()),
    }
    out = Path(config.out)
    reporting.write_json(
        out / "depth.json",
        {"config": config, "finished": finished, "summary": summary, "runs": runs},
    )
    rows = results_table(best, optimizers, depths)
    (out / "depth.md").write_text(markdown(json.loads((out / "depth.json").read_text())))
    if plots:
        write_plots(config, best, optimizers, depths)
        write_trust_over_training_plot(config, runs, best, optimizers, depths)
    return {"rows": rows, **summary}


def write_plots(config, best: dict, optimizers, depths) -> None:
    """depth.png (accuracy vs depth) and relative_trust.png, at each optimiser's best lr."""
    out = Path(config.out)
    accuracy_series, trust_series = {}, {}
    for optimizer in optimizers:
        trained = [d for d in depths if (optimizer, d) in best]
        if not trained:
            continue
        label = LABELS[optimizer]
        accuracy_series[label] = (
            trained,
            [best[(optimizer, d)]["train_accuracy"] for d in trained],
        )
        for statistic in ("max", "mean"):
            trust_series[f"{label}, {statistic} over layers"] = (
                trained,
                [best[(optimizer, d)][f"{statistic}_relative_update_norm"] for d in trained],
            )
    title = f"{config.dataset}, width {config.width}, {config.epochs} epochs, best of 3 lrs"
    reporting.line_plot(
        out / "depth.png",
        accuracy_series,
        xlabel="depth (hidden layers)",
        ylabel="train accuracy, last epoch",
        title=title,
    )
    reporting.line_plot(
        out / "relative_trust.png",
        trust_series,
        xlabel="depth (hidden layers)",
        ylabel="‖ΔW‖/‖W‖ per step (run average)",
        title=title + " (at the best lr)",
        logy=True,
    )


def trust_plot_depth(depths) -> int:
    """The depth shown over training: 16 layers (deep, yet trainable here) or the nearest run."""
    return min(depths, key=lambda d: (abs(d - 16), -d))


def write_trust_over_training_plot(config, runs, best: dict, optimizers, depths) -> None:
    """deep_relative_trust.png: ∏(1 + ‖ΔW‖/‖W‖) − 1 per epoch at one deep depth, best lr each."""
    depth = trust_plot_depth(depths)
    series = {}
    for optimizer in optimizers:
        if (optimizer, depth) not in best:
            continue
        lr = best[(optimizer, depth)]["learning_rate"]
        group = [
            r
            for r in runs
            if (r["optimizer"], r["depth"], r["learning_rate"]) == (optimizer, depth, lr)
        ]
        per_epoch = np.mean([_floats(r["deep_relative_trust_per_epoch"]) for r in group], axis=0)
        label = f"{LABELS[optimizer]} (lr {lr:g})"
        series[label] = (list(range(1, len(per_epoch) + 1)), [float(v) for v in per_epoch])
    reporting.line_plot(
        Path(config.out) / "deep_relative_trust.png",
        series,
        xlabel="epoch",
        ylabel="deep relative trust ∏(1 + ‖ΔW‖/‖W‖) − 1 (epoch mean)",
        title=f"{config.dataset}, {depth} hidden layers of width {config.width}, best lr",
        logy=True,
    )


def markdown(saved: dict) -> str:
    """depth.md from the saved depth.json (a plain sweep's or a resumable sweep's)."""
    config = cli.from_json(Config, saved["config"])
    if config.pieces:
        from benchmarks.depth import pieces_report

        return pieces_report.markdown(config, saved)
    best = best_runs(saved["runs"])
    depths = sorted({r["depth"] for r in saved["runs"]})
    return reporting.format_markdown_table(results_table(best, config.optimizers, depths)) + "\n"


def report_only(out) -> dict:
    """Rebuilds depth.md, the plots and the printed table from `out`/depth.json (and, for a
    resumable sweep, from the finished pieces in `out`/pieces)."""
    saved = json.loads((Path(out) / "depth.json").read_text())
    config = cli.from_json(Config, {**saved["config"], "out": str(out)})
    if config.pieces:
        from benchmarks.depth import pieces_report

        summary = pieces_report.write_pieces_outputs(config)
        print(reporting.format_table(summary["rows"]))
        return summary
    summary = write_outputs(config, saved["runs"], finished=saved["finished"])
    print(reporting.format_table(summary["rows"]))
    return summary
