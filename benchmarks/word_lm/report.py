"""The word-level LM experiment's results: one JSON per finished run, the best setting per
optimiser, the seed statistics, ``word_lm.json``, ``word_lm.md`` and ``word_lm.png``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np

from benchmarks import cli, reporting, stats, word_data
from benchmarks.word_lm.configs import (
    AUTHORS_EPOCH10_TRAIN_PERPLEXITY,
    OPTIMIZER_NAMES,
    Config,
    RunSpec,
)


def run_path(config: Config, run: RunSpec) -> Path:
    """Where the result of `run` is written when it finishes."""
    return Path(config.out) / "runs" / f"{run.name}.json"


def write_run(config: Config, result: dict) -> None:
    """Writes one finished run's result (its curves, perplexities and timing)."""
    spec = RunSpec(result["optimizer"], result["learning_rate"], result["p_bound"], result["seed"])
    reporting.write_json(run_path(config, spec), result)


def load_finished(config: Config, run: RunSpec) -> dict | None:
    """The saved result of `run` if it finished under the same protocol, else None."""
    return reporting.read_finished(run_path(config, run), config.protocol())


def _float(value) -> float:
    # The JSON files store NaN and Inf as strings; float() reads both forms.
    return math.nan if value is None else float(value)


def best_per_optimizer(results: Sequence[dict], seed: int) -> list[dict]:
    """Per optimiser, its run at `seed` with the lowest best validation perplexity."""
    best: dict[str, dict] = {}
    for result in results:
        if result["seed"] != seed:
            continue
        score = _float(result["best_validation_perplexity"])
        current = best.get(result["optimizer"])
        if current is None or (
            math.isfinite(score) and not score >= _float(current["best_validation_perplexity"])
        ):
            best[result["optimizer"]] = result
    return [best[name] for name in OPTIMIZER_NAMES if name in best]


def _setting(result: dict) -> str:
    setting = f"lr {result['learning_rate']:g}"
    if result["optimizer"] == "fromage":
        setting += f", p_bound {result['p_bound']}"
    return setting


def authors_train_perplexity(result: dict) -> float | None:
    """The authors' epoch-10 training perplexity at this setting, if they logged one."""
    key = (result["optimizer"], result["learning_rate"], result["p_bound"])
    return AUTHORS_EPOCH10_TRAIN_PERPLEXITY.get(key)


def grid_rows(results: Sequence[dict], seed: int, decay_epoch: int) -> list[dict]:
    """One row per setting at `seed`: our perplexities beside the authors' epoch-10 train one."""
    return [
        {
            "optimizer": r["label"],
            "setting": _setting(r),
            "best val ppl": _float(r["best_validation_perplexity"]),
            "best epoch": r["best_epoch"],
            "test ppl (best val)": _float(r["test_perplexity"]),
            f"train ppl ep {decay_epoch}": _float(r["train_perplexity_at_decay_epoch"]),
            "final train ppl": _float(r["final_train_perplexity"]),
            "authors' train ppl ep 10 (WT2)": authors_train_perplexity(r),
        }
        for r in results
        if r["seed"] == seed
    ]


def _interval(values: Sequence) -> str:
    return stats.format_interval(stats.mean_interval([_float(v) for v in values]), digits=1)


def _seeded(results: Sequence[dict], chosen: dict, seeds: Sequence[int]) -> list[dict]:
    runs = [r for r in results if r["setting"] == chosen["setting"] and r["seed"] in seeds]
    return sorted(runs, key=lambda r: r["seed"])


def seed_rows(results: Sequence[dict], best: Sequence[dict], seeds: Sequence[int]) -> list[dict]:
    """Per optimiser's best setting: the mean ± 95 % t interval over the seeds that finished."""
    rows = []
    for chosen in best:
        runs = _seeded(results, chosen, seeds)
        rows.append(
            {
                "optimizer": chosen["label"],
                "setting": _setting(chosen),
                "seeds": ",".join(str(r["seed"]) for r in runs),
                "best val ppl": _interval([r["best_validation_perplexity"] for r in runs]),
                "test ppl (best val)": _interval([r["test_perplexity"] for r in runs]),
                f"train ppl ep {chosen['decay_epoch']}": _interval(
                    [r["train_perplexity_at_decay_epoch"] for r in runs]
                ),
                "authors' train ppl ep 10 (WT2)": authors_train_perplexity(chosen),
            }
        )
    return rows


def paired_rows(results: Sequence[dict], best: Sequence[dict], seeds: Sequence[int]) -> list[dict]:
    """Each pair of best settings: the per-seed difference (same seed: same init, same
    batches and dropout) of validation and test perplexity, mean ± 95 % t interval."""
    rows = []
    for i, first in enumerate(best):
        for second in best[i + 1 :]:
            a, b = _seeded(results, first, seeds), _seeded(results, second, seeds)
            row = {"difference": f"{first['optimizer']} − {second['optimizer']}"}
            for column, key in (
                ("best val ppl", "best_validation_perplexity"),
                ("test ppl (best val)", "test_perplexity"),
            ):
                paired = stats.paired_difference(
                    {r["seed"]: _float(r[key]) for r in a}, {r["seed"]: _float(r[key]) for r in b}
                )
                row["seeds"] = ",".join(map(str, paired["seeds"]))
                row[column] = stats.format_interval(paired, digits=1, sign=True)
                row[f"{column}: first is"] = stats.verdict(paired)
            rows.append(row)
    return rows


