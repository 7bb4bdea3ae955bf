"""The step-speed benchmark's outputs: the console tables, ``step_speed.json``, the Markdown
tables (``step_speed.md``) and the plot."""

from __future__ import annotations

import platform
from pathlib import Path

import jax
import numpy as np
import optax

from benchmarks import reporting


def bar_plot(path: Path, rows: list[dict], names: list[str], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(r["tree"], r["dtype"]) for r in rows}, key=lambda g: (g[1], g[0]))
    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=120)
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        ratios = [
            next(
                r["x_sgd"] for r in rows if (r["tree"], r["dtype"]) == g and r["optimizer"] == name
            )
            for g in groups
        ]
        ax.bar(np.arange(len(groups)) + j * width, ratios, width, label=name)
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2)
    ax.set_xticklabels([f"{t}\n{d}" for t, d in groups], fontsize=8)
    ax.set_ylabel("step time / optax.sgd step time")
    ax.set_yscale("log")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=3)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def machine(bandwidth_gbs: float | None) -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "devices": [str(d) for d in jax.devices()],
        "device_kind": jax.devices()[0].device_kind,
        "bandwidth_gbs": bandwidth_gbs,
        "jax": jax.__version__,
        "optax": optax.__version__,
    }


def print_tables(rows: list[dict], train_rows: list[dict]) -> None:
    columns = ["tree", "dtype", "params", "leaves", "optimizer", "ms", "x_sgd"]
    columns += ["floor_ms", "x_floor", "state_bytes", "compile_s"]
    print(reporting.format_table(rows, columns))
    print()
    print(
        reporting.format_table(
            train_rows, ["model", "params", "optimizer", "ms", "x_sgd", "compile_s"]
        )
    )


def write_outputs(config, rows: list[dict], train_rows: list[dict], names: list[str]) -> dict:
    """Writes step_speed.json, .md and .png into ``config.out``, prints the tables."""
    results = {
        "preset": config.preset,
        "repeats": config.repeats,
        "machine": machine(config.bandwidth_gbs),
        "optimizer_steps": rows,
        "train_steps": train_rows,
    }
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    reporting.write_json(out / "step_speed.json", results)
    (out / "step_speed.md").write_text(markdown(reporting.read_json(out / "step_speed.json")))
    bar_plot(
        out / "step_speed.png", rows, names, f"Optimiser step time on {jax.devices()[0].platform}"
    )
    print_tables(rows, train_rows)
    return results


def _pivot(rows: list[dict], key: str, cell) -> list[dict]:
    """One row per (tree, dtype) or model, one column per optimiser (in the run's order)."""
    names = list(dict.fromkeys(r["optimizer"] for r in rows))
    table: dict = {}
    for r in rows:
        label = (
            f"{r[key]} ({r['params']:,} params / {r['leaves']:,} leaves)"
            if "leaves" in r
            else f"{r[key]} ({r['params']:,} params)"
        )
        row = table.setdefault((label, r.get("dtype")), {key: label})
        if "dtype" in r:
            row["dtype"] = r["dtype"]
        row.update({name: row.get(name) for name in names})
        row[r["optimizer"]] = cell(r)
    return list(table.values())


def _ratio(row: dict) -> str:
    if row["optimizer"] == "optax.sgd":
        return f"1 ({row['ms']:.1f} ms)"
    return f"{row['x_sgd']:.2f}×"


def _derived(steps: list[dict]) -> list[dict]:
    """Per tree and dtype, the ratios the docs quote, from the rows of one run."""
    rows = []
    for tree, dtype in dict.fromkeys((r["tree"], r["dtype"]) for r in steps):
        by_name = {r["optimizer"]: r for r in steps if (r["tree"], r["dtype"]) == (tree, dtype)}
        fromage, adam = by_name.get("fromage"), by_name.get("optax.adam")
        if fromage is None:
            continue
        row = {"tree": tree, "dtype": dtype}
        if "optax.fromage" in by_name:
            row["optax.fromage / fromage"] = (
                f"{by_name['optax.fromage']['ms'] / fromage['ms']:.1f}×"
            )
        for name, label in (
            ("fromage p_bound=2", "p_bound"),
            ("fromage p_bound=2, at the bound", "at the bound"),
        ):
            if name in by_name:
                change = by_name[name]["ms"] / fromage["ms"] - 1
                row[f"{label} vs fromage"] = f"{change:+.0%}"
        if adam is not None:
            for name, label in (("fromage", "fromage"), ("fromage p_bound=2", "p_bound")):
                if name in by_name:
                    ratio = by_name[name]["compile_s"] / adam["compile_s"]
                    row[f"compile, {label} / adam"] = f"{ratio:.2f}×"
        rows.append(row)
    return rows


def fresh_compile_processes(rows: list[dict]) -> int:
    """How many fresh processes the compile times of `rows` are the median of (0: none)."""
    return max(
        (len(r.get("compile_runs_s", [r["compile_s"]])) for r in rows if r.get("compile_where")),
        default=0,
    )


def markdown(saved: dict) -> str:
    """step_speed.md from the saved step_speed.json: step time relative to optax.sgd (its time
    in brackets), compile times, and whole train steps."""
    steps, train = saved["optimizer_steps"], saved["train_steps"]
    machine_text = f"{saved['machine']['processor']}, {', '.join(saved['machine']['devices'])}"
    text = (
        f"Preset `{saved['preset']}`, median of {saved['repeats']} timed steps on {machine_text}, "
        f"JAX {saved['machine']['jax']}, optax {saved['machine']['optax']}.\n\n"
        "Optimiser step (`update` + `optax.apply_updates`), time relative to `optax.sgd`:\n\n"
    )
    text += reporting.format_markdown_table(_pivot(steps, "tree", _ratio)) + "\n"
    text += "\nCompile time of the optimiser step"
    fresh = list(dict.fromkeys(r["tree"] for r in steps if r.get("compile_where")))
    if fresh:
        processes = fresh_compile_processes(steps)
        median = f", the median of {processes}" if processes > 1 else ""
        text += (
            f" ({', '.join(fresh)}: each contender compiled in a process of its own{median}, "
            "since in one process a compile slows after other large ones; the other trees: in "
            "the timing process, one after another)"
        )
    text += ":\n\n"
    compile_cell = lambda r: f"{r['compile_s']:.1f} s"  # noqa: E731
    text += reporting.format_markdown_table(_pivot(steps, "tree", compile_cell)) + "\n"
    derived = _derived(steps)
    if derived:
        text += (
            "\nDerived from the rows above: how many times faster `fromage` is than "
            "`optax.fromage`, what p_bound costs against `fromage` (below its bound, and with "
            "every tensor at it), and each one's compile time against `optax.adam`'s:\n\n"
        )
        text += reporting.format_markdown_table(derived) + "\n"
    busy = [r for r in steps if r.get("busy_after_ms", 0) >= 1]
    if busy:
        text += (
            "\nEvery step was timed from a quiet process until its outputs were ready. After "
            "these contenders' steps one runtime thread went on working, in system time "
            "(freeing the step's temporaries, by all signs), for the median ms below. That "
            "time is in no row above: the next step waited for it to end.\n\n"
        )
        busy_cell = lambda r: f"{r['busy_after_ms']:.1f}"  # noqa: E731
        text += reporting.format_markdown_table(_pivot(busy, "tree", busy_cell)) + "\n"
    if train:
        text += "\nWhole jitted train step (forward, backward, update), relative to "
        text += "`optax.sgd`:\n\n"
        text += reporting.format_markdown_table(_pivot(train, "model", _ratio)) + "\n"
    return text
