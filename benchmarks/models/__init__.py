"""Flax modules of the benchmarks: `mlp` (Linen and NNX), `gpt` (a byte-level GPT), `gan`."""
