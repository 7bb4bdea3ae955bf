"""Shared by the multi-device check scripts: 8 simulated CPU devices, HLO and tree helpers.

Import this module before jax: it sets XLA_FLAGS so the host platform has 8 devices.
"""

from __future__ import annotations

import json
import os
import sys

DEVICE_COUNT = 8

if "jax" in sys.modules:
    raise RuntimeError("import tests/multidevice/common.py before jax, so XLA_FLAGS takes effect")
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={DEVICE_COUNT}"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
from hlo import collectives  # noqa: E402, F401


def max_abs_difference(tree_a, tree_b) -> float:
    """Largest |a - b| over all leaves of two trees of the same structure."""
    leaves_a, leaves_b = jax.tree.leaves(tree_a), jax.tree.leaves(tree_b)
    assert len(leaves_a) == len(leaves_b), (len(leaves_a), len(leaves_b))
    return max(
        float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
        for a, b in zip(leaves_a, leaves_b, strict=True)
    )


def write_results(results: dict, path=None) -> None:
    """Writes `results` as JSON to `path`, by default the script's first argument."""
    with open(sys.argv[1] if path is None else path, "w") as file:
        json.dump(results, file, indent=1)