def _timing(results: Sequence[dict]) -> dict:
    """Wall time of every trained group (its runs share it), its epochs after the first (the
    first may include compiling), and the total."""
    groups = {" ".join(r["group"]): r for r in results}
    return {
        "group_seconds": {name: r["group_seconds"] for name, r in groups.items()},
        "group_seconds_per_later_epoch": {
            name: _later_epochs_mean(r) for name, r in groups.items()
        },
        "total_seconds": float(sum(r["group_seconds"] for r in groups.values())),
    }


def _later_epochs_mean(result: dict) -> float:
    seconds = np.add(
        result["group_train_seconds_per_epoch"], result["group_evaluation_seconds_per_epoch"]
    )
    return float(seconds[1:].mean() if len(seconds) > 1 else seconds[0])


def corpus_info(data) -> dict:
    """Sizes of the corpus and its windows (`benchmarks.word_lm.train.Data`) and each split's
    ``<unk>`` share, for the report."""
    corpus = data.corpus
    return {
        "name": corpus.name,
        "vocabulary_size": len(corpus.vocabulary),
        "unknown_rates": word_data.unknown_rates(corpus),
        "train_tokens": len(corpus.train),
        "validation_tokens": len(corpus.validation),
        "test_tokens": len(corpus.test),
        "train_steps_per_epoch": int(data.train.inputs.shape[0]),
    }


def markdown(saved: dict) -> str:
    """word_lm.md from the saved word_lm.json."""
    config, info = cli.from_json(Config, saved["config"]), saved["data"]
    grid, seeds, timing = saved["grid_rows"], saved["seed_rows"], saved["timing"]
    paired = saved.get("paired_rows")
    spread = "mean ± 95 % t interval" if paired is not None else "mean ± std"
    unknown = info.get("unknown_rates")
    vocabulary_rule = (
        f" (training words seen ≥ {config.min_count} times; `<unk>` share: "
        + ", ".join(f"{split} {rate:.1%}" for split, rate in unknown.items())
        + ")"
        if unknown is not None
        else ""
    )
    pairs = (
        [
            "## Paired differences of the best settings (same seeds), mean ± 95 % t interval",
            "",
            reporting.format_markdown_table(paired),
            "",
        ]
        if paired
        else []
    )
    return "\n".join(
        [
            f"# Word-level transformer LM, preset `{config.preset}`",
            "",
            f"Corpus {info['name']}: vocabulary {info['vocabulary_size']} words{vocabulary_rule}, "
            f"{info['train_tokens']} training tokens ({info['train_steps_per_epoch']} steps of "
            f"{config.batch_size} × {config.bptt} per epoch), {info['validation_tokens']} "
            f"validation and {info['test_tokens']} test tokens. Model: {config.num_layers} "
            f"layers, width {config.width}, {config.num_heads} heads, feed-forward "
            f"{config.hidden}, dropout {config.dropout}. {config.epochs} epochs, lr ÷ "
            f"{config.decay_factor:g} after epoch {config.decay_after_epoch}. Test perplexity "
            "at the best-validation epoch's parameters; train perplexity is the mean training "
            "loss (dropout on) over the epoch's steps. The authors' numbers are WikiText-2.",
            "",
            f"## Every setting, seed {config.seeds[0]}",
            "",
            reporting.format_markdown_table(grid),
            "",
            f"## Each optimiser's best setting (best validation), over seeds ({spread})",
            "",
            reporting.format_markdown_table(seeds),
            "",
            *pairs,
            f"Total training time {timing['total_seconds']:.0f} s on {saved['device']}.",
            "",
        ]
    )


def write_outputs(config: Config, info: dict, results: Sequence[dict], finished: bool) -> dict:
    """Writes word_lm.json, word_lm.md and word_lm.png of the finished `results`."""
    best = best_per_optimizer(results, config.seeds[0])
    decay_epoch = min(config.decay_after_epoch, config.epochs) or 1
    grid = grid_rows(results, config.seeds[0], decay_epoch)
    seeds = seed_rows(results, best, config.seeds)
    paired = paired_rows(results, best, config.seeds)
    timing = _timing(results)
    summary = {
        "benchmark": "word_lm",
        "preset": config.preset,
        "finished": finished,
        "config": config,
        "data": info,
        "device": str(jax.devices()[0]),
        "jax_version": jax.__version__,
        "timing": timing,
        "grid_rows": grid,
        "seed_rows": seeds,
        "paired_rows": paired,
        "best": [r["name"] for r in best],
        "runs": [{k: v for k, v in r.items() if k != "protocol"} for r in results],
    }
    out = Path(config.out)
    reporting.write_json(out / "word_lm.json", summary)
    (out / "word_lm.md").write_text(markdown(reporting.read_json(out / "word_lm.json")))
    series = {
        f"{r['label']} ({_setting(r)})": (r["epochs"], _validation_curve(r))
        for r in results
        if r["seed"] == config.seeds[0]
    }
    if series:
        reporting.line_plot(
            out / "word_lm.png",
            series,
            xlabel="epoch",
            ylabel="validation perplexity",
            title=f"Word-level transformer LM ({config.preset}) on {Path(info['name']).name}",
            logy=True,
        )
    return summary


def _validation_curve(result: dict) -> list[float]:
    # Diverged epochs (inf or NaN) are left out of the plot rather than drawn off the scale.
    values = [_float(v) for v in result["validation_perplexity_per_epoch"]]
    return [v if math.isfinite(v) else math.nan for v in values]
