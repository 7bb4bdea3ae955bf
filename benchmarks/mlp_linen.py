"""Fromage vs Adam on a Flax Linen MLP (``flax.training.train_state.TrainState``).

The quick start's main job: trains the same MLP, from the same initial
weights, once per optimiser, prints train/test accuracy and wall time, and
writes ``mlp_linen.json`` and a loss-curve PNG into ``--out``::

  python -m benchmarks.mlp_linen                    # digits, fromage 0.01 vs adam 1e-3
  python -m benchmarks.mlp_linen --preset quick     # a few seconds, for tests
  python -m benchmarks.mlp_linen --optimizers fromage:0.01,adam:0.001,sgd:0.1

Any optimiser of `benchmarks.optimizers` can be compared: the train step
(`benchmarks.training.classifier_train_step`) takes the optimiser from the
train state, so nothing else changes. Presets, flags and the report are in
`benchmarks.comparison`, shared with the NNX twin `benchmarks.mlp_nnx`.
"""

from __future__ import annotations

import jax

from benchmarks import training
from benchmarks.comparison import compare_optimizers, parse_args, report
from benchmarks.models import mlp


def linen_setup(config, dataset, optimizer):
    """(state, train_step, eval_step) of a Linen MLP + TrainState using `optimizer`."""
    model = mlp.MLP(config.hidden_sizes, dataset.num_classes, init_scheme=config.init)
    state = training.create_train_state(
        model, optimizer, dataset.train_images[:1], jax.random.key(config.seed)
    )
    return state, training.classifier_train_step, training.classifier_eval_step


def main(argv=None) -> list[dict]:
    config = parse_args(argv, description=__doc__)
    results = compare_optimizers(config, linen_setup, framework="Linen")
    report(config, results, framework="Linen", stem="mlp_linen")
    return results


if __name__ == "__main__":
    main()
