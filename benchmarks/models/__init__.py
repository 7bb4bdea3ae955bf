"""Flax modules of the benchmarks: `mlp` (Linen and NNX), `gpt` (a byte-level GPT), `gan`,
`word_transformer` (the word-level transformer of PyTorch's word_language_model example)."""
