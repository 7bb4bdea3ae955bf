"""Byte-level GPT language model trained with Fromage, AdamW, SGD and optax.fromage.

Trains the decoder-only transformer of `benchmarks.models.gpt` on a byte-level corpus
(`benchmarks.text_data`) with every optimiser of a grid, all with the same
steps, batches (the batch at step s depends only on the seed and s) and
initial parameters, and reports train and validation loss (nats per byte,
which is nats per character for ASCII text), perplexity, wall time and
tokens/s, plus the deep relative trust of the steps.

Usage (from the repository root)::

  python -m benchmarks.transformer --preset quick --out /tmp/transformer
  python -m benchmarks.transformer --preset cpu --out runs/transformer
  python -m benchmarks.transformer --preset gpu --data-dir ~/wikitext-2 --out runs/gpu
  python -m benchmarks.transformer --preset cpu --data my.txt --optimizers fromage adamw \\
      --fromage-lrs 0.01 --fromage-p-bounds 1.0 --checkpoint-every 500 --resume

Writes ``transformer.json`` (config, every run's curves and summary) and
``transformer.png`` (validation loss of each optimiser at its best setting)
into ``--out``; with ``--checkpoint-every N`` an Orbax checkpoint of every run
is kept under ``--out/checkpoints/<run>`` and ``--resume`` continues from it.

Modules: `configs` (presets, the grid of runs, each run's optimiser from
`benchmarks.optimizers`), `train` (the pure train and eval steps, one run's
loop, Orbax checkpoints), `report` (best settings, tables, JSON, plot),
``__main__`` (the command line).

References:
  Bernstein, Vahdat, Yue, Liu. *On the distance between two neural networks
  and the stability of learning*. NeurIPS 2020. https://arxiv.org/abs/2002.03432
"""
