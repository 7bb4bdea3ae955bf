"""The transformer experiment's results: per-run summaries, the best setting per optimiser,
tables, ``transformer.json`` and ``transformer.png``."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np

from benchmarks import reporting
from benchmarks.models import gpt
from benchmarks.transformer.configs import LABELS, OPTIMIZER_NAMES, RunSpec


def summarise_run(run: RunSpec, history: dict, *, tokens_per_step: int) -> dict:
    """Best and final losses, perplexities and speed of a run from its history."""
    validation = np.array(history["validation_loss"], dtype=float)
    finite = np.where(np.isfinite(validation), validation, np.inf)
    best_index = int(np.argmin(finite))
    best = float(validation[best_index]) if np.isfinite(finite[best_index]) else math.nan
    final_validation = float(validation[-1])
    final_train = float(history["train_loss"][-1])
    return {
        "name": run.name,
        "optimizer": run.optimizer,
        "label": LABELS[run.optimizer]
        + ("" if run.momentum is None else f" + trace({run.momentum:g})"),
        "learning_rate": run.learning_rate,
        "p_bound": run.p_bound,
        "schedule": run.schedule,
        "momentum": run.momentum,
        "weight_decay": run.weight_decay if run.optimizer in ("adamw", "fromage_adamw") else None,
        "adamw_learning_rate": run.adamw_learning_rate,
        "norms": run.norms if run.optimizer == "fromage_adamw" else None,
        "selection": run.selection if run.optimizer == "fromage_adamw" else None,
        "steps": history["step"][-1],
        "diverged": history["diverged"] or not math.isfinite(final_validation),
        "best_validation_loss": best,
        "best_step": history["step"][best_index],
        "best_validation_perplexity": math.exp(best) if math.isfinite(best) else math.nan,
        "final_validation_loss": final_validation,
        "final_train_loss": final_train,
        "final_validation_perplexity": _perplexity(final_validation),
        "final_train_perplexity": _perplexity(final_train),
        "wall_time_s": history["wall_time_s"],
        "train_time_s": history["train_time_s"],
        "compile_time_s": history["compile_time_s"],
        "tokens_per_s": history["timed_steps"]
        * tokens_per_step
        / max(history["train_time_s"], 1e-9),
        "history": history,
    }


def _perplexity(loss: float) -> float:
    return math.exp(loss) if math.isfinite(loss) and loss < 700 else math.inf


def variant(result: dict) -> str:
    """The optimiser's name, with "+momentum" for Fromage fed a gradient average.

    The recipe's momentum is one of its searched settings, not a variant.
    """
    if result["optimizer"] == "fromage" and result.get("momentum") is not None:
        return f"{result['optimizer']}+momentum"
    return result["optimizer"]


def best_per_optimizer(results: Sequence[dict]) -> list[dict]:
    """For each optimiser (and variant), its run with the lowest best validation loss."""
    best: dict[str, dict] = {}
    for result in results:
        current = best.get(variant(result))
        score = result["best_validation_loss"]
        if current is None or (
            math.isfinite(score)
            and not score >= current["best_validation_loss"]  # NaN-safe comparison
        ):
            best[variant(result)] = result
    order = [v for name in OPTIMIZER_NAMES for v in (name, f"{name}+momentum")]
    return [best[v] for v in order if v in best]


def _setting(result: dict) -> str:
    setting = f"lr={result['learning_rate']:g}"
    if result["optimizer"] == "fromage_adamw":
        setting += f", AdamW lr={result['adamw_learning_rate']:g}"
    if result["optimizer"] in ("fromage", "fromage_adamw"):
        setting += f", p_bound={result['p_bound']}"
        if result.get("momentum") is not None:
            setting += f", momentum={result['momentum']:g}"
    if result["optimizer"] == "fromage_adamw":
        setting += f", norms per {result['norms']}, Fromage on {result['selection']}"
        if result.get("weight_decay"):
            setting += f", AdamW weight decay={result['weight_decay']:g}"
    if result["optimizer"] == "adamw" and result.get("weight_decay", 0.1) != 0.1:
        setting += f", weight decay={result['weight_decay']:g}"
    if result["schedule"] == "cosine":
        setting += " (warm-up+cosine)"
    return setting


def table_rows(results: Sequence[dict]) -> list[dict]:
    """One row per run for the console and README tables."""
    return [
        {
            "optimizer": r["label"],
            "setting": _setting(r),
            "best val loss": r["best_validation_loss"],
            "best val ppl": r["best_validation_perplexity"],
            "final val loss": r["final_validation_loss"],
            "final train loss": r["final_train_loss"],
            "wall s": r["wall_time_s"],
            "tokens/s": r["tokens_per_s"],
            "max ΔW/W": r["history"]["max_relative_update_norm"][-1],
            **_scale_columns(r["history"]),
        }
        for r in results
    ]


def _scale_columns(history: dict) -> dict:
    """Final ‖W‖/‖W₀‖ (kernels: geometric mean; token embedding) and logit RMS, if recorded."""
    if "final_weight_norm_ratios" not in history:
        return {}
    ratios = history["final_weight_norm_ratios"]
    kernels = [ratio for path, ratio in ratios.items() if "kernel" in path]
    embedding = [ratio for path, ratio in ratios.items() if "token_embedding" in path]
    return {
        "kernel ‖W‖/‖W₀‖": float(np.exp(np.mean(np.log(kernels)))) if kernels else math.nan,
        "embedding ‖W‖/‖W₀‖": embedding[0] if embedding else math.nan,
        "logit rms": history["final_logit_rms"],
    }


def gap_to_adamw(best: Sequence[dict], name: str) -> float | None:
    """Best validation loss of variant `name` minus AdamW's (None without both)."""
    by_name = {variant(r): r for r in best}
    if name not in by_name or "adamw" not in by_name:
        return None
    return by_name[name]["best_validation_loss"] - by_name["adamw"]["best_validation_loss"]


