"""benchmarks/gpu_check.sh runs end to end on a CPU with GPU_CHECK_TINY=1 and gathers its JSON.

The same command lines run on the GPU with bigger presets, so flag names, preset
names, paths and the summary are checked here, where a mistake costs nothing.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"
STEPS = (
    "device",
    "step_speed_a",
    "step_speed_gpt",
    "step_speed_design",
    "transformer",
    "depth",
    "step_speed_b",
)


@pytest.mark.slow
def test_tiny_run_writes_every_section(tmp_path):
    env = os.environ | {
        "GPU_CHECK_TINY": "1",
        "GPU_CHECK_OUT": str(tmp_path / "out"),
        "GPU_CHECK_BANDWIDTH_GBS": "50",
        "PYTHON": sys.executable,
        "JAX_PLATFORMS": "cpu",
        # The tiny run checks the plumbing, not speed: unoptimised XLA:CPU code compiles in
        # about 2/3 of the time, and compiling is most of this test's time.
        "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"),
    }
    finished = subprocess.run(
        ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=600
    )
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert summary["mode"] == "tiny"
    assert [s["name"] for s in summary["steps"]] == list(STEPS)
    assert all(s["rc"] == 0 and not s["timed_out"] for s in summary["steps"])
    assert summary["device"]["backend"] == "cpu" and summary["device"]["devices"]

    rows = summary["step_speed"]
    assert {(r["tree"], r["dtype"]) for r in rows} == {
        (tree, dtype) for tree in ("few_large", "gpt") for dtype in ("float32", "bfloat16")
    } | {("many_small", "float32")}
    assert {r["optimizer"] for r in rows if r["tree"] == "many_small"} == {
        "optax.sgd",
        "optax.adam",
        "fromage",
    }
    for row in rows:
        assert row["ms"] > 0 and row["floor_ms"] > 0
        assert row["x_floor"] == pytest.approx(row["ms"] / row["floor_ms"])

    transformer = summary["transformer"]
    assert transformer["parameters"] > 0
    assert [r["optimizer"] for r in transformer["runs"]] == ["fromage", "adamw"]
    for run in transformer["runs"]:
        assert run["steps"] == 4 and run["tokens_per_s"] > 0 and run["step_ms"] > 0
        assert run["final_train_loss"] > 0

    (depth,) = summary["depth"]
    assert (depth["optimizer"], depth["depth"], depth["models"]) == ("fromage", 2, 3)
    assert depth["steps"] > 0 and depth["steps_per_s"] > 0
    assert "step speed" in finished.stdout and "steps_per_s" in finished.stdout


def test_full_run_uses_presets_that_exist():
    from benchmarks.depth import __main__ as depth_cli
    from benchmarks.depth import configs as depth_configs
    from benchmarks.models import gpt
    from benchmarks.step_speed import configs as step_speed_configs
    from benchmarks.transformer import configs as transformer_configs

    text = SCRIPT.read_text()
    assert "SS=(--preset gpu)" in text and "gpu" in step_speed_configs.PRESETS
    assert "TRANSFORMER=(--preset gpu --steps 300)" in text and "gpu" in transformer_configs.PRESETS
    assert gpt.gpt_config(transformer_configs.PRESETS["gpu"].model).num_layers == 16
    assert "--preset paper" in text and "paper" in depth_configs.PRESETS
    assert "--depths 35 --optimizer-depths fromage=35 --epochs 10 --no-pieces" in text
    config = depth_cli.parse_args(
        ["--preset", "paper", "--dataset", "digits", "--width", "784", "--depths", "35"]
        + ["--optimizer-depths", "fromage=35", "--epochs", "10", "--optimizers", "fromage"]
        + ["--no-pieces"]
    )
    assert (config.width, config.depths, config.dataset) == (784, (35,), "digits")
    assert config.depths_of("fromage") == (35,) and not config.pieces
