"""How long one optimiser step takes: Fromage vs optax.fromage, SGD, Adam and LARS.

Times ``update`` + ``optax.apply_updates`` under ``jax.jit`` with the params and
optimiser state donated, after warm-up, as the median of several runs with all
optimisers interleaved (so a busy machine slows them alike), on

* ``few_large``: 50M parameters in 100 leaves (memory-bound; ``--preset cpu``),
* ``many_small``: 2M parameters in 2000 leaves (per-tensor overhead dominates),
* ``gpt``: the parameter tree of the benchmarks' GPT model,

in float32 and bfloat16, and reports each optimiser's state size and compile
time, and (with ``--bandwidth-gbs``, or on a GPU it knows) the memory-traffic
floor: the least bytes a step must move (``minimal_traffic_bytes``) over the
card's bandwidth, and the step's time as a multiple of it. It also times a
whole jitted train step (forward, backward, update) of an MLP and of the GPT
model. Results: a table on the console, ``step_speed.json`` and
``step_speed.png`` in ``--out``::

  python -m benchmarks.step_speed --preset cpu --out runs/step_speed
  python -m benchmarks.step_speed --preset quick      # seconds, for the tests

Modules: `configs` (presets, the contenders, memory bandwidths), `timing`
(parameter trees, the interleaved timing, the memory-traffic floor), `report`
(tables, JSON, plot), ``__main__`` (the command line).

Ratios to ``optax.sgd`` carry over between machines; absolute times do not (on a
GPU, against the floor, they mean something).
"""
