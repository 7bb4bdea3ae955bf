"""The device report and the summary of `benchmarks/gpu_check.sh` (issue #19).

``gpu_check.sh`` runs each benchmark as its own process under ``timeout``; this
module is its Python side:

  python -m benchmarks.gpu_check device OUT    # OUT/device.json: jax, devices, bandwidth
  python -m benchmarks.gpu_check summary OUT   # OUT/gpu_check.json and tables, from the runs

The summary reads whatever the steps left (a step that failed or timed out
leaves no JSON, and its section is then empty) and gathers in one file: every
step's exit status and seconds, the step-speed rows (ratios to ``optax.sgd``,
milliseconds and the memory-traffic floor), each transformer run's tokens/s,
step time and losses, and the depth grid's steps/s.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
from pathlib import Path

from benchmarks import reporting

STEP_SPEED_FIELDS = ("tree", "dtype", "params", "leaves", "optimizer", "ms", "x_sgd")
STEP_SPEED_FIELDS += ("floor_ms", "x_floor", "compile_s")


def device_report() -> dict:
    """The JAX backend and devices, and the bandwidth the step-speed floor will assume."""
    import jax

    from benchmarks.step_speed import timing

    device = jax.devices()[0]
    return {
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "device_kind": device.device_kind,
        "bandwidth_gbs": timing.device_bandwidth_gbs(device.device_kind),
        "python": platform.python_version(),
        "packages": _versions(
            "jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda13-plugin", "flax", "optax", "mlxtend"
        ),
    }


def _versions(*names: str) -> dict:
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def read_steps(out: Path) -> list[dict]:
    """The rows of ``steps.tsv``: name, exit status, seconds, limit (124/137: timed out)."""
    path = out / "steps.tsv"
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        name, status, seconds, limit = line.split("\t")
        rc = int(status)
        rows.append(
            {
                "name": name,
                "rc": rc,
                "seconds": int(seconds),
                "limit_s": int(limit),
                "timed_out": rc in (124, 137),
            }
        )
    return rows


def step_speed_rows(out: Path) -> list[dict]:
    """Optimiser-step rows of every ``step_speed*/step_speed.json`` under `out`."""
    rows = []
    for path in sorted(out.glob("step_speed*/step_speed.json")):
        for row in json.loads(path.read_text())["optimizer_steps"]:
            rows.append({"run": path.parent.name} | {k: row.get(k) for k in STEP_SPEED_FIELDS})
    return rows


def transformer_rows(results: dict | None) -> list[dict]:
    """Per transformer run: tokens/s, milliseconds per step and the losses."""
    rows = []
    for run in (results or {}).get("runs", []):
        timed_steps = run["history"]["timed_steps"]
        rows.append(
            {
                "name": run["name"],
                "optimizer": run["optimizer"],
                "steps": run["steps"],
                "tokens_per_s": run["tokens_per_s"],
                "step_ms": 1e3 * run["train_time_s"] / timed_steps if timed_steps else None,
                "compile_s": run["compile_time_s"],
                "first_validation_loss": run["history"]["validation_loss"][0],
                "final_train_loss": run["final_train_loss"],
                "final_validation_loss": run["final_validation_loss"],
            }
        )
    return rows


def depth_rows(results: dict | None) -> list[dict]:
    """Per (optimiser, depth) grid: steps/s of the grid's stacked models and the best accuracy."""
    grids: dict = {}
    for run in (results or {}).get("runs", []):
        grids.setdefault((run["optimizer"], run["depth"]), []).append(run)
    config = (results or {}).get("config", {})
    rows = []
    for (optimizer, depth), runs in grids.items():
        steps = config["epochs"] * runs[0]["steps_per_epoch"]
        rows.append(
            {
                "optimizer": optimizer,
                "depth": depth,
                "width": runs[0]["width"],
                "dataset": config.get("dataset"),
                "models": runs[0]["grid_size"],
                "steps": steps,
                "steps_per_s": steps / runs[0]["grid_wall_seconds"],
                "compile_s": runs[0]["grid_compile_seconds"],
                "best_train_accuracy": max(r["train_accuracy"] for r in runs),
            }
        )
    return rows


def summarize(out: Path, mode: str) -> dict:
    """Gathers every step's results under `out` into ``gpu_check.json`` and prints them."""
    transformer = _load(out / "transformer" / "transformer.json")
    summary = {
        "mode": mode,
        "steps": read_steps(out),
        "device": _load(out / "device.json"),
        "step_speed": step_speed_rows(out),
        "transformer": {
            "model": (transformer or {}).get("model"),
            "parameters": (transformer or {}).get("parameters"),
            "data": (transformer or {}).get("data"),
            "runs": transformer_rows(transformer),
        },
        "depth": depth_rows(_load(out / "depth" / "depth.json")),
    }
    reporting.write_json(out / "gpu_check.json", summary)
    for title, rows in (
        ("steps", summary["steps"]),
        ("step speed (ms; x_floor: time over the memory-traffic floor)", summary["step_speed"]),
        ("transformer", summary["transformer"]["runs"]),
        ("depth", summary["depth"]),
    ):
        print(f"\n{title}:\n{reporting.format_table(rows)}")
    return summary


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("device", "summary"))
    parser.add_argument("out", type=Path, help="the check's output folder")
    parser.add_argument("--mode", default="full", help="recorded in gpu_check.json")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.command == "device":
        report = device_report()
        reporting.write_json(args.out / "device.json", report)
        print(json.dumps(report, indent=2))
    else:
        summarize(args.out, args.mode)


if __name__ == "__main__":
    main()
