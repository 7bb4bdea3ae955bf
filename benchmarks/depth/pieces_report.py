"""The report of a resumable sweep, from whatever pieces have finished: ``depth.json`` (the
metric at every milestone, the deepest depth ≥ 90 %, which pieces are missing), ``depth.md``,
``deepest.png`` (deepest trainable depth vs steps, ours and the authors') and
``accuracy_vs_depth.png`` (train accuracy at the last milestone vs depth)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks import reporting
from benchmarks.depth import milestones, pieces
from benchmarks.depth.configs import (
    AUTHORS_ACCURACY,
    AUTHORS_DEEPEST,
    AUTHORS_MILESTONE_STEPS,
    LABELS,
    TRAINABLE_ACCURACY,
    Config,
)


def collect(config: Config) -> tuple[list[dict], list[str]]:
    """(the finished pieces' results, the names of the pieces not finished yet)."""
    finished, missing = [], []
    for piece in pieces.all_pieces(config):
        result = pieces.load_finished(config, piece)
        if result is None:
            missing.append(piece.name)
        else:
            finished.append(result)
    return finished, missing


def runs_by_key(results: list[dict]) -> dict:
    """{(optimizer, width, depth): every run of every finished piece there (all seeds)}."""
    runs: dict = {}
    for result in results:
        key = (result["optimizer"], result["width"], result["depth"])
        runs.setdefault(key, []).extend(result["runs"])
    return runs


def best_table(config: Config, results: list[dict]) -> dict:
    """{(optimizer, width, depth): {str(step): {"learning_rate", "train_accuracy"} or None}},
    from the runs of the config's first seed (the authors ran one seed; the seed study is
    reported apart, by `seed_rows`)."""
    first_seed = config.seeds[0]
    table = {}
    for key, runs in runs_by_key(results).items():
        ours = [run for run in runs if run["seed"] == first_seed]
        if ours:
            table[key] = milestones.best_at(ours)
    return table


def per_seed_best(runs: list[dict], step: str) -> dict:
    """{seed: the best accuracy over its learning rates at `step`} (the authors' metric per
    seed; a run that did not reach `step` is left out)."""
    best: dict = {}
    for run in runs:
        value = run["accuracy_at"].get(step)
        if value is not None:
            best[run["seed"]] = max(best.get(run["seed"], 0.0), value)
    return best


def seed_rows(config: Config, results: list[dict]) -> list[dict]:
    """One row per (optimizer, width, depth) trained with more than one seed: per milestone,
    how many seeds reach 90 % (each at its best lr) and each seed's accuracy, seed order."""
    rows = []
    for (optimizer, width, depth), runs in sorted(
        runs_by_key(results).items(), key=lambda item: (item[0][1], item[0][0], item[0][2])
    ):
        if len({run["seed"] for run in runs}) < 2:
            continue
        row = {"optimizer": optimizer, "width": width, "depth": depth}
        for step in config.milestone_steps:
            best = per_seed_best(runs, str(step))
            hits = sum(value >= TRAINABLE_ACCURACY for value in best.values())
            values = " ".join(f"{best[seed]:.2f}" for seed in sorted(best))
            row[f"{step:,}"] = f"{hits}/{len(best)}: {values}"
        rows.append(row)
    return rows


def listed_depths(config: Config, optimizer: str, width: int) -> tuple[int, ...]:
    """The depths `optimizer` trains at `width` (its list at the main width, else the study's)."""
    return config.depths_of(optimizer) if width == config.width else config.width_study_depths


def deepest(best: dict, config: Config, optimizer: str, width: int, step: str):
    """(deepest listed depth with every listed shallower depth ≥ 90 %, deepest ≥ 90 % alone),
    over the finished depths; the first is cut at the first unfinished depth."""
    depths = listed_depths(config, optimizer, width)
    contiguous, alone, broken = None, None, False
    for depth in sorted(depths):
        entry = (best.get((optimizer, width, depth)) or {}).get(step)
        ok = entry is not None and entry["train_accuracy"] >= TRAINABLE_ACCURACY
        broken = broken or not ok
        contiguous = depth if not broken else contiguous
        alone = depth if ok else alone
    return contiguous, alone


def _cell(entry) -> str | None:
    if entry is None:
        return None
    return f"{entry['train_accuracy']:.3f} (lr {entry['learning_rate']:g})"


def _widths(config: Config) -> list[int]:
    return [config.width, *config.width_study]


def accuracy_rows(config: Config, best: dict) -> list[dict]:
    """One row per finished (optimizer, width, depth): the best accuracy (and lr) per milestone."""
    rows = []
    for optimizer, width, depth in sorted(best, key=lambda k: (k[1], k[0], k[2])):
        row = {"optimizer": optimizer, "width": width, "depth": depth}
        for step in config.milestone_steps:
            row[f"{step:,}"] = _cell(best[(optimizer, width, depth)].get(str(step)))
        rows.append(row)
    return rows


def median_seed_table(config: Config, results: list[dict]) -> dict:
    """Like `best_table`, but each entry is the median over seeds of every seed's best
    accuracy (a depth trained with one seed: that seed's): ≥ 90 % in most seeds."""
    table: dict = {}
    for key, runs in runs_by_key(results).items():
        table[key] = {}
        for step in config.milestone_steps:
            values = list(per_seed_best(runs, str(step)).values())
            entry = {"train_accuracy": float(np.median(values))} if values else None
            table[key][str(step)] = entry
    return table


def deepest_rows(config: Config, best: dict, median: dict | None = None) -> list[dict]:
    """Per optimiser and width: deepest ≥ 90 % per milestone ("contiguous (alone)") of the
    first seed, and (with `median`, from `median_seed_table`) of the median seed; then the
    authors' (full MNIST, width 784) where they read their logs at the same step."""
    rows = []
    tables = [("deepest ≥ 90 %", best)]
    if median is not None and median != best:
        tables.append(("deepest ≥ 90 %, median seed", median))
    studied = dict(config.width_study_learning_rates)
    for width in _widths(config):
        for optimizer in config.optimizers:
            if width != config.width and optimizer not in studied:
                continue
            rows += [
                _deepest_row(config, table, optimizer, width, label) for label, table in tables
            ]
    for optimizer, values in AUTHORS_DEEPEST.items():
        row = {"optimizer": optimizer, "width": "784 (authors)", "depth": "deepest ≥ 90 %"}
        by_step = dict(zip(AUTHORS_MILESTONE_STEPS, values, strict=True))
        rows.append(row | {f"{s:,}": by_step.get(s) for s in config.milestone_steps})
    return rows


def _deepest_row(config: Config, best: dict, optimizer: str, width: int, label: str) -> dict:
    row = {"optimizer": optimizer, "width": width, "depth": label}
    smallest = min(listed_depths(config, optimizer, width))
    # Below the list only if its smallest depth finished (and missed 90 %).
    below = f"< {smallest}" if (optimizer, width, smallest) in best else "-"
    for step in config.milestone_steps:
        contiguous, alone = deepest(best, config, optimizer, width, str(step))
        text = f"{contiguous or below}"
        row[f"{step:,}"] = text + (f" ({alone} alone)" if alone != contiguous else "")
    return row


def write_pieces_outputs(config: Config) -> dict:
    """Writes depth.json, depth.md and the two figures from the finished pieces."""
    results, missing = collect(config)
    best = best_table(config, results)
    median = median_seed_table(config, results)
    rows = accuracy_rows(config, best) + deepest_rows(config, best, median)
    seeds = seed_rows(config, results)
    out = Path(config.out)
    summary = {
        "partial": bool(missing),
        "finished_pieces": [r["piece"] for r in results],
        "missing_pieces": missing,
        "piece_wall_seconds": {r["piece"]: r["wall_seconds"] for r in results},
        "rows": rows,
        "seed_rows": seeds,
    }
    reporting.write_json(out / "depth.json", {"config": config, **summary})
    (out / "depth.md").write_text(markdown(config, summary))
    partial = (
        f"\npartial: {len(results)} of {len(results) + len(missing)} pieces" if missing else ""
    )
    # The figures show the median seed (the first seed's where a depth has one).
    partial += "\n(the median seed where several ran)"
    write_deepest_plot(config, median, out / "deepest.png", partial)
    write_accuracy_plot(config, median, out / "accuracy_vs_depth.png", partial)
    return summary


def markdown(config: Config, summary: dict) -> str:
    """depth.md from the summary that depth.json holds: the status, then the tables."""
    finished, missing = summary["finished_pieces"], summary["missing_pieces"]
    status = "complete" if not missing else f"PARTIAL: {len(finished)} of "
    status += "" if not missing else f"{len(finished) + len(missing)} pieces finished"
    text = f"Status: {status}. Missing: {', '.join(missing) or 'none'}.\n\n"
    text += f"Seed {config.seeds[0]}, best of the learning rates:\n\n"
    text += reporting.format_markdown_table(summary["rows"]) + "\n"
    if summary["seed_rows"]:
        text += (
            "\nEvery seed (each at its best learning rate): seeds ≥ 90 % / seeds trained, "
            "then each seed's accuracy in seed order:\n\n"
        )
        text += reporting.format_markdown_table(summary["seed_rows"]) + "\n"
    return text


def _axes():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 4.6), dpi=120)
    return plt, fig, ax


