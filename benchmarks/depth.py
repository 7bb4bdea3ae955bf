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
  python -m benchmarks.depth --preset paper --data-dir ~/mnist   # GPU/TPU: full protocol

Writes ``depth.json`` (every run), ``depth.md`` (the table), ``depth.png``
(train accuracy vs depth at the best learning rate) and ``relative_trust.png``
(mean ‖ΔW‖/‖W‖ per step vs depth, from ``fromage_optax``'s relative trust
monitor) into ``--out``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax.training import train_state

from benchmarks import data as data_lib
from benchmarks import reporting, training
from benchmarks.models import mlp

TRAINABLE_ACCURACY = 0.9
PAPER_DEEPEST_TRAINABLE = {"sgd": 10, "adam": 22, "fromage": 35}

PRESETS = {
    "quick": {
        "dataset": "digits",
        "width": 32,
        "depths": (1, 3),
        "epochs": 2,
        "seeds": (0,),
    },
    # 17 minutes measured on 2 shared CPU cores. Compute per step grows as width² x depth,
    # so a narrow net buys the most steps; 4,000 training images make an epoch only
    # 16 steps (the paper's has 240), hence 60 epochs.
    "cpu": {
        "dataset": "mnist_subset",
        "width": 64,
        "depths": (1, 2, 4, 6, 8, 12, 16, 20, 24, 32, 48),
        "epochs": 60,
        "seeds": (0,),
    },
    "paper": {
        "dataset": "mnist",
        "width": 784,
        "depths": (*range(1, 11), 15, 20, 25, 30, 35, 40, 45, 50),
        "epochs": 100,
        "seeds": (0,),
    },
}
DEFAULTS = {
    "batch_size": 250,
    "lr_decay": 0.95,
    "optimizers": training.OPTIMIZER_NAMES,
    "init": "torch",
}


def _int_list(text: str) -> tuple[int, ...]:
    return tuple(int(item) for item in text.split(","))


def _optimizer_list(text: str) -> tuple[str, ...]:
    names = tuple(item.strip() for item in text.split(","))
    unknown = [name for name in names if name not in training.OPTIMIZER_NAMES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown optimizer(s) {unknown}; choose from {training.OPTIMIZER_NAMES}"
        )
    return names


