"""The GAN experiment's results: best rate per optimiser, the mean and 95 % t interval over seeds
of the held-out Fréchet distance, the paired Fromage − Adam difference and its verdict, the
robustness of Fromage's result to how its step is computed, the table (``gan.md``),
``gan.json``, the score curves and the sample grids.

The verdict is read off the paired interval only: Fromage is "competitive" with Adam when the
95 % interval of Fromage − Adam over the same seeds contains 0 or lies below it (lower is
better), and not competitive when it lies above 0.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np

from benchmarks import reporting, stats
from benchmarks.gan import runs as runs_lib
from benchmarks.gan.configs import (
    LABELS,
    PAPER_BEST_LEARNING_RATES,
    PAPER_FID_BEFORE_DECAY,
    PAPER_FROMAGE_FID_AFTER_DECAY,
    VARIANTS,
    Config,
)

best_learning_rate = runs_lib.best_learning_rate


def collect(config: Config) -> tuple[list[dict], list[str]]:
    """(every finished run of `config`'s plan, with its "phase"; the names of missing runs)."""
    found, missing = [], []
    for piece in runs_lib.plan(config):
        for run in piece.runs:
            saved = runs_lib.load_finished(config, run)
            if saved is None:
                missing.append(run.name)
            else:
                found.append({**saved, "phase": piece.phase})
    return found, missing


def _interval(values) -> dict:
    return stats.mean_interval([float(v) for v in values])


def _summary(name: str, grid: list[dict], seeded: list[dict]) -> dict:
    distance = _interval([r["frechet_distance"] for r in seeded])
    accuracy = _interval([r["generated_accuracy"] for r in seeded])
    train_distance = _interval([r.get("train_frechet_distance", math.nan) for r in seeded])
    best = seeded[0]["learning_rate"]
    rates = sorted(r["learning_rate"] for r in grid)
    return {
        "optimizer": name,
        "learning_rate": best,
        "seeds": [r["seed"] for r in seeded],
        "frechet_distance": distance,
        "frechet_distance_mean": distance["mean"],
        "frechet_distance_std": 0.0 if len(seeded) == 1 else distance["std"],
        "train_frechet_distance": train_distance,
        "generated_accuracy": accuracy,
        "generated_accuracy_mean": accuracy["mean"],
        "generated_accuracy_std": 0.0 if len(seeded) == 1 else accuracy["std"],
        "accuracy_per_class_mean": np.mean([r["accuracy_per_class"] for r in seeded], 0).tolist(),
        "grid_frechet_distance": {f"{r['learning_rate']:g}": r["frechet_distance"] for r in grid},
        # A best rate at the end of the grid may not be the optimiser's best.
        "best_at_grid_edge": bool(len(rates) > 1 and best in (rates[0], rates[-1])),
    }


def summarize(runs: list[dict], optimizers) -> list[dict]:
    """One summary per optimiser (and variant) with seeds: its best lr and the mean with its
    95 % interval over seeds at that lr."""
    summaries = []
    for name in (*optimizers, *VARIANTS):
        grid = [r for r in runs if r["optimizer"] == name and r["phase"] == "grid"]
        seeded = [
            r for r in runs if r["optimizer"] == name and r["phase"] in ("seeds", "robustness")
        ]
        if seeded:
            summaries.append(_summary(name, grid, sorted(seeded, key=lambda r: r["seed"])))
    return summaries


def _per_seed(summary: dict) -> dict[int, float]:
    return dict(zip(summary["seeds"], summary["frechet_distance"]["values"], strict=True))


def paired(summary: dict, reference: dict) -> dict:
    """`summary` − `reference` in held-out Fréchet distance over the seeds both have."""
    return stats.paired_difference(_per_seed(summary), _per_seed(reference))


def verdict(difference: dict, name: str = "Fromage", reference: str = "Adam") -> tuple[str, str]:
    """("better" | "competitive" | "worse" | "undecided", a sentence) from a paired interval of
    `name` − `reference` (lower distance is better)."""
    text = (
        f"{name} − {reference} = {stats.format_interval(difference, sign=True)} "
        f"(95 % t interval over {difference['n']} paired seeds)"
    )
    if not (math.isfinite(difference["low"]) and math.isfinite(difference["high"])):
        return "undecided", f"No verdict: {text}, no interval."
    if difference["high"] < 0:
        return "better", f"{name} is better than {reference}: {text} lies below 0."
    if difference["low"] > 0:
        return "worse", f"{name} is not competitive with {reference}: {text} lies above 0."
    return "competitive", f"{name} is competitive with {reference}: {text} contains 0."


def fromage_versus_adam(summaries: list[dict]) -> dict | None:
    """The paired Fromage − Adam difference and its verdict (None without both)."""
    by_name = {s["optimizer"]: s for s in summaries}
    if "fromage" not in by_name or "adam" not in by_name:
        return None
    difference = paired(by_name["fromage"], by_name["adam"])
    outcome, sentence = verdict(difference)
    return {
        "difference": difference,
        "verdict": outcome,
        "competitive": outcome in ("better", "competitive"),
        "sentence": sentence,
    }


def robustness(summaries: list[dict]) -> dict | None:
    """Fromage's result computed other ways (`configs.VARIANTS`) against its seed interval."""
    by_name = {s["optimizer"]: s for s in summaries}
    variants = [by_name[v] for v in VARIANTS if v in by_name]
    if "fromage" not in by_name or not variants:
        return None
    base = by_name["fromage"]["frechet_distance"]
    means = [base["mean"], *(v["frechet_distance"]["mean"] for v in variants)]
    spread = max(means) - min(means)
    names = " and as ".join(LABELS[v["optimizer"]] for v in variants)
    if math.isfinite(base["half_width"]):
        inside = all(base["low"] <= v["frechet_distance"]["mean"] <= base["high"] for v in variants)
        sentence = (
            f"Fromage's result {'sits' if inside else 'does not sit'} inside its seed interval "
            f"when computed as {names}: the means spread over {spread:.3f}, and Fromage's "
            f"interval is {base['low']:.3f} to {base['high']:.3f}."
        )
    else:
        inside = None
        sentence = (
            f"No seed interval for Fromage to compare with (fewer than two seeds, or a diverged "
            f"run); computed as {names}, its means spread over {spread:.3f}."
        )
    return {
        "variants": {
            v["optimizer"]: {
                "frechet_distance": v["frechet_distance"],
                "minus_fromage": paired(v, by_name["fromage"]),
            }
            for v in variants
        },
        "spread_of_means": spread,
        "inside_seed_interval": inside,
        "sentence": sentence,
    }


def results_table(summaries: list[dict], *, variants: bool = False) -> list[dict]:
    """The table of the protocol optimisers (or, with `variants`, of Fromage's variants)."""
    by_name = {s["optimizer"]: s for s in summaries}
    rows = []
    for s in summaries:
        if (s["optimizer"] in VARIANTS) != variants:
            continue
        reference = by_name.get("fromage" if variants else "adam")
        gap = "-"
        if reference is not None and reference is not s:
            gap = stats.format_interval(paired(s, reference), sign=True)
        edge = " (grid edge)" if s["best_at_grid_edge"] else ""
        rows.append(
            {
                "optimizer": LABELS[s["optimizer"]],
                "best lr": f"{s['learning_rate']:g}{edge}",
                "held-out Fréchet distance ↓": stats.format_interval(s["frechet_distance"]),
                ("− fromage_optax.fromage" if variants else "− Adam (paired)"): gap,
                "accuracy on generated ↑": stats.format_interval(s["generated_accuracy"]),
                "seeds": len(s["seeds"]),
                **(
                    {}
                    if variants
                    else {
                        "grid (lr: distance, one seed)": ", ".join(
                            f"{lr}: {d:.3g}" for lr, d in s["grid_frechet_distance"].items()
                        )
                    }
                ),
            }
        )
    return rows


def grid_beside_paper(runs: list[dict], optimizers) -> list[dict]:
    """One row per learning rate of the grid (seed 0): our held-out Fréchet distance per
    optimiser beside the authors' CIFAR-10 FID at that rate, each column's best in bold."""

    def cells(values: dict[float, float]) -> dict[float, str]:
        finite = [v for v in values.values() if math.isfinite(v)]
        best = min(finite) if finite else None
        return {lr: (f"**{v:.3g}**" if v == best else f"{v:.3g}") for lr, v in values.items()}

    columns = {}
    for name in optimizers:
        ours = {
            r["learning_rate"]: r["frechet_distance"]
            for r in runs
            if r["optimizer"] == name and r["phase"] == "grid"
        }
        if ours:
            columns[f"{LABELS[name]}, ours"] = cells(ours)
        if name in PAPER_FID_BEFORE_DECAY:
            columns[f"{LABELS[name]}, authors' FID"] = cells(PAPER_FID_BEFORE_DECAY[name])
    rates = sorted({lr for column in columns.values() for lr in column})
    return [
        {"lr": f"{lr:g}", **{head: column.get(lr, "-") for head, column in columns.items()}}
        for lr in rates
    ]


def markdown(saved: dict) -> str:
    """gan.md from the saved gan.json."""
    summaries = summarize(saved["runs"], saved["config"]["optimizers"])
    floor = saved["held_out_floor"]
    parts = [
        reporting.format_markdown_table(results_table(summaries)),
        f"Mean ± half-width of the 95 % t interval over seeds. Floor (as many training images "
        f"as generated ones, {floor['train_images']}, against the {floor['held_out_images']} "
        f"held-out images): {floor['frechet_distance']:.3f}.",
    ]
    comparison = fromage_versus_adam(summaries)
    if comparison is not None:
        parts.append(comparison["sentence"])
    variants = results_table(summaries, variants=True)
    if variants:
        parts += [
            reporting.format_markdown_table(variants),
            f"{robustness(summaries)['sentence']} (p_bound {saved['config']['p_bound']:g}.)",
        ]
    grid = grid_beside_paper(saved["runs"], saved["config"]["optimizers"])
    if grid:
        after = PAPER_FROMAGE_FID_AFTER_DECAY
        parts += [
            reporting.format_markdown_table(grid),
            "The grid on seed 0: our held-out Fréchet distance at the end of training, beside "
            "the authors' FID on CIFAR-10 at epoch 100 of 121, before their rate decay "
            f"(Fromage at 0.01 after the decay: {after['train']} / {after['test']} against the "
            "training / test images). Another data set, network size and score: only the "
            "ranking of the rates compares. Best of each column in bold.",
        ]
    if not saved["finished"]:
        parts.append(f"Unfinished: {len(saved['missing_runs'])} runs to go.")
    return "\n\n".join(parts) + "\n"


def write_outputs(config: Config, experiment_info: dict) -> dict:
    """Collects the finished runs of `config` and writes gan.json, gan.md and the plots;
    returns the rows, summaries, comparison, robustness and what is missing."""
    out = Path(config.out)
    found, missing = collect(config)
    finished = not missing and len(runs_lib.plan(config)) == runs_lib.expected_pieces(config)
    summaries = summarize(found, config.optimizers)
    result = {
        "rows": results_table(summaries),
        "summary": summaries,
        "fromage_versus_adam": fromage_versus_adam(summaries),
        "robustness": robustness(summaries),
        "finished": finished,
        "missing_runs": missing,
    }
    saved = {"config": config, **experiment_info, **result, "runs": found}
    del saved["rows"]
    reporting.write_json(out / "gan.json", saved)
    (out / "gan.md").write_text(markdown(reporting.read_json(out / "gan.json")))
    if summaries:
        write_plots(config, found, summaries, experiment_info["held_out_floor"])
    return result


def _curves(seeded: list[dict], key: str, lowest: float = -math.inf):
    """(steps, mean, low, high) of `key` per eval over the seeded runs, low cut at `lowest`."""
    steps = seeded[0]["steps"]
    per_eval = np.asarray([r[key] for r in seeded], np.float64).T
    intervals = [stats.mean_interval(values) for values in per_eval]
    mean = [i["mean"] for i in intervals]
    low = [
        max(i["low"], lowest) if math.isfinite(i["half_width"]) else i["mean"] for i in intervals
    ]
    high = [i["high"] if math.isfinite(i["half_width"]) else i["mean"] for i in intervals]
    return steps, mean, low, high


def write_plots(config: Config, runs: list[dict], summaries: list[dict], floor: dict) -> None:
    """gan.png and gan_accuracy.png (mean over seeds, shaded 95 % interval) and the samples of
    each optimiser's first seed (samples_<optimizer>.png)."""
    out = Path(config.out)
    series = {"frechet_distance_per_eval": ({}, {}), "generated_accuracy_per_eval": ({}, {})}
    for s in summaries:
        seeded = [r for r in runs if r["optimizer"] == s["optimizer"] and r["phase"] != "grid"]
        seeded.sort(key=lambda r: r["seed"])
        label = f"{LABELS[s['optimizer']]}, lr {s['learning_rate']:g}"
        for key, (lines, bands) in series.items():
            # Distances on a log axis: a band reaching below 0 is drawn down to half the floor.
            lowest = floor["frechet_distance"] / 2 if key.startswith("frechet") else -math.inf
            steps, mean, low, high = _curves(seeded, key, lowest)
            lines[label], bands[label] = (steps, mean), (low, high)
        samples = runs_lib.run_path(config, runs_lib.Run(**_run_fields(seeded[0])))
        if samples.with_suffix(".png").exists() and s["optimizer"] in PAPER_BEST_LEARNING_RATES:
            shutil.copyfile(samples.with_suffix(".png"), out / f"samples_{s['optimizer']}.png")
    seeds = max(len(s["seeds"]) for s in summaries)
    title = f"{config.dataset}, batch {config.batch_size}, up to {seeds} seeds (95 % interval)"
    lines, bands = series["frechet_distance_per_eval"]
    reporting.line_plot(
        out / "gan.png",
        lines,
        xlabel="step",
        ylabel="Fréchet distance to held-out images",
        title=title,
        logy=True,
        bands=bands,
        levels={"floor: training vs held-out images": floor["frechet_distance"]},
    )
    lines, bands = series["generated_accuracy_per_eval"]
    reporting.line_plot(
        out / "gan_accuracy.png",
        lines,
        xlabel="step",
        ylabel="classifier accuracy on generated images",
        title=title,
        bands=bands,
    )


def _run_fields(result: dict) -> dict:
    return {key: result[key] for key in ("optimizer", "learning_rate", "seed")}
