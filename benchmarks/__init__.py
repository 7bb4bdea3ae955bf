"""Flax examples and experiment scripts for fromage_optax.

Run them from the repository root: ``python -m benchmarks.<name>``.
"""
