"""The GAN experiment's results: best rate per optimiser, mean ± std over seeds, Fromage vs
Adam, the table (``gan.md``), ``gan.json``, the score curves and sample grids."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from benchmarks import reporting
from benchmarks.gan.configs import LABELS, Config


def _finite_or_inf(value: float) -> float:
    value = float(value)
    return value if math.isfinite(value) else math.inf


def best_learning_rate(grid_runs: list[dict]) -> float:
    """The grid's learning rate with the lowest final Fréchet distance (diverged runs last)."""
    return min(grid_runs, key=lambda run: _finite_or_inf(run["frechet_distance"]))["learning_rate"]


def _mean_std(values) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summarize(runs: list[dict], optimizers) -> list[dict]:
    """One summary per optimiser: best lr, and the mean ± std over seeds at that lr."""
    summaries = []
    for name in optimizers:
        grid = [r for r in runs if r["optimizer"] == name and r["phase"] == "grid"]
        seeded = [r for r in runs if r["optimizer"] == name and r["phase"] == "seeds"]
        if not seeded:
            continue
        distance_mean, distance_std = _mean_std([r["frechet_distance"] for r in seeded])
        accuracy_mean, accuracy_std = _mean_std([r["generated_accuracy"] for r in seeded])
        per_class = np.mean([r["accuracy_per_class"] for r in seeded], axis=0)
        summaries.append(
            {
                "optimizer": name,
                "learning_rate": seeded[0]["learning_rate"],
                "seeds": [r["seed"] for r in seeded],
                "frechet_distance_mean": distance_mean,
                "frechet_distance_std": distance_std,
                "generated_accuracy_mean": accuracy_mean,
                "generated_accuracy_std": accuracy_std,
                "accuracy_per_class_mean": per_class.tolist(),
                "grid_frechet_distance": {
                    f"{r['learning_rate']:g}": r["frechet_distance"] for r in grid
                },
            }
        )
    return summaries


def fromage_versus_adam(summaries: list[dict]) -> dict | None:
    """Is Fromage's mean distance within one std of Adam's, or lower? (None without both.)"""
    by_name = {s["optimizer"]: s for s in summaries}
    if "fromage" not in by_name or "adam" not in by_name:
        return None
    fromage, adam = by_name["fromage"], by_name["adam"]
    margin = fromage["frechet_distance_mean"] - adam["frechet_distance_mean"]
    return {
        "fromage_minus_adam": margin,
        "adam_std": adam["frechet_distance_std"],
        "fromage_within_one_std_or_better": bool(margin <= adam["frechet_distance_std"]),
    }


def results_table(summaries: list[dict]) -> list[dict]:
    rows = []
    for s in summaries:
        rows.append(
            {
                "optimizer": LABELS[s["optimizer"]],
                "best lr": f"{s['learning_rate']:g}",
                "Fréchet distance ↓": (
                    f"{s['frechet_distance_mean']:.3g} ± {s['frechet_distance_std']:.2g}"
                ),
                "accuracy on generated ↑": (
                    f"{s['generated_accuracy_mean']:.3f} ± {s['generated_accuracy_std']:.3f}"
                ),
                "seeds": len(s["seeds"]),
                "grid (lr: distance, seed 0)": ", ".join(
                    f"{lr}: {d:.3g}" for lr, d in s["grid_frechet_distance"].items()
                ),
            }
        )
    return rows


def write_sample_grid(path, grid: np.ndarray, title: str) -> Path:
    """PNG of `grid` (rows: classes, columns: samples) in grey levels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    num_classes, count, side, _ = grid.shape
    canvas = -np.ones((num_classes * (side + 1) - 1, count * (side + 1) - 1))
    for row in range(num_classes):
        for column in range(count):
            top, left = row * (side + 1), column * (side + 1)
            canvas[top : top + side, left : left + side] = grid[row, column]
    canvas = np.nan_to_num(canvas, nan=1.0)
    fig, ax = plt.subplots(figsize=(count * 0.45 + 0.6, num_classes * 0.45 + 0.6), dpi=100)
    ax.imshow(canvas, cmap="gray_r", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_yticks([r * (side + 1) + side / 2 for r in range(num_classes)])
    ax.set_yticklabels(range(num_classes), fontsize=7)
    ax.set_xticks([])
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_outputs(
    config: Config, experiment_info: dict, runs: list[dict], *, finished: bool
) -> dict:
    """Writes gan.json and gan.md (and, once finished, the plots); returns the summary."""
    out = Path(config.out)
    summaries = summarize(runs, config.optimizers)
    comparison = fromage_versus_adam(summaries)
    public_runs = [{k: v for k, v in r.items() if not k.startswith("_")} for r in runs]
    reporting.write_json(
        out / "gan.json",
        {
            "config": config,
            "finished": finished,
            **experiment_info,
            "summary": summaries,
            "fromage_versus_adam": comparison,
            "runs": public_runs,
        },
    )
    rows = results_table(summaries)
    (out / "gan.md").write_text(markdown(reporting.read_json(out / "gan.json")))
    if finished:
        write_plots(config, runs, summaries)
    return {"rows": rows, "summary": summaries, "fromage_versus_adam": comparison}


def markdown(saved: dict) -> str:
    """gan.md from the saved gan.json."""
    summaries = summarize(saved["runs"], saved["config"]["optimizers"])
    return reporting.format_markdown_table(results_table(summaries)) + "\n"


def write_plots(config: Config, runs: list[dict], summaries: list[dict]) -> None:
    out = Path(config.out)
    distance_series, accuracy_series = {}, {}
    for s in summaries:
        seeded = [r for r in runs if r["optimizer"] == s["optimizer"] and r["phase"] == "seeds"]
        label = f"{LABELS[s['optimizer']]}, lr {s['learning_rate']:g}"
        steps = seeded[0]["steps"]
        distance_series[label] = (
            steps,
            np.mean([r["frechet_distance_per_eval"] for r in seeded], axis=0),
        )
        accuracy_series[label] = (
            steps,
            np.mean([r["generated_accuracy_per_eval"] for r in seeded], axis=0),
        )
        write_sample_grid(
            out / f"samples_{s['optimizer']}.png",
            seeded[0]["_sample_grid"],
            f"{label}, seed {seeded[0]['seed']} (rows: classes)",
        )
    title = f"{config.dataset}, batch {config.batch_size}, mean of {len(config.seeds)} seeds"
    reporting.line_plot(
        out / "gan.png",
        distance_series,
        xlabel="step",
        ylabel="Fréchet distance (classifier features)",
        title=title,
        logy=True,
    )
    reporting.line_plot(
        out / "gan_accuracy.png",
        accuracy_series,
        xlabel="step",
        ylabel="classifier accuracy on generated images",
        title=title,
    )
