"""Fromage vs Adam on a Flax NNX MLP with ``nnx.Optimizer``.

The same comparison as `benchmarks.mlp_linen` (same presets, flags and output
format, from `benchmarks.comparison`), written the NNX way: the model and an
``nnx.Optimizer`` wrapping any optax transformation, split once into a graph and
a state so the train step is a pure jitted ``(state, batch) -> (state, metrics)``::

  python -m benchmarks.mlp_nnx
  python -m benchmarks.mlp_nnx --preset quick --optimizers fromage:0.01,sgd:0.1
"""

from __future__ import annotations

from flax import nnx

from benchmarks import training
from benchmarks.comparison import compare_optimizers, parse_args, report
from benchmarks.models import mlp


def nnx_setup(config, dataset, optimizer):
    """(state, train_step, eval_step) of an NNX MLP + nnx.Optimizer using `optimizer`."""
    model = mlp.NnxMLP(
        dataset.train_images.shape[1],
        config.hidden_sizes,
        dataset.num_classes,
        rngs=nnx.Rngs(config.seed),
        init_scheme=config.init,
    )
    nnx_optimizer = nnx.Optimizer(model, optimizer, wrt=nnx.Param)
    graphdef, state = nnx.split((model, nnx_optimizer))
    train_step, eval_step = training.make_nnx_classifier_steps(graphdef)
    return state, train_step, eval_step


def main(argv=None) -> list[dict]:
    config = parse_args(argv, module="benchmarks.mlp_nnx", description=__doc__)
    results = compare_optimizers(config, nnx_setup, framework="NNX")
    report(config, results, framework="NNX", stem="mlp_nnx")
    return results


if __name__ == "__main__":
    main()
