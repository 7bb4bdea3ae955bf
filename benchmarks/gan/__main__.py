"""Command line of the GAN experiment: ``python -m benchmarks.gan --preset cpu``.

Every field of `benchmarks.gan.configs.Config` is a flag (``--optimizers
fromage,adam``, ``--steps 2000``, ...) that overrides the preset's value.
"""

from __future__ import annotations

import time

import jax

from benchmarks import cli, reporting
from benchmarks import data as data_lib
from benchmarks.gan import configs
from benchmarks.gan.report import best_learning_rate, write_outputs
from benchmarks.gan.train import Scorer, Trainer, train_models


def parse_args(argv=None) -> configs.Config:
    """The preset (default "quick") with the command line's flags applied."""
    import benchmarks.gan

    parser = cli.preset_parser(
        "benchmarks.gan", benchmarks.gan.__doc__, configs.PRESETS, default="quick"
    )
    return cli.config_from_args(parser, parser.parse_args(argv), configs.PRESETS)


def _announce(config: configs.Config, dataset, trainer: Trainer, scorer: Scorer, info) -> None:
    classifier = scorer.classifier_info
    print(
        f"class-conditional GAN on {dataset.name} ({trainer.num_train} train images), "
        f"{config.steps} steps of batch {config.batch_size}, lr/10 after "
        f"{config.lr_decay_at:.0%}, optimizers {list(config.optimizers)}, seeds "
        f"{list(config.seeds)}; feature classifier test accuracy "
        f"{classifier['test_accuracy']:.3f}{' (cached)' if classifier['cached'] else ''}, "
        f"real train vs test Fréchet distance {scorer.real_test_frechet_distance:.3g}; "
        f"{info['platform']}",
        flush=True,
    )


def run_optimizer(config, trainer, scorer, name: str, bar) -> list[dict]:
    """The grid phase of optimiser `name`, then its seeds at the grid's best rate."""

    def on_chunk(means):
        bar.update()
        bar.set_postfix_str(
            f"{name} D {means['discriminator_loss']:.3f} G {means['generator_loss']:.3f}"
        )

    seeds = tuple(config.seeds)
    grid = configs.learning_rate_grid(name, config.lr_factors)
    runs = train_models(
        trainer, scorer, name, grid, [seeds[0]] * len(grid), phase="grid", on_chunk=on_chunk
    )
    best = best_learning_rate(runs)
    return runs + train_models(
        trainer, scorer, name, [best] * len(seeds), seeds, phase="seeds", on_chunk=on_chunk
    )


def main(argv=None) -> dict:
    config = parse_args(argv)
    dataset = data_lib.load_dataset(config.dataset, data_dir=config.data_dir)
    start = time.perf_counter()
    scorer = Scorer(config, dataset)
    trainer = Trainer(config, dataset)
    info = {
        "classifier": scorer.classifier_info,
        "real_test_frechet_distance": scorer.real_test_frechet_distance,
        "lr_decay_step": configs.learning_rate_decay_step(config),
        "platform": jax.devices()[0].platform,
    }
    _announce(config, dataset, trainer, scorer, info)
    chunks = config.steps // config.eval_every
    bar = reporting.progress(total=2 * len(config.optimizers) * chunks, desc="GAN")
    runs: list[dict] = []
    for name in config.optimizers:
        runs += run_optimizer(config, trainer, scorer, name, bar)
        # Rewritten after every optimiser, so an interrupted run keeps what it finished.
        write_outputs(config, info, runs, finished=False)
    bar.close()
    info["total_seconds"] = time.perf_counter() - start
    result = write_outputs(config, info, runs, finished=True)
    print(reporting.format_table(result["rows"]))
    if result["fromage_versus_adam"] is not None:
        print(f"Fromage vs Adam: {result['fromage_versus_adam']}")
    print(
        f"total {info['total_seconds']:.0f} s; wrote gan.json, gan.md, gan.png, gan_accuracy.png, "
        f"samples_*.png to {config.out}"
    )
    return result


if __name__ == "__main__":
    main()
