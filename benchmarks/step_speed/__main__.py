"""Command line of the step-speed benchmark: ``python -m benchmarks.step_speed --preset cpu``.

Every field of `benchmarks.step_speed.configs.Config` that is not a tree spec
is a flag (``--repeats``, ``--optimizers``, ``--trees``, ``--dtypes``,
``--no-train-steps``, ``--bandwidth-gbs``, ``--out``) that overrides the preset.
"""

from __future__ import annotations

import dataclasses

import jax

from benchmarks import cli, reporting
from benchmarks.step_speed import configs, report, timing


def parse_args(argv=None) -> configs.Config:
    """The preset (default "cpu") with the command line's flags applied."""
    import benchmarks.step_speed

    parser = cli.preset_parser(
        "benchmarks.step_speed", benchmarks.step_speed.__doc__, configs.PRESETS, default="cpu"
    )
    return cli.config_from_args(parser, parser.parse_args(argv), configs.PRESETS)


def run(config: configs.Config) -> dict:
    """Times every (tree, dtype, optimiser), writes the JSON and plot, prints the tables.

    ``config.bandwidth_gbs`` (default: looked up from the device kind, none on a
    CPU) sets the memory-traffic floor that each step is compared with.
    """
    bandwidth_gbs = config.bandwidth_gbs or timing.device_bandwidth_gbs(
        jax.devices()[0].device_kind
    )
    config = dataclasses.replace(config, bandwidth_gbs=bandwidth_gbs)
    names = ["optax.sgd"] + [n for n in config.optimizers if n != "optax.sgd"]
    jobs = [
        (tree_name, spec, dtype)
        for tree_name, spec in config.trees.items()
        if tree_name in config.tree_names
        for dtype in config.dtypes
    ]
    rows: list[dict] = []
    bar = reporting.progress(total=len(jobs) + 2 * config.train_steps, desc="step speed")
    for tree_name, spec, dtype in jobs:
        bar.set_postfix_str(f"{tree_name} {dtype}")
        rows.extend(
            timing.time_optimizer_steps(
                tree_name,
                spec,
                dtype,
                config.repeats,
                names,
                bandwidth_gbs,
                fresh_compile=tree_name in config.fresh_compile_trees,
                fresh_compile_repeats=config.fresh_compile_repeats,
            )
        )
        bar.update()
    train_rows = []
    if config.train_steps:
        train_rows = timing.train_step_rows(config, config.repeats, names, bar)
    bar.close()
    return report.write_outputs(config, rows, train_rows, names)


def main(argv=None) -> dict:
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
