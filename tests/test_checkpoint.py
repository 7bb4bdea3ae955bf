"""Fromage state through orbax-checkpoint: a resumed run is bitwise the uninterrupted one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import fromage_optax

MULTIDEVICE = Path(__file__).parent / "multidevice"


def run_checkpoint_script(mode: str, directory: Path) -> None:
    """One fresh process per call, 8 simulated CPU devices (set by the script)."""
    environment = dict(os.environ, JAX_PLATFORMS="cpu")
    completed = subprocess.run(
        [sys.executable, str(MULTIDEVICE / "checkpoint_check.py"), mode, str(directory)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fromage_checkpoint")
    run_checkpoint_script("save", directory)
    run_checkpoint_script("resume", directory)
    return json.loads((directory / "results.json").read_text())


def test_ten_steps_equal_five_saved_restored_five(resumed):
    assert resumed["bitwise_equal"], resumed["max_abs_difference"]
    assert resumed["max_abs_difference"] == 0.0


def test_restored_state_is_the_saved_one(resumed):
    assert resumed["restored_count"] == 5
    # Per-layer ‖W₀‖ for the 2 tensors of the 4 stacked blocks, one ‖W₀‖ per other
    # tensor, all in one vector.
    assert resumed["restored_initial_norm_shapes"] == [4 + 4 + 1 + 1]
    assert resumed["restored_sharding_kept"]
    assert resumed["leaves"] == 6  # 4 params + count + the initial norms


def test_resuming_without_the_optimiser_state_differs(resumed):
    """Controls: the step count and ‖W₀‖ in the checkpoint both change the result."""
    assert resumed["restarted_optimiser_max_abs_difference"] > 1e-2
    assert resumed["wrong_initial_norms_max_abs_difference"] > 1e-3


@pytest.mark.parametrize("p_bound", [None, 2.0])
def test_state_round_trips_in_process(tmp_path, p_bound):
    """Single device, with and without p_bound (initial_norms None), chained with another
    transform: the restored state has the saved structure, dtypes and values."""
    params = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.zeros(3)}
    optimiser = optax.chain(
        optax.clip_by_global_norm(1.0), fromage_optax.fromage(0.1, p_bound=p_bound)
    )
    state = optimiser.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    _, state = optimiser.update(grads, state, params)

    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "state", state)
    checkpointer.wait_until_finished()
    restored = checkpointer.restore(tmp_path / "state", jax.tree.map(np.zeros_like, state))

    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for saved, loaded in zip(jax.tree.leaves(state), jax.tree.leaves(restored), strict=True):
        assert np.asarray(loaded).dtype == np.asarray(saved).dtype
        np.testing.assert_array_equal(loaded, saved)
    assert int(restored[1].count) == 1
