"""Test configuration shared by every test module."""

import contextlib
import os

# The tests check values and plumbing, not speed, and most of their time is compiling:
# XLA:CPU's unoptimised code generation compiles in about 2/3 of the time (set before jax
# creates its backend; subprocesses started with this environment inherit it).
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
).strip()

import jax  # noqa: E402
import pytest
from hypothesis import HealthCheck, settings

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