def _save(plt, fig, ax, path: Path, title: str) -> None:
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


COLORS = {"sgd": "tab:blue", "adam": "tab:orange", "fromage": "tab:green"}
WIDTH_STYLES = (("-", "o"), (":", "s"), ("-.", "^"))
AUTHORS_LABEL = "{} (authors: MNIST, width 784)"


def write_deepest_plot(config: Config, best: dict, path: Path, note: str = "") -> None:
    """Deepest depth with every listed shallower depth ≥ 90 % against steps: ours solid (a
    hollow ▽ at the smallest listed depth: none of ours reached 90 %), the authors' dashed."""
    plt, fig, ax = _axes()
    steps = list(config.milestone_steps)
    for optimizer in config.optimizers:
        color = COLORS.get(optimizer)
        for width, (style, marker) in zip(_widths(config), WIDTH_STYLES, strict=False):
            depths = listed_depths(config, optimizer, width)
            ours = [deepest(best, config, optimizer, width, str(s))[0] for s in steps]
            if not any((optimizer, width, d) in best for d in depths):
                continue
            label = f"{LABELS[optimizer]}, width {width}"
            ax.plot(steps, [d if d else float("nan") for d in ours], style, c=color,
                    marker=marker, label=label)  # fmt: skip
            below = [s for s, d in zip(steps, ours, strict=True) if d is None]
            below = below if (optimizer, width, min(depths)) in best else []
            ax.plot(below, [min(depths)] * len(below), "v", c=color, mfc="none")
        if optimizer in AUTHORS_DEEPEST:
            ax.plot(AUTHORS_MILESTONE_STEPS, AUTHORS_DEEPEST[optimizer], "--", c=color,
                    marker="x", label=AUTHORS_LABEL.format(optimizer))  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("training steps (batch 250);  ▽: below the smallest depth trained")
    ax.set_ylabel("deepest depth, all listed shallower ≥ 90 %")
    title = f"{config.dataset}: deepest depth ≥ 90 % vs training length (authors dashed)"
    _save(plt, fig, ax, path, title + note)