def parse_args(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    parser.add_argument("--optimizers", type=_optimizer_list, help="e.g. sgd,adam,fromage")
    parser.add_argument("--depths", type=_int_list, help="e.g. 1,10,20")
    parser.add_argument("--seeds", type=_int_list, help="e.g. 0,1,2")
    parser.add_argument("--width", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr-decay", type=float, help="factor per epoch (default 0.95)")
    parser.add_argument("--dataset", choices=data_lib.DATASET_NAMES)
    parser.add_argument("--data-dir", help="folder of the four MNIST IDX files (preset paper)")
    parser.add_argument("--init", choices=mlp.INIT_SCHEMES)
    parser.add_argument("--out", default="runs/depth")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: rebuild the table and plots from --out/depth.json "
        "(e.g. of an interrupted sweep)",
    )
    args = parser.parse_args(argv)
    config = {**DEFAULTS, **PRESETS[args.preset], "preset": args.preset}
    for key in (
        "optimizers", "depths", "seeds", "width", "epochs", "batch_size", "lr_decay",
        "dataset", "init",
    ):  # fmt: skip
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    config.update(data_dir=args.data_dir, out=args.out, report_only=args.report_only)
    return config


def stacked_train_state(model, optimizer, example_inputs, seeds, learning_rates):
    """One TrainState holding len(seeds) models stacked on a leading axis.

    Model i is initialised from ``jax.random.key(seeds[i])`` and trained with
    ``learning_rates[i]`` (the optimiser must come from
    ``make_optimizer(..., injectable=True)``).
    """
    keys = jnp.stack([jax.random.key_data(jax.random.key(seed)) for seed in seeds])

    def create(key_data):
        params = model.init(jax.random.wrap_key_data(key_data), example_inputs)["params"]
        return train_state.TrainState.create(apply_fn=model.apply, params=params, tx=optimizer)

    state = jax.jit(jax.vmap(create))(keys)
    opt_state = training.with_learning_rate(state.opt_state, np.asarray(learning_rates))
    return state.replace(opt_state=opt_state)


def train_grid(config, dataset, optimizer_name: str, depth: int, on_epoch=None) -> list[dict]:
    """Trains every (learning rate, seed) of `optimizer_name` at `depth` at once; one run each."""
    learning_rates = training.PAPER_LEARNING_RATES[optimizer_name]
    grid = [(lr, seed) for lr in learning_rates for seed in config["seeds"]]
    grid_lrs = np.asarray([lr for lr, _ in grid], np.float32)
    model = mlp.MLP((config["width"],) * depth, dataset.num_classes, init_scheme=config["init"])
    optimizer = training.make_optimizer(optimizer_name, learning_rates[0], injectable=True)
    state = stacked_train_state(
        model,
        optimizer,
        dataset.train_images[:1],
        [seed * 1000 + depth for _, seed in grid],
        grid_lrs,
    )
    train_data = jax.device_put({"image": dataset.train_images, "label": dataset.train_labels})
    num_examples = len(dataset.train_images)
    # Every model of one seed sees the same batches, whatever its learning rate.
    rngs = {seed: np.random.default_rng(seed) for seed in config["seeds"]}

    def epoch_indices():
        per_seed = {
            seed: data_lib.epoch_batch_indices(num_examples, config["batch_size"], rng)
            for seed, rng in rngs.items()
        }
        # (num_steps, num_models, batch_size): scanned over steps, vmapped over models.
        return np.stack([per_seed[seed] for _, seed in grid], axis=1)

    indices = epoch_indices()
    start = time.perf_counter()
    run_epoch = (
        training.make_epoch_fn(jax.vmap(training.classifier_train_step))
        .lower(state, train_data, indices)
        .compile()
    )
    compile_seconds = time.perf_counter() - start

    history: dict = {}
    start = time.perf_counter()
    for epoch in range(config["epochs"]):
        if epoch > 0:
            indices = epoch_indices()
        decayed = grid_lrs * np.float32(config["lr_decay"]) ** epoch
        state = state.replace(opt_state=training.with_learning_rate(state.opt_state, decayed))
        state, step_metrics = run_epoch(state, train_data, indices)
        for key, value in step_metrics.items():
            # Means over the epoch's steps, one per model (train accuracy: the paper's metric).
            value = np.asarray(value, np.float64)
            history.setdefault(key, []).append(value.mean(axis=0))
        if on_epoch is not None:
            on_epoch()
    wall_seconds = time.perf_counter() - start

    runs = []
    for index, (lr, seed) in enumerate(grid):
        per_epoch = {key: [float(v[index]) for v in values] for key, values in history.items()}
        runs.append(
            {
                "optimizer": optimizer_name,
                "learning_rate": lr,
                "depth": depth,
                "seed": seed,
                "width": config["width"],
                "train_accuracy": per_epoch["accuracy"][-1],
                "accuracy_per_epoch": per_epoch["accuracy"],
                "loss_per_epoch": per_epoch["loss"],
                "mean_relative_update_norm_per_epoch": per_epoch["mean_relative_update_norm"],
                "max_relative_update_norm_per_epoch": per_epoch["max_relative_update_norm"],
                "deep_relative_trust_per_epoch": per_epoch["deep_relative_trust"],
                # The grid's models train together: this is the whole grid's time.
                "grid_wall_seconds": wall_seconds,
                "grid_compile_seconds": compile_seconds,
                "grid_size": len(grid),
                "steps_per_epoch": int(indices.shape[0]),
            }
        )
    return runs


def _floats(values) -> np.ndarray:
    # depth.json stores NaN and Inf as strings ("nan", "inf"); float() reads both forms.
    return np.asarray([float(v) for v in values], np.float64)


def best_runs(runs: list[dict]) -> dict:
    """{(optimizer, depth): summary at the learning rate with the best seed-mean accuracy}."""
    by_setting: dict = {}
    for run in runs:
        key = (run["optimizer"], run["depth"], run["learning_rate"])
        by_setting.setdefault(key, []).append(run)
    best: dict = {}
    for (optimizer, depth, lr), group in by_setting.items():
        accuracy = float(np.mean(_floats([r["train_accuracy"] for r in group])))
        accuracy = accuracy if np.isfinite(accuracy) else 0.0
        if (optimizer, depth) not in best or accuracy > best[(optimizer, depth)]["train_accuracy"]:
            # Relative update sizes averaged over all epochs (and seeds) of the run.
            run_mean = lambda key: float(np.mean([np.mean(_floats(r[key])) for r in group]))  # noqa: B023
            best[(optimizer, depth)] = {
                "optimizer": optimizer,
                "depth": depth,
                "learning_rate": lr,
                "train_accuracy": accuracy,
                "mean_relative_update_norm": run_mean("mean_relative_update_norm_per_epoch"),
                "max_relative_update_norm": run_mean("max_relative_update_norm_per_epoch"),
            }
    return best


def deepest_trainable(best: dict, optimizers, depths) -> dict:
    """{optimizer: the deepest depth whose best accuracy is ≥ 90 % (None if none)}."""
    result = {}
    for optimizer in optimizers:
        trainable = [
            d
            for d in depths
            if (optimizer, d) in best
            and best[(optimizer, d)]["train_accuracy"] >= TRAINABLE_ACCURACY
        ]
        result[optimizer] = max(trainable) if trainable else None
    return result


def results_table(best: dict, optimizers, depths) -> list[dict]:
    """One row per depth: best train accuracy (and its lr) per optimiser, then the summary."""
    rows = []
    for depth in depths:
        row: dict = {"depth": depth}
        for optimizer in optimizers:
            entry = best.get((optimizer, depth))
            row[optimizer] = (
                None
                if entry is None
                else f"{entry['train_accuracy']:.3f} (lr {entry['learning_rate']:g})"
            )
        rows.append(row)
    deepest = deepest_trainable(best, optimizers, depths)
    rows.append({"depth": "deepest ≥ 90 %", **{o: deepest[o] for o in optimizers}})
    rows.append(
        {"depth": "paper (MNIST, W=784)", **{o: PAPER_DEEPEST_TRAINABLE.get(o) for o in optimizers}}
    )
    return rows


def write_outputs(config, runs: list[dict], *, finished: bool, plots: bool = True) -> dict:
    """Writes depth.json, depth.md and (if `plots`) the two plots; returns the summary."""
    optimizers, depths = config["optimizers"], sorted({r["depth"] for r in runs})
    best = best_runs(runs)
    summary = {
        "deepest_trainable": deepest_trainable(best, optimizers, depths),
        "paper_deepest_trainable": PAPER_DEEPEST_TRAINABLE,
        "best": list(best.values()),
    }
    out = Path(config["out"])
    reporting.write_json(
        out / "depth.json",
        {"config": config, "finished": finished, "summary": summary, "runs": runs},
    )
    rows = results_table(best, optimizers, depths)
    (out / "depth.md").write_text(reporting.format_markdown_table(rows) + "\n")
    if plots:
        write_plots(config, best, optimizers, depths)
        write_trust_over_training_plot(config, runs, best, optimizers, depths)
    return {"rows": rows, **summary}


def write_plots(config, best: dict, optimizers, depths) -> None:
    """depth.png (accuracy vs depth) and relative_trust.png, at each optimiser's best lr."""
    out = Path(config["out"])
    accuracy_series, trust_series = {}, {}
    for optimizer in optimizers:
        trained = [d for d in depths if (optimizer, d) in best]
        if not trained:
            continue
        label = training.OPTIMIZER_LABELS[optimizer]
        accuracy_series[label] = (
            trained,
            [best[(optimizer, d)]["train_accuracy"] for d in trained],
        )
        for statistic in ("max", "mean"):
            trust_series[f"{label}, {statistic} over layers"] = (
                trained,
                [best[(optimizer, d)][f"{statistic}_relative_update_norm"] for d in trained],
            )
    title = (
        f"{config['dataset']}, width {config['width']}, {config['epochs']} epochs, best of 3 lrs"
    )
    reporting.line_plot(
        out / "depth.png",
        accuracy_series,
        xlabel="depth (hidden layers)",
        ylabel="train accuracy, last epoch",
        title=title,
    )
    reporting.line_plot(
        out / "relative_trust.png",
        trust_series,
        xlabel="depth (hidden layers)",
        ylabel="‖ΔW‖/‖W‖ per step (run average)",
        title=title + " (at the best lr)",
        logy=True,
    )


def trust_plot_depth(depths) -> int:
    """The depth shown over training: 16 layers (deep, yet trainable here) or the nearest run."""
    return min(depths, key=lambda d: (abs(d - 16), -d))


def write_trust_over_training_plot(config, runs, best: dict, optimizers, depths) -> None:
    """deep_relative_trust.png: ∏(1 + ‖ΔW‖/‖W‖) − 1 per epoch at one deep depth, best lr each."""
    depth = trust_plot_depth(depths)
    series = {}
    for optimizer in optimizers:
        if (optimizer, depth) not in best:
            continue
        lr = best[(optimizer, depth)]["learning_rate"]
        group = [
            r
            for r in runs
            if (r["optimizer"], r["depth"], r["learning_rate"]) == (optimizer, depth, lr)
        ]
        per_epoch = np.mean([_floats(r["deep_relative_trust_per_epoch"]) for r in group], axis=0)
        label = f"{training.OPTIMIZER_LABELS[optimizer]} (lr {lr:g})"
        series[label] = (list(range(1, len(per_epoch) + 1)), [float(v) for v in per_epoch])
    reporting.line_plot(
        Path(config["out"]) / "deep_relative_trust.png",
        series,
        xlabel="epoch",
        ylabel="deep relative trust ∏(1 + ‖ΔW‖/‖W‖) − 1 (epoch mean)",
        title=f"{config['dataset']}, {depth} hidden layers of width {config['width']}, best lr",
        logy=True,
    )


def report_only(out) -> dict:
    """Rebuilds depth.md, the plots and the printed table from `out`/depth.json."""
    import json

    saved = json.loads((Path(out) / "depth.json").read_text())
    config = {**saved["config"], "out": str(out)}
    summary = write_outputs(config, saved["runs"], finished=saved["finished"])
    print(reporting.format_table(summary["rows"]))
    return summary


def main(argv=None) -> dict:
    config = parse_args(argv)
    if config["report_only"]:
        return report_only(config["out"])
    dataset = data_lib.load_dataset(config["dataset"], data_dir=config["data_dir"])
    print(
        f"depth sweep on {dataset.name} ({len(dataset.train_images)} train images), "
        f"width {config['width']}, depths {list(config['depths'])}, {config['epochs']} epochs, "
        f"batch {config['batch_size']}, lr x{config['lr_decay']}/epoch, seeds "
        f"{list(config['seeds'])}, optimizers {list(config['optimizers'])}, "
        f"{jax.devices()[0].platform}",
        flush=True,
    )
    groups = [(o, d) for d in config["depths"] for o in config["optimizers"]]
    bar = reporting.progress(total=len(groups) * config["epochs"], desc="depth sweep")
    runs: list[dict] = []
    start = time.perf_counter()
    for optimizer_name, depth in groups:
        bar.set_postfix_str(f"{optimizer_name} depth {depth}")
        runs += train_grid(config, dataset, optimizer_name, depth, on_epoch=lambda: bar.update())
        # Rewritten after every group, so an interrupted sweep keeps what it finished.
        write_outputs(config, runs, finished=False, plots=False)
    bar.close()
    summary = write_outputs(config, runs, finished=True)
    print(reporting.format_table(summary["rows"]))
    print(
        f"total {time.perf_counter() - start:.0f} s; wrote depth.json, depth.md, depth.png, "
        f"relative_trust.png to {config['out']}"
    )
    return summary


if __name__ == "__main__":
    main()
