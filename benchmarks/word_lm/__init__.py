"""The Fromage paper's word-level transformer language model (§5, WikiText-2), in Flax.

Protocol (the authors ran PyTorch's ``word_language_model`` example): the
transformer of `benchmarks.models.word_transformer` (2 post-LayerNorm layers,
width 200, 2 heads, feed-forward 200, dropout 0.2, untied decoder), the
training words cut into 20 columns and walked 35 rows at a time (batch 20 ×
bptt 35, no shuffling), 20 epochs at a constant learning rate divided by 10
after epoch 10, for every optimiser. The grid: ``fromage_optax.fromage`` at lr
0.01 with p_bound 1.0 and None, on every tensor; plain Adam (no weight decay,
no clipping, no warm-up) at 1e-3 and 1e-4; SGD without momentum, gradient norm
clipped at 0.25, at 0.1, 1 and 10. Then each optimiser's best setting (best
validation perplexity) is trained at two more seeds. Reported: validation and
training perplexity per epoch and the test perplexity of the best-validation
epoch's parameters, beside the authors' epoch-10 training perplexities (Adam
56.4 at 1e-3 and 123.9 at 1e-4, Fromage 100.9, SGD 167.7 at lr 1; their test
numbers are not published).

The runs of one optimiser and p_bound (its learning rates, or its seeds) train
together: their models are stacked and ``jax.vmap``-ed, the learning rates
live in the optimiser state, and an epoch is one jitted ``lax.scan``.

Presets:

* ``quick``: a tiny model for two epochs on 1,500 words (seconds; the tests run it).
* ``cpu``: the authors' model and schedule on the first 30,000 training words
  of Python's documentation topics (`benchmarks.word_data`): 42 steps per
  epoch, the whole sweep (7 settings, then 6 runs of extra seeds) took 24
  minutes on 2 CPU cores shared with other jobs (4.5–6 s per epoch for one
  model alone, 13–16 s for three vmapped together). The cut: the corpus (≈77,000
  words, split 80/10/10) is already far smaller than WikiText-2 (2.09M
  training tokens), and only a prefix of its training part is used; validation
  and test are whole. The model, batch, bptt, epochs and schedule are the
  authors'.
* ``paper``: the full protocol on WikiText-2 (``--data-dir`` holding
  ``wiki.{train,valid,test}.tokens``), for a GPU.

Usage (from the repository root)::

  python -m benchmarks.word_lm --preset quick --out /tmp/word_lm
  python -m benchmarks.word_lm --preset cpu --out docs/results/word_lm
  python -m benchmarks.word_lm --preset paper --data-dir ~/wikitext-2 --out runs/word_lm_paper

Writes ``runs/<run>.json`` into ``--out`` as each group of runs finishes (a
rerun skips those, so an interrupted sweep resumes where it stopped), and
``word_lm.json`` (the config, corpus sizes, every run, the tables),
``word_lm.md`` (the tables) and ``word_lm.png`` (validation perplexity per
epoch of every setting).

Modules: `configs` (presets, runs, groups, optimisers, the authors' numbers),
`train` (the vmapped group training), `report` (per-run JSON, tables, plot),
``__main__`` (the command line).

References:
  Bernstein, Vahdat, Yue, Liu. *On the distance between two neural networks
  and the stability of learning*. NeurIPS 2020. https://arxiv.org/abs/2002.03432
"""