def write_accuracy_plot(config: Config, best: dict, path: Path, note: str = "") -> None:
    """Train accuracy at the last milestone against depth: ours per width, the authors' dashed."""
    plt, fig, ax = _axes()
    step = str(config.milestone_steps[-1])
    for optimizer in config.optimizers:
        color = COLORS.get(optimizer)
        for width, (style, marker) in zip(_widths(config), WIDTH_STYLES, strict=False):
            points = sorted(
                (d, entry[step]["train_accuracy"])
                for (o, w, d), entry in best.items()
                if (o, w) == (optimizer, width) and entry.get(step)
            )
            if points:
                ax.plot(*zip(*points, strict=True), style, c=color, marker=marker,
                        label=f"{LABELS[optimizer]}, width {width}")  # fmt: skip
        authors = sorted((d, v) for (o, d), v in AUTHORS_ACCURACY.items() if o == optimizer)
        if authors and int(step) in AUTHORS_MILESTONE_STEPS:
            index = AUTHORS_MILESTONE_STEPS.index(int(step))
            ax.plot([d for d, _ in authors], [v[index] for _, v in authors], "--", c=color,
                    marker="x", label=AUTHORS_LABEL.format(optimizer))  # fmt: skip
    ax.axhline(TRAINABLE_ACCURACY, c="grey", lw=0.8)
    ax.set_xlabel("depth (hidden layers)")
    ax.set_ylabel(f"train accuracy, {config.window_steps} steps ending at step {int(step):,}")
    ax.set_ylim(0, 1.02)
    title = f"{config.dataset}: best lr per depth at step {int(step):,} (authors dashed)"
    _save(plt, fig, ax, path, title + note)
