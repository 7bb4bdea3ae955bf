"""This checkout's Fromage step against another commit's, interleaved in one process.

``python -m benchmarks.step_speed.against_commit --commit REV`` extracts ``fromage_optax/``
at REV (``git archive``) into a temporary folder under another package name, builds
``optax.sgd``, REV's and this checkout's ``fromage`` (and with ``p_bound=2``) on each tree
of the step-speed preset, and times them in one interleaved loop
(`benchmarks.step_speed.timing`), so that a before/after comparison is a ratio taken in one
run on one machine state. Prints the table and writes ``against_commit.json``,
``against_commit.md`` and ``against_commit.png``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np
import optax

from benchmarks import reporting
from benchmarks.step_speed import configs
from benchmarks.step_speed.timing import _Contender, _interleaved, parameter_tree

ROOT = Path(__file__).resolve().parents[2]


def import_library_at(commit: str, folder: Path, name: str = "fromage_at_commit"):
    """`fromage_optax` as it was at `commit`, imported as the package `name`."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit, "fromage_optax"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    package = folder / name
    (folder / "fromage_optax").rename(package)
    for path in package.glob("*.py"):
        path.write_text(re.sub(r"\bfromage_optax\b", name, path.read_text()))
    sys.path.insert(0, str(folder))
    return importlib.import_module(name)


def contenders(before, tree_spec: dict) -> dict:
    """name -> optimiser: SGD first (the ratios' unit), then each version of the step."""
    import fromage_optax

    return {
        "optax.sgd": optax.sgd(0.01),
        "fromage before": before.fromage(0.01),
        "fromage after": fromage_optax.fromage(0.01),
        "fromage p_bound=2 before": before.fromage(0.01, p_bound=2.0),
        "fromage p_bound=2 after": fromage_optax.fromage(0.01, p_bound=2.0),
    }


def time_tree(before, tree_name: str, spec: dict, repeats: int) -> list[dict]:
    grads = parameter_tree(spec, "float32", seed=1)
    built = []
    for name, optimizer in contenders(before, spec).items():

        def step(params, state, grads, optimizer=optimizer):
            updates, state = optimizer.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        params = parameter_tree(spec, "float32", seed=0)
        state = jax.jit(optimizer.init)(params)
        built.append(_Contender(name, step, params, state, (grads,)))
    _interleaved(built, repeats)
    sgd_ms = float(np.median(built[0].times) * 1e3)
    return [
        {
            "tree": tree_name,
            "optimizer": c.name,
            "ms": float(np.median(c.times) * 1e3),
            "x_sgd": float(np.median(c.times) * 1e3) / sgd_ms,
            "compile_s": c.compile_seconds,
        }
        for c in built
    ]


def markdown(saved: dict) -> str:
    """The table of a saved run: per tree, each contender's step as a multiple of SGD's."""
    lines = [
        f"Against commit `{saved['commit']}`, interleaved in one process ({saved['repeats']} "
        "timed runs each, medians), float32:",
        "",
        "| tree | contender | ms | × optax.sgd | compile (s) |",
        "|---|---|---|---|---|",
    ]
    for row in saved["rows"]:
        lines.append(
            f"| {row['tree']} | {row['optimizer']} | {row['ms']:.2f} | {row['x_sgd']:.2f} "
            f"| {row['compile_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commit", required=True, help="the commit to compare against")
    parser.add_argument("--preset", default="cpu", choices=tuple(configs.PRESETS))
    parser.add_argument("--trees", default="few_large,many_small,gpt")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--out", default="runs/step_speed_against_commit")
    args = parser.parse_args(argv)
    preset = configs.PRESETS[args.preset]
    repeats = args.repeats or preset.repeats
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", args.commit],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    with tempfile.TemporaryDirectory() as folder:
        before = import_library_at(commit, Path(folder))
        rows = []
        for tree_name in reporting.progress(args.trees.split(","), desc="against commit"):
            rows += time_tree(before, tree_name, preset.trees[tree_name], repeats)
    saved = {"commit": commit, "preset": args.preset, "repeats": repeats, "rows": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "against_commit.json").write_text(json.dumps(saved, indent=1))
    (out / "against_commit.md").write_text(markdown(saved))
    trees = list(dict.fromkeys(row["tree"] for row in rows))
    series = {
        name: (list(range(len(trees))), [r["x_sgd"] for r in rows if r["optimizer"] == name])
        for name in dict.fromkeys(row["optimizer"] for row in rows)
    }
    reporting.line_plot(
        out / "against_commit.png",
        series,
        xlabel="tree: " + ", ".join(f"{i} {t}" for i, t in enumerate(trees)),
        ylabel="step time / optax.sgd's",
        title=f"This checkout against {commit}",
    )
    print(markdown(saved))


if __name__ == "__main__":
    main()
