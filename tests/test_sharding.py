"""Fromage on sharded parameters: jit + NamedSharding, and `axis_name` in shard_map / pmap.

The checks need 8 devices, so each runs in a subprocess (tests/multidevice/*.py) that sets
XLA_FLAGS=--xla_force_host_platform_device_count=8 before importing jax and writes its
measurements as JSON; the assertions are here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

MULTIDEVICE = Path(__file__).parent / "multidevice"
sys.path.insert(0, str(MULTIDEVICE))

from hlo import collectives  # noqa: E402

# f32 rounding of sums taken in another order: a few ulps of params of size ~0.5.
SHARDED_TOLERANCE = 1e-6


def run_check(script: str, tmp_path: Path) -> dict:
    """Runs tests/multidevice/<script> on 8 simulated CPU devices and returns its JSON."""
    results_path = tmp_path / f"{Path(script).stem}.json"
    environment = dict(os.environ)
    environment["JAX_PLATFORMS"] = "cpu"
    completed = subprocess.run(
        [sys.executable, str(MULTIDEVICE / script), str(results_path)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads(results_path.read_text())


@pytest.fixture(scope="module")
def spmd_results(tmp_path_factory):
    return run_check("spmd_check.py", tmp_path_factory.mktemp("spmd"))


def test_hlo_scan_finds_collectives_and_their_sizes():
    hlo = "\n".join(
        [
            "  %all-gather.3 = f32[512,256]{1,0} all-gather(f32[64,256]{1,0} %p), dimensions={0}",
            "  %all-reduce.1 = (f32[], f32[4]{0}) all-reduce(%a, %b), to_apply=%add",
            "  %all-reduce-start.2 = bf16[8]{0} all-reduce-start(%c), to_apply=%add",
            "  %all-reduce-done.2 = bf16[8]{0} all-reduce-done(%all-reduce-start.2)",
            "  %fusion.4 = f32[64,256]{1,0} fusion(%p), kind=kLoop, calls=%all_gather_like",
        ]
    )
    assert collectives(hlo) == [
        {"op": "all-gather", "shapes": ["f32[512,256]"], "bytes": 512 * 256 * 4},
        {"op": "all-reduce", "shapes": ["f32[]", "f32[4]"], "bytes": 20},
        {"op": "all-reduce", "shapes": ["bf16[8]"], "bytes": 16},
    ]


def test_gathering_a_sharded_kernel_shows_in_the_hlo(spmd_results):
    """The control: the same HLO scan does see an all-gather when one is compiled."""
    gathers = [c for c in spmd_results["gather_control"] if c["op"] == "all-gather"]
    assert gathers and max(c["bytes"] for c in gathers) >= 512 * 256 * 4


SHARDED_RUNS = [
    ("fromage_p_bound", "fsdp"),
    ("fromage_p_bound", "data_x_model"),
    ("fromage_p_bound", "tensor_parallel"),
    ("fromage_p_bound", "tensor_parallel_explicit"),
    ("chain_p_bound", "fsdp"),
]


def sharded_run(spmd_results, optimiser, layout):
    runs = [r for r in spmd_results["runs"] if (r["optimiser"], r["layout"]) == (optimiser, layout)]
    assert len(runs) == 1, f"no run of {optimiser} on {layout}"
    assert "error" not in runs[0], runs[0]["error"]
    return runs[0]


@pytest.mark.parametrize("optimiser, layout", SHARDED_RUNS)
def test_jit_sharded_step_equals_one_device_step(spmd_results, optimiser, layout):
    run = sharded_run(spmd_results, optimiser, layout)
    assert run["max_abs_difference"] <= SHARDED_TOLERANCE
    # The state holds ‖W₀‖ (~1 to 20: 5e-5 is 2.5e-6 relative) and the step count.
    assert run["state_max_abs_difference"] <= 5e-5
    # Overflowing / underflowing squares: the rescaling fallback, same step.
    assert run["gradients_x_1e+25_max_abs_difference"] <= SHARDED_TOLERANCE
    assert run["gradients_x_1e-25_max_abs_difference"] <= SHARDED_TOLERANCE
    if optimiser == "fromage_p_bound":
        assert run["bound_active_slices"] > 0, "p_bound never binds: the test would be weak"


@pytest.mark.parametrize("optimiser, layout", SHARDED_RUNS)
def test_jit_sharded_step_keeps_input_shardings(spmd_results, optimiser, layout):
    run = sharded_run(spmd_results, optimiser, layout)
    assert run["keeps_input_sharding"], run["output_specs"]
    # Not trivially replicated: the big kernel stays split.
    big_kernel_spec = run["output_specs"]["big"]["kernel"]
    assert "'data'" in big_kernel_spec or "'model'" in big_kernel_spec, big_kernel_spec


@pytest.mark.parametrize("optimiser, layout", SHARDED_RUNS)
def test_jit_sharded_step_only_all_reduces_norms(spmd_results, optimiser, layout):
    """No all-gather (or other data movement) of params: only all-reduces of norm-sized sums.

    The scan covers both branches of the overflow fallback's lax.cond, so a fallback that
    gathers tensors fails here even though it runs only for extreme gradients.
    """
    run = sharded_run(spmd_results, optimiser, layout)
    # Per norm slice at most ‖W‖², ‖g‖², ⟨W, g⟩ and, in the overflow fallback, two max-abs values
    # and the three sums again: 8 floats, plus the fallback's boolean predicates.
    budget = 8 * 4 * spmd_results["norm_slices"] + 64
    moving = [c for c in run["collectives"] if c["op"] != "all-reduce"]
    if optimiser == "fromage_p_bound" and layout == "data_x_model":
        # `fromage` keeps every ‖W₀‖ in one replicated vector; with the stacked layers'
        # layer axis split over `data`, XLA moves the per-layer entries with a few
        # collective-permutes. Anything bigger than the vector would be parameter data.
        vector_bytes = 4 * spmd_results["norm_slices"]
        assert all(
            c["op"] == "collective-permute" and c["bytes"] <= vector_bytes for c in moving
        ), moving[:5]
    else:
        assert not moving, moving[:5]
    assert sum(c["bytes"] for c in run["collectives"]) <= budget, run["collectives"]


@pytest.fixture(scope="module")
def shard_map_results(tmp_path_factory):
    results = run_check("shard_map_check.py", tmp_path_factory.mktemp("shard_map"))
    return {case["case"]: case for case in results["cases"]}


@pytest.mark.parametrize(
    "case",
    [
        "fromage_p_bound data=8, prefix axis_name",
        "fromage_p_bound data=8, gradients x 1e+25",
        "fromage_p_bound data=8, gradients x 1e-25",
        "chain_p_bound data=4 x model=2, tuple axis_name",
        "chain_p_bound data=4 x model=2, one layer's gradient x 1e25",
        "pmap fromage_p_bound",
    ],
)
def test_axis_name_gives_the_unsharded_step(shard_map_results, case):
    result = shard_map_results[case]
    assert result["max_abs_difference"] <= SHARDED_TOLERANCE
    assert result["state_max_abs_difference"] <= 5e-5  # ‖W₀‖ up to ~20: 2.5e-6 relative


def test_without_axis_name_per_shard_norms_are_wrong(shard_map_results):
    """The control: leaving out axis_name inside shard_map changes the step noticeably."""
    control = shard_map_results["control: no axis_name"]
    assert control["max_abs_difference"] > 0.05 * control["max_abs_param_change"]
    assert control["state_max_abs_difference"] > 0.1
