"""The transformer experiment's results: per-run summaries, the best setting per optimiser,
tables, ``transformer.json`` and ``transformer.png``."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np

from benchmarks import reporting, stats
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
        "setting": run.setting,
        "seed": run.seed,
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


def run_path(out: str | Path, run: RunSpec) -> Path:
    """Where a finished run's summary (with its history) is written."""
    return Path(out) / "runs" / f"{run.name}.json"


def write_run(path: Path, result: dict, protocol: dict) -> None:
    """Writes one finished run's summary and the config's `protocol`, so a rerun can skip it."""
    reporting.write_json(path, result | {"protocol": protocol})


def load_finished(path: Path, protocol: dict) -> dict | None:
    """The run `write_run` wrote at `path` if it finished under the same `protocol`, else None
    (then it is trained again, or resumed from its checkpoint)."""
    return reporting.read_finished(path, protocol)


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
    if result["optimizer"] in ("fromage_adamw", "muon"):
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


def table_rows(results: Sequence[dict], with_seed: bool = False) -> list[dict]:
    """One row per run for the console and README tables (with a seed column if asked)."""
    return [
        {
            "optimizer": r["label"],
            "setting": _setting(r),
            **({"seed": r["seed"]} if with_seed else {}),
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


def _seeds_of(result: dict) -> int:
    return result.get("seed", 0)


def _setting_key(result: dict) -> str:
    return result.get("setting", result["name"])


def across_seeds(results: Sequence[dict]) -> list[dict]:
    """Each setting's final validation loss over its seeds, and its paired gap to AdamW.

    One entry per setting (in the runs' order): the label and setting of its
    runs, its seeds, ``final_validation_loss`` as `stats.mean_interval`, and
    ``minus_adamw``: the per-seed difference to the AdamW setting with the
    lowest mean (same seeds, so same initial params and batches) as
    `stats.paired_difference`, or None without AdamW runs; ``minus_muon`` the
    same against Muon's best setting.
    """
    by_setting: dict[str, list[dict]] = {}
    for result in results:
        by_setting.setdefault(_setting_key(result), []).append(result)
    entries = []
    for key, runs in by_setting.items():
        runs = sorted(runs, key=_seeds_of)
        entries.append(
            {
                "setting": key,
                "optimizer": runs[0]["optimizer"],
                "variant": variant(runs[0]),
                "label": runs[0]["label"],
                "description": _setting(runs[0]),
                "seeds": [_seeds_of(r) for r in runs],
                "final_validation_loss": stats.mean_interval(
                    [r["final_validation_loss"] for r in runs]
                ),
                "per_seed": {_seeds_of(r): r["final_validation_loss"] for r in runs},
            }
        )
    for reference_name in ("adamw", "muon"):
        candidates = [e for e in entries if e["optimizer"] == reference_name]
        reference = (
            min(candidates, key=lambda e: e["final_validation_loss"]["mean"])
            if candidates
            else None
        )
        for entry in entries:
            entry[f"minus_{reference_name}"] = (
                stats.paired_difference(entry["per_seed"], reference["per_seed"])
                if reference is not None and entry is not reference
                else None
            )
    return entries


def best_across_seeds(entries: Sequence[dict]) -> list[dict]:
    """For each optimiser (and variant), the setting of `across_seeds` with the lowest mean."""
    best: dict[str, dict] = {}
    for entry in entries:
        current = best.get(entry["variant"])
        if (
            current is None
            or entry["final_validation_loss"]["mean"] < (current["final_validation_loss"]["mean"])
        ):
            best[entry["variant"]] = entry
    order = [v for name in OPTIMIZER_NAMES for v in (name, f"{name}+momentum")]
    return [best[v] for v in order if v in best]


def seed_rows(entries: Sequence[dict]) -> list[dict]:
    """Rows of the across-seeds table: mean ± 95 % interval, and the paired gaps to AdamW
    (and to Muon, when Muon ran)."""
    with_muon = any(e.get("optimizer") == "muon" for e in entries)

    def gap(entry, key):
        value = entry.get(key)
        return "—" if value is None else stats.format_interval(value, sign=True)

    return [
        {
            "optimizer": e["label"],
            "setting": e["description"],
            "seeds": len(e["seeds"]),
            "final val loss (mean ± 95 %)": stats.format_interval(e["final_validation_loss"]),
            "− AdamW, paired (mean ± 95 %)": gap(e, "minus_adamw"),
            **({"− Muon, paired (mean ± 95 %)": gap(e, "minus_muon")} if with_muon else {}),
            "per seed": ", ".join(f"{v:.3f}" for v in e["final_validation_loss"]["values"]),
        }
        for e in entries
    ]


def _multi_seed(results: Sequence[dict]) -> bool:
    return len({_seeds_of(r) for r in results}) > 1


def print_tables(experiment, results: Sequence[dict], best: Sequence[dict]) -> None:
    config, corpus = experiment.config, experiment.corpus
    print(
        f"\nAll runs ({corpus.name}, {config.steps} steps × {config.batch_size} × "
        f"{experiment.model.config.context_length}):"
    )
    print(reporting.format_table(table_rows(results)))
    if _multi_seed(results):
        print("\nEach setting over its seeds (final validation loss, nats/byte):")
        print(reporting.format_table(seed_rows(across_seeds(results))))
        return
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
    if _multi_seed(results):
        return _multi_seed_markdown(saved)
    best = best_per_optimizer(results)
    seed = config["seeds"][0] if "seeds" in config else config["seed"]
    lines = [
        f"# GPT `{saved['preset']}` preset on {saved['data']['name']}",
        "",
        f"{config['steps']} steps × {config['batch_size']} × {model['context_length']} bytes, "
        f"init {model['init']}, seed {seed}; losses in nats/byte. Written by "
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


def _multi_seed_markdown(saved: dict) -> str:
    config, model, results, data = saved["training"], saved["model"], saved["runs"], saved["data"]
    entries = across_seeds(results)
    best = best_across_seeds(entries)
    seeds = sorted({_seeds_of(r) for r in results})
    lines = [
        f"# GPT `{saved['preset']}` preset on {data['name']}",
        "",
        f"{config['steps']} steps × {config['batch_size']} × {model['context_length']} bytes, "
        f"init {model['init']}, seeds {', '.join(map(str, seeds))}; validation on "
        f"{data['evaluation_bytes']:,} of the {data['validation_bytes']:,} held-out bytes "
        "(the same windows for every run); losses in nats/byte. Intervals: 95 % t "
        "intervals over seeds; the gap to AdamW pairs the runs of one seed (same "
        "initial params, same batches). Written by `benchmarks/transformer/report.py`.",
        "",
        "## Each optimiser at its best setting, over seeds",
        "",
        reporting.format_markdown_table(seed_rows(best)),
        "",
    ]
    for key, name in (("minus_adamw", "AdamW"), ("minus_muon", "Muon")):
        for entry in best:
            gap = entry.get(key)
            if gap is None or (key == "minus_muon" and entry["optimizer"] == "adamw"):
                continue
            finding = {
                "lower": f"lower than {name}'s",
                "higher": f"higher than {name}'s",
                "inside the noise": f"not distinguishable from {name}'s at 95 %",
            }[stats.verdict(gap)]
            lines.append(
                f"- {entry['label']} − {name} (paired, {gap['n']} seeds): "
                f"{stats.format_interval(gap, digits=4, sign=True)} nats/byte: its final "
                f"validation loss is {finding}"
            )
    lines += [
        "",
        "## Every setting, over seeds",
        "",
        reporting.format_markdown_table(seed_rows(entries)),
        "",
        "## Every run",
        "",
        reporting.format_markdown_table(table_rows(results, with_seed=True)),
    ]
    return "\n".join(lines) + "\n"


def _plot_label(result: dict) -> str:
    """The legend entry of a run: its label and setting, or its (shorter) run name."""
    label = f"{result['label']} ({_setting(result)})"
    return label if len(label) <= 60 else f"{LABELS[result['optimizer']]} ({result['name']})"


def write_outputs(experiment, results: Sequence[dict]) -> dict:
    """Prints the tables, writes transformer.json, .md and .png; returns the summary."""
    from benchmarks.transformer.train import evaluation_bytes

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
            "evaluation_bytes": evaluation_bytes(experiment),
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
    if _multi_seed(results):
        summary["across_seeds"] = across_seeds(results)
    out = Path(config.out)
    reporting.write_json(out / "transformer.json", summary)
    (out / "transformer.md").write_text(markdown(reporting.read_json(out / "transformer.json")))
    series = {_plot_label(r): (r["history"]["step"], r["history"]["validation_loss"]) for r in best}
    if _multi_seed(results):  # each best setting's mean curve over its seeds
        series = {}
        for entry in best_across_seeds(summary["across_seeds"]):
            runs = [r for r in results if _setting_key(r) == entry["setting"]]
            curves = [r["history"]["validation_loss"] for r in runs]
            if len({len(c) for c in curves}) == 1:
                label = f"{entry['label']} (mean of {len(runs)} seeds)"
                series[label] = (runs[0]["history"]["step"], np.mean(curves, axis=0).tolist())
    reporting.line_plot(
        out / "transformer.png",
        series,
        xlabel="step",
        ylabel="validation loss (nats/byte)",
        title=f"GPT {config.preset} on {Path(corpus.name).name}: best setting per optimiser",
    )
    return summary
