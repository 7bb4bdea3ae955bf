"""The Fromage paper's depth experiment: how deep a plain ReLU MLP can each optimiser train?

Protocol (Bernstein et al., 2020, Section 5 and the authors' ``depth.ipynb``):
``depth`` hidden ReLU layers of width W plus a linear output layer, weights and
biases initialised U(−1/√fan_in, 1/√fan_in) like PyTorch (``--init flax`` for
Flax's defaults), batch 250, learning rate ×0.95 after every epoch, a grid of
three initial learning rates per optimiser (SGD with momentum 0.9: 1, 0.1,
0.01; Adam: 1e-2, 1e-3, 1e-4; Fromage: 0.1, 0.01, 0.001). The metric is the
training accuracy averaged over the last epoch; per optimiser and depth the
best learning rate counts, and a depth is *trainable* when that accuracy is
≥ 90 %. The authors found (MNIST, width 784, 100 epochs) that the deepest
trainable net had 10 layers with SGD, 22 with Adam and 35 with Fromage.

All learning rates and seeds of one (optimiser, depth) are trained together:
their models are stacked and ``jax.vmap``-ed, the learning rates live in the
optimiser state (``optax.inject_hyperparams``), and a whole epoch runs as one
jitted ``lax.scan`` over batches gathered from data held on the device. So each
(optimiser, depth) compiles once.

  python -m benchmarks.depth --preset quick   # seconds (tests)
  python -m benchmarks.depth --preset cpu     # the 5,000-image MNIST subset, 2 CPU cores
  python -m benchmarks.depth --preset long      # the authors' 24,000 steps on the subset, resumable
  python -m benchmarks.depth --preset paper --data-dir ~/mnist   # GPU/TPU: full protocol

Writes ``depth.json`` (every run), ``depth.md`` (the table), ``depth.png``
(train accuracy vs depth at the best learning rate) and ``relative_trust.png``
(mean ‖ΔW‖/‖W‖ per step vs depth, from ``fromage_optax``'s relative trust
monitor) into ``--out``.

The ``long`` and ``paper`` presets run resumable *pieces* (one optimiser x depth
x width, its learning rates vmapped): each finished piece is written to
``<out>/pieces/<piece>.json``, an unfinished one is checkpointed with Orbax and
resumed by rerunning the same command (``--stop-after-seconds`` stops cleanly).
Their metric is the authors': train accuracy averaged over the 240 steps ending
at 960, 2,400, 4,800, 12,000 and 24,000 steps, best learning rate; their report
(``depth.json``, ``depth.md``, ``deepest.png``, ``accuracy_vs_depth.png``) is
built from whatever pieces have finished and says which are missing.

Modules: `configs` (the presets and the protocol's constants, the authors'
numbers), `train` (the vmapped grid of one optimiser and depth), `report` (best
learning rates, the table, the plots), `pieces` (resumable pieces, checkpoints),
`milestones` (the authors' metric), `pieces_report` (the pieces' table and
figures), ``__main__`` (the command line).
"""
