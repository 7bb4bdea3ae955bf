"""Test configuration shared by every test module."""

import atexit
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile

import pytest
from hypothesis import HealthCheck, settings

# The tests check values and plumbing, not speed, and most of their time is compiling:
# XLA:CPU's unoptimised code generation compiles in about 2/3 of the time (set before jax
# creates its backend; subprocesses started with this environment inherit it).
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
).strip()


def _xla_accepts(flag: str) -> bool:
    """Whether this jaxlib's XLA knows `flag` (an unknown one aborts the process at startup)."""
    flags = os.environ["XLA_FLAGS"] + " " + flag
    probe = subprocess.run(
        [sys.executable, "-c", "import jax; jax.devices('cpu')"],
        env={**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


# XLA:CPU's older elementwise emitters compile the suite's programs in about half the time of
# its fusion emitters (the shard_map column: 16 s of compiling against 8 s). Decided once, by
# the first process; its workers and subprocesses inherit the environment.
_EMITTERS = "--xla_cpu_use_fusion_emitters=false"
if "FROMAGE_OPTAX_TEST_EMITTERS" not in os.environ:
    os.environ["FROMAGE_OPTAX_TEST_EMITTERS"] = _EMITTERS if _xla_accepts(_EMITTERS) else ""
os.environ["XLA_FLAGS"] = (
    os.environ["XLA_FLAGS"] + " " + os.environ["FROMAGE_OPTAX_TEST_EMITTERS"]
).strip()

# Many tests compile the same program (a benchmark's step at the same shapes, in another
# test, worker or subprocess): one persistent compilation cache for this test session, in a
# fresh folder that the first process (pytest itself, before its workers start) creates and
# removes at exit, so a session never reuses another's programs. Nothing that times
# compilation runs under the tests.
if "FROMAGE_OPTAX_TEST_JAX_CACHE" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="fromage-optax-tests-jax-cache-")
    os.environ["FROMAGE_OPTAX_TEST_JAX_CACHE"] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ["FROMAGE_OPTAX_TEST_JAX_CACHE"]
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")

import jax  # noqa: E402

settings.register_profile(
    "fromage",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.load_profile("fromage")


@contextlib.contextmanager
def x64_enabled():
    """Enables float64 in JAX for the duration of the block, then restores the setting."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


@pytest.fixture
def enable_x64():
    with x64_enabled():
        yield
