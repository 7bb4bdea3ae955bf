"""Flax examples and experiment scripts for fromage_optax (run from the repo root: python -m benchmarks.X)."""
