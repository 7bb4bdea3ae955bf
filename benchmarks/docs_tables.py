"""The Markdown tables under docs/results/, rebuilt from the committed JSON beside them.

Every experiment's report writes its tables (``*.md``) next to its JSON when it runs; the docs
pages include those files. This module lists every committed result and calls the same report
function on its JSON, and builds ``docs/results/headline.md`` (the README's headline table, one
row per experiment) from the same JSON::

  python -m benchmarks.docs_tables           # rewrite every table from the committed JSON
  python -m benchmarks.docs_tables --check   # only say which tables differ (exit status 1)
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from benchmarks import comparison, reporting, stats
from benchmarks.depth import report as depth_report
from benchmarks.depth import signal
from benchmarks.gan import report as gan_report
from benchmarks.step_speed import against_commit
from benchmarks.step_speed import report as step_speed_report
from benchmarks.transformer import report as transformer_report
from benchmarks.word_lm import report as word_lm_report

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"

# (JSON under docs/results/, the report function that turns it into its Markdown file).
_WRITERS: dict[str, Callable[[dict], str]] = {
    "mlp/mlp_linen.json": comparison.markdown,
    "depth/depth.json": depth_report.markdown,
    "depth/paper_schedule/depth.json": depth_report.markdown,
    "depth/long/depth.json": depth_report.markdown,
    "depth/long_muon/depth.json": depth_report.markdown,
    "depth/signal/signal.json": signal.markdown,
    "word_lm/pydoc/word_lm.json": word_lm_report.markdown,
    "word_lm/docstrings/word_lm.json": word_lm_report.markdown,
    "transformer/transformer.json": transformer_report.markdown,
    "transformer/lecun_init/transformer.json": transformer_report.markdown,
    "transformer/recipe/transformer.json": transformer_report.markdown,
    "transformer/recipe/gpt2_init/transformer.json": transformer_report.markdown,
    "transformer/recipe_pydoc/transformer.json": transformer_report.markdown,
    "transformer/recipe_docstrings/transformer.json": transformer_report.markdown,
    "transformer/muon_tuning/transformer.json": transformer_report.markdown,
    "gan/cpu/gan.json": gan_report.markdown,
    "step_speed/step_speed.json": step_speed_report.markdown,
    "step_speed/design_study/step_speed.json": step_speed_report.markdown,
    "step_speed/compile/before/step_speed.json": step_speed_report.markdown,
    "step_speed/compile/after/step_speed.json": step_speed_report.markdown,
    "step_speed/against_commit/against_commit.json": against_commit.markdown,
}


def _load(results: Path, name: str) -> dict:
    return reporting.read_json(results / name)


def _mlp_row(results: Path) -> dict:
    name = "mlp/mlp_linen.json"
    by_name = {r["optimizer"]: r for r in _load(results, name)["results"]}
    fromage, adam = by_name["fromage"], by_name["adam"]
    return {
        "experiment": "[MLP on digits (main job)](docs/experiments/mlp.md)",
        "claim": "Fromage at lr 0.01 trains a Flax MLP close to Adam at 1e-3",
        "measured": (
            f"test accuracy {fromage['test_accuracy']:.3f} (Adam {adam['test_accuracy']:.3f})"
        ),
        "runs": "1 seed",
        "JSON": name,
    }


def _depth_row(results: Path) -> dict:
    names = ["depth/long/depth.json", "depth/long_muon/depth.json"]
    saved, muon = (_load(results, name) for name in names)
    deepest = {
        row["optimizer"]: row["24,000"]
        for row in saved["rows"] + muon["rows"]
        if row["width"] == 64 and row["depth"] == "deepest ≥ 90 %, median seed"
    }
    muon_depths = ", ".join(str(d) for d in muon["config"]["depths"])
    return {
        "experiment": "[Depth, the paper's Fig. 3](docs/experiments/depth.md)",
        "claim": "Fromage trains deeper MLPs than SGD, Adam and Muon (24,000 steps, width 64)",
        "measured": (
            f"deepest ≥ 90 %: Fromage {deepest['fromage']}, Adam {deepest['adam']}, "
            f"SGD {deepest['sgd']} layers; Muon {deepest['muon']} (of depths {muon_depths})"
        ),
        "runs": f"median seed of {_seed_count(saved)} near each cliff",
        "JSON": ", ".join(names),
    }


def _seed_count(saved: dict) -> int:
    """How many seeds the long preset ran near the cliffs (its seed rows say "2/3: ...")."""
    return max(int(cell.split(":")[0].split("/")[1]) for row in saved["seed_rows"]
               for key, cell in row.items() if "/" in str(cell) and ":" in str(cell))  # fmt: skip


CORPORA = {"pydoc": "pydoc topics", "docstrings": "stdlib docstrings"}


def _word_lm_row(results: Path) -> dict:
    names = [f"word_lm/{corpus}/word_lm.json" for corpus in CORPORA]
    parts, seeds = [], set()
    for title, name in zip(CORPORA.values(), names):
        saved = _load(results, name)
        rows = {r["optimizer"]: r for r in saved["seed_rows"]}
        pairs = {r["difference"]: r for r in saved["paired_rows"]}
        seeds.update(r["seeds"] for r in saved["seed_rows"])
        fromage = rows["fromage_optax.fromage"]
        paired = ", ".join(
            f"− {label} {pairs[f'fromage − {other}']['best val ppl']} "
            f"({pairs[f'fromage − {other}']['best val ppl: first is']})"
            for other, label in (("sgd", "SGD"), ("adam", "Adam"))
        )
        parts.append(
            f"{title}: Fromage {fromage['best val ppl']} (SGD "
            f"{rows['optax.sgd (clip 0.25)']['best val ppl']}, Adam "
            f"{rows['optax.adam']['best val ppl']}); paired Fromage {paired}"
        )
    return {
        "experiment": "[Word-level transformer LM](docs/experiments/word_lm.md)",
        "claim": (
            "Fromage (p_bound 1) against SGD and Adam: best validation perplexity (lower wins)"
        ),
        "measured": "; ".join(parts),
        "runs": f"mean ± 95 % t interval, seeds {' / '.join(sorted(seeds))}, per corpus",
        "JSON": ", ".join(names),
    }


def _transformer_row(results: Path) -> dict:
    names = [f"transformer/recipe_{corpus}/transformer.json" for corpus in CORPORA]
    parts, seeds = [], set()
    for title, name in zip(CORPORA.values(), names):
        entries = transformer_report.best_across_seeds(_load(results, name)["across_seeds"])
        by_optimizer = {e["optimizer"]: e for e in entries}
        seeds.update(len(e["seeds"]) for e in entries)
        recipe, muon = by_optimizer["fromage_adamw"], by_optimizer["muon"]

        def gap(entry, key):
            return f"{stats.format_interval(entry[key], sign=True)} ({stats.verdict(entry[key])})"

        parts.append(
            f"{title}: recipe − AdamW {gap(recipe, 'minus_adamw')}, recipe − Muon "
            f"{gap(recipe, 'minus_muon')}, Muon − AdamW {gap(muon, 'minus_adamw')}, plain "
            f"Fromage − AdamW "
            f"{stats.format_interval(by_optimizer['fromage']['minus_adamw'], sign=True)}"
        )
    return {
        "experiment": "[GPT, byte level](docs/experiments/transformer.md)",
        "claim": "`fromage_with_adamw` against tuned AdamW and Muon: final validation loss",
        "measured": "; ".join(parts) + " nats/byte",
        "runs": f"{'/'.join(map(str, sorted(seeds)))} seeds each, paired, 95 % t intervals",
        "JSON": ", ".join(names),
    }


def _gan_row(results: Path, name: str = "gan/cpu/gan.json") -> dict:
    saved = _load(results, name)
    summaries = {s["optimizer"]: s for s in saved["summary"]}
    fromage, adam = summaries["fromage"], summaries["adam"]
    comparison = saved["fromage_versus_adam"]
    difference = comparison["difference"]
    return {
        "experiment": (
            f"[Conditional conv GAN, {saved['config']['dataset'].replace('_', ' ')}]"
            "(docs/experiments/gan.md)"
        ),
        "claim": "Fromage is competitive with Adam (the authors' spectrally normalised cGAN)",
        "measured": (
            f"Fromage − Adam {stats.format_interval(difference, sign=True)} in held-out Fréchet "
            f"distance ({comparison['verdict']}; Fromage "
            f"{stats.format_interval(fromage['frechet_distance'])}, Adam "
            f"{stats.format_interval(adam['frechet_distance'])}, floor "
            f"{saved['held_out_floor']['frechet_distance']:.3f})"
        ),
        "runs": f"mean ± 95 % interval, {difference['n']} paired seeds"
        + ("" if saved["finished"] else f" ({_still_to_come(saved)} still to come)"),
        "JSON": name,
    }


def _still_to_come(saved: dict) -> str:
    """The optimisers of an unfinished GAN run without seeds yet (or its missing runs)."""
    done = {s["optimizer"] for s in saved["summary"]}
    missing = [gan_report.LABELS[o] for o in saved["config"]["optimizers"] if o not in done]
    return " and ".join(missing) if missing else f"{len(saved['missing_runs'])} runs"


def _step_speed_row(results: Path) -> dict:
    name = "step_speed/step_speed.json"
    saved = _load(results, name)
    float32 = [r for r in saved["optimizer_steps"] if r["dtype"] == "float32"]
    ratio = {(r["tree"], r["optimizer"]): r["x_sgd"] for r in float32}
    many_small = [r for r in float32 if r["tree"] == "many_small"]
    compile_s = {r["optimizer"]: r["compile_s"] for r in many_small}
    fresh = all(r.get("compile_where") == "fresh process" for r in many_small)
    processes = step_speed_report.fresh_compile_processes(many_small)
    compile_where = ""
    if fresh:
        each = f"the median of {processes} fresh processes"
        each = "in a fresh process" if processes == 1 else each
        compile_where = f" (each {each})"
    against_name = "step_speed/against_commit/against_commit.json"
    against = _load(results, against_name)
    x_sgd = {(r["tree"], r["optimizer"]): r["x_sgd"] for r in against["rows"]}
    trees = ("few_large", "many_small", "gpt")
    before_after = ", ".join(
        f"{x_sgd[tree, 'fromage before']:.2f}× → {x_sgd[tree, 'fromage after']:.2f}×"
        for tree in trees
    )
    return {
        "experiment": "[Step speed, CPU](docs/experiments/step_speed.md)",
        "claim": "the step's time against SGD's on 50M params in 100 tensors / 2M in 2,000 / "
        "the GPT's tree (float32, each step timed from a quiet process), and its compile time",
        "measured": (
            " / ".join(f"{ratio[tree, 'fromage']:.2f}×" for tree in trees)
            + f" `optax.sgd` (`optax.fromage` {ratio['few_large', 'optax.fromage']:.2f}×, "
            "much of it the kernel faulting in its temporaries afresh every step, see the page; "
            f"`optax.adam` {ratio['few_large', 'optax.adam']:.2f}× on the first); compile on "
            f"2,000 tensors {compile_s['fromage'] / compile_s['optax.adam']:.2f}× `optax.adam`'s "
            f"({compile_s['fromage p_bound=2'] / compile_s['optax.adam']:.2f}× with p_bound)"
            f"{compile_where}; "
            f"against `{against['commit']}` (before the composability fix), in one run: "
            f"{before_after}"
        ),
        "runs": f"median of {saved['repeats']} steps, {against['repeats']} before/after",
        "JSON": f"{name}, {against_name}",
    }


def headline(results: Path = RESULTS) -> str:
    """The README's headline table: one row per experiment, every number from the JSON named."""
    rows = [
        row(results)
        for row in (
            _mlp_row,
            _depth_row,
            _word_lm_row,
            _transformer_row,
            _gan_row,
            _step_speed_row,
        )
    ]
    for row in rows:
        row["JSON"] = ", ".join(
            f"[`{Path(part).parent}`](docs/results/{part})" for part in row["JSON"].split(", ")
        )
    return reporting.format_markdown_table(rows) + "\n"


def tables(results: Path = RESULTS) -> dict[Path, str]:
    """{Markdown file: its text rebuilt from the committed JSON}, the headline included."""
    built = {
        (results / name).with_suffix(".md"): writer(_load(results, name))
        for name, writer in _WRITERS.items()
    }
    built[results / "headline.md"] = headline(results)
    return built


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.docs_tables", description=__doc__)
    parser.add_argument("--check", action="store_true", help="write nothing; list stale tables")
    args = parser.parse_args(argv)
    stale = []
    for path, text in tables().items():
        if not path.exists() or path.read_text() != text:
            stale.append(path)
            if not args.check:
                path.write_text(text)
    verb = "differ from their JSON" if args.check else "rewritten"
    print(f"{len(stale)} tables {verb}" + "".join(f"\n  {p}" for p in stale))
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    raise SystemExit(main())