def print_tables(experiment, results: Sequence[dict], best: Sequence[dict]) -> None:
    config, corpus = experiment.config, experiment.corpus
    print(
        f"\nAll runs ({corpus.name}, {config.steps} steps × {config.batch_size} × "
        f"{experiment.model.config.context_length}):"
    )
    print(reporting.format_table(table_rows(results)))
    print("\nEach optimiser at its best setting:")
    print(reporting.format_table(table_rows(best)))
    print("\n" + reporting.format_markdown_table(table_rows(best)))
    gap, momentum_gap = gap_to_adamw(best, "fromage"), gap_to_adamw(best, "fromage+momentum")
    recipe_gap = gap_to_adamw(best, "fromage_adamw")
    if gap is not None:
        print(f"\nFromage best − AdamW best validation loss: {gap:+.4f} nats/byte")
    if recipe_gap is not None:
        print(f"Fromage+AdamW recipe best − AdamW best validation loss: {recipe_gap:+.4f}")
    if momentum_gap is not None:
        print(f"Fromage+momentum best − AdamW best validation loss: {momentum_gap:+.4f} nats/byte")


def markdown(saved: dict) -> str:
    """transformer.md from the saved transformer.json: every run and each optimiser's best, as
    markdown tables, and the gaps."""
    config, model, results = saved["training"], saved["model"], saved["runs"]
    best = best_per_optimizer(results)
    lines = [
        f"# GPT `{saved['preset']}` preset on {saved['data']['name']}",
        "",
        f"{config['steps']} steps × {config['batch_size']} × {model['context_length']} bytes, "
        f"init {model['init']}, seed {config['seed']}; losses in nats/byte. Written by "
        "`benchmarks/transformer/report.py`.",
        "",
        "## Every run",
        "",
        reporting.format_markdown_table(table_rows(results)),
        "",
        "## Each optimiser at its best setting",
        "",
        reporting.format_markdown_table(table_rows(best)),
        "",
    ]
    for name in ("fromage", "fromage+momentum", "fromage_adamw"):
        gap = gap_to_adamw(best, name)
        if gap is not None:
            lines.append(f"- best {name} − best adamw validation loss: {gap:+.4f} nats/byte")
    return "\n".join(lines) + "\n"


def _plot_label(result: dict) -> str:
    """The legend entry of a run: its label and setting, or its (shorter) run name."""
    label = f"{result['label']} ({_setting(result)})"
    return label if len(label) <= 60 else f"{LABELS[result['optimizer']]} ({result['name']})"


def write_outputs(experiment, results: Sequence[dict]) -> dict:
    """Prints the tables, writes transformer.json, .md and .png; returns the summary."""
    config, corpus = experiment.config, experiment.corpus
    best = best_per_optimizer(results)
    print_tables(experiment, results, best)
    summary = {
        "benchmark": "transformer",
        "preset": config.preset,
        "model": dataclasses.asdict(experiment.model.config),
        "parameters": gpt.parameter_count(experiment.initial_params),
        "training": dataclasses.asdict(config),
        "data": {
            "name": corpus.name,
            "train_bytes": len(corpus.train),
            "validation_bytes": len(corpus.validation),
            "unit": "nats per byte",
        },
        "device": str(jax.devices()[0]),
        "jax_version": jax.__version__,
        "runs": list(results),
        "best": [{k: v for k, v in r.items() if k != "history"} for r in best],
        "fromage_minus_adamw_best_validation_loss": gap_to_adamw(best, "fromage"),
        "fromage_momentum_minus_adamw_best_validation_loss": gap_to_adamw(best, "fromage+momentum"),
        "fromage_adamw_minus_adamw_best_validation_loss": gap_to_adamw(best, "fromage_adamw"),
    }
    out = Path(config.out)
    reporting.write_json(out / "transformer.json", summary)
    (out / "transformer.md").write_text(markdown(reporting.read_json(out / "transformer.json")))
    series = {_plot_label(r): (r["history"]["step"], r["history"]["validation_loss"]) for r in best}
    reporting.line_plot(
        out / "transformer.png",
        series,
        xlabel="step",
        ylabel="validation loss (nats/byte)",
        title=f"GPT {config.preset} on {Path(corpus.name).name}: best setting per optimiser",
    )
    return summary
