"""Why a deep, narrow MLP stays at chance: the input signal through depth, during training.

``python -m benchmarks.depth.signal --preset cpu`` trains one depth with every
optimiser at its three learning rates (and several seeds, vmapped, as the depth
sweep does) and, at a few probe epochs, measures on a fixed batch of training
images, per hidden layer:

* **input signal**: the units' standard deviation across images over the
  activations' root mean square (0: every image gives the same activations, so
  the layers above see no input at all; about 1: as much spread as size);
* **dead units**: the fraction of units that are zero for every image (their
  weights get no gradient again, so a layer of dead units stops training).

At PyTorch's init U(±1/√fan_in) a ReLU layer multiplies the activations' variance
by about 1/6 while its bias adds a constant, so the input signal decays
geometrically with depth; whether an optimiser recovers it decides whether a deep
net leaves chance. Writes ``signal.json``, ``signal.md`` and ``signal.png``.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import cli, reporting
from benchmarks import data as data_lib
from benchmarks.depth import configs
from benchmarks.depth.train import Grid


@dataclasses.dataclass(frozen=True)
class SignalConfig:
    """One depth and width, every optimiser at its three learning rates and every seed."""

    dataset: str = dataclasses.field(metadata={"choices": data_lib.DATASET_NAMES})
    width: int
    depth: int
    epochs: int
    probe_epochs: tuple[int, ...] = dataclasses.field(metadata={"help": "e.g. 0,15,150"})
    seeds: tuple[int, ...] = (0,)
    optimizers: tuple[str, ...] = ("sgd", "adam", "fromage")
    batch_size: int = 250
    lr_decay: float = 0.95
    lr_decay_every_steps: int | None = 240
    probe_examples: int = 500
    out: str = "runs/depth_signal"
    preset: str = dataclasses.field(default="", metadata={"flag": False})

    def sweep_config(self) -> configs.Config:
        """The depth sweep's config that `benchmarks.depth.train.Grid` trains with."""
        return configs.Config(
            dataset=self.dataset,
            width=self.width,
            depths=(self.depth,),
            epochs=self.epochs,
            seeds=self.seeds,
            batch_size=self.batch_size,
            lr_decay=self.lr_decay,
            lr_decay_every_steps=self.lr_decay_every_steps,
        )


PRESETS = {
    "quick": SignalConfig(
        dataset="digits", width=16, depth=4, epochs=2, probe_epochs=(0, 2), batch_size=100
    ),
    # Depth 32, width 64: past Adam's width-64 cliff, where Fromage still learns (long preset).
    # 150 epochs of the 4,000-image subset are 2,400 steps; about 4 minutes on 2 cores.
    "cpu": SignalConfig(
        dataset="mnist_subset",
        width=64,
        depth=32,
        epochs=150,
        probe_epochs=(0, 15, 60, 150),
        seeds=(0, 1, 2),
    ),
}


def layer_signal(params, images, depth: int):
    """(input signal, dead fraction), each of shape (depth,): per hidden layer of an
    `benchmarks.models.mlp.MLP` with these `params`, on `images`."""
    h = images.reshape(images.shape[0], -1)
    signal, dead = [], []
    for index in range(depth):
        layer = params[f"hidden_{index}"]
        h = jax.nn.relu(h @ layer["kernel"] + layer["bias"])
        spread = jnp.mean(jnp.std(h, axis=0))
        size = jnp.sqrt(jnp.mean(jnp.square(h)))
        signal.append(jnp.where(size > 0, spread / jnp.where(size > 0, size, 1.0), 0.0))
        dead.append(jnp.mean(jnp.all(h == 0, axis=0)))
    return jnp.stack(signal), jnp.stack(dead)


@functools.partial(jax.jit, static_argnums=2)
def _stacked_signal(params, images, depth: int):
    return jax.vmap(lambda p: layer_signal(p, images, depth))(params)


def probe(state, images, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """`layer_signal` of every stacked model in `state`: two (models, depth) arrays."""
    signal, dead = _stacked_signal(state.params, images, depth)
    return np.asarray(signal, np.float64), np.asarray(dead, np.float64)


def train_with_probes(config: SignalConfig, dataset, optimizer: str, on_epoch=None) -> list[dict]:
    """Trains `optimizer`'s grid (its three lrs x seeds) and probes it; one dict per model."""
    grid = Grid(config.sweep_config(), dataset, optimizer, config.depth)
    images = jnp.asarray(dataset.train_images[: config.probe_examples])
    state, accuracy, probes = grid.initial_state, [], {}
    for epoch in range(config.epochs + 1):
        if epoch in config.probe_epochs:
            probes[epoch] = probe(state, images, config.depth)
        if epoch == config.epochs:
            break
        state, means = grid.epoch(state, epoch)
        accuracy.append(means["accuracy"])
        if on_epoch is not None:
            on_epoch()
    runs = []
    for index, (lr, seed) in enumerate(grid.grid):
        runs.append(
            {
                "optimizer": optimizer,
                "learning_rate": lr,
                "seed": seed,
                "accuracy_per_epoch": [float(a[index]) for a in accuracy],
                "signal": {str(e): s[index].tolist() for e, (s, _) in probes.items()},
                "dead_fraction": {str(e): d[index].tolist() for e, (_, d) in probes.items()},
            }
        )
    return runs


def summary_rows(config: SignalConfig, runs: list[dict]) -> list[dict]:
    """Per model: final train accuracy (mean of the last epoch), the last hidden layer's input
    signal at init and at the end, and the largest dead fraction of any layer at the end."""
    first, last = str(min(config.probe_epochs)), str(max(config.probe_epochs))
    rows = []
    for run in runs:
        rows.append(
            {
                "optimizer": run["optimizer"],
                "lr": run["learning_rate"],
                "seed": run["seed"],
                "final accuracy": round(run["accuracy_per_epoch"][-1], 3),
                f"signal, layer {config.depth}, epoch {first}": run["signal"][first][-1],
                f"signal, layer {config.depth}, epoch {last}": run["signal"][last][-1],
                f"most dead in a layer, epoch {last}": max(run["dead_fraction"][last]),
            }
        )
    return rows


def markdown(saved: dict) -> str:
    """signal.md from the saved signal.json."""
    config = cli.from_json(SignalConfig, saved["config"])
    return reporting.format_markdown_table(summary_rows(config, saved["runs"])) + "\n"


def write_plot(config: SignalConfig, runs: list[dict], path: Path) -> None:
    """Input signal against layer at the last probe (solid), first seed, every lr; the init's
    (dashed, grey) for comparison."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(config.optimizers), figsize=(4.2 * len(config.optimizers), 3.8),
                             dpi=110, sharey=True, squeeze=False)  # fmt: skip
    first, last = str(min(config.probe_epochs)), str(max(config.probe_epochs))
    layers = np.arange(1, config.depth + 1)
    for ax, optimizer in zip(axes[0], config.optimizers, strict=True):
        ours = [r for r in runs if r["optimizer"] == optimizer and r["seed"] == config.seeds[0]]
        for run in ours:
            accuracy = run["accuracy_per_epoch"][-1]
            ax.semilogy(layers, np.maximum(run["signal"][last], 1e-12), "-o", ms=2,
                        label=f"lr {run['learning_rate']:g} (acc {accuracy:.2f})")  # fmt: skip
        if ours:
            ax.semilogy(layers, np.maximum(ours[0]["signal"][first], 1e-12), "--", c="grey",
                        label=f"epoch {first} (init)")  # fmt: skip
        ax.set_title(f"{configs.LABELS[optimizer]}, epoch {last}", fontsize=9)
        ax.set_xlabel("hidden layer")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("input signal: std across images / rms")
    fig.suptitle(f"{config.dataset}, depth {config.depth}, width {config.width}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = cli.preset_parser("benchmarks.depth.signal", __doc__, PRESETS, default="quick")
    config = cli.config_from_args(parser, parser.parse_args(argv), PRESETS)
    dataset = data_lib.load_dataset(config.dataset)
    start = time.perf_counter()
    bar = reporting.progress(total=len(config.optimizers) * config.epochs, desc="signal")
    runs: list[dict] = []
    for optimizer in config.optimizers:
        bar.set_postfix_str(optimizer)
        runs += train_with_probes(config, dataset, optimizer, on_epoch=lambda: bar.update())
    bar.close()
    rows = summary_rows(config, runs)
    out = Path(config.out)
    results = {"config": config, "rows": rows, "runs": runs,
               "wall_seconds": time.perf_counter() - start}  # fmt: skip
    reporting.write_json(out / "signal.json", results)
    (out / "signal.md").write_text(markdown(reporting.read_json(out / "signal.json")))
    write_plot(config, runs, out / "signal.png")
    print(reporting.format_table(rows))
    print(f"wrote signal.json, signal.md, signal.png to {out}")
    return results


if __name__ == "__main__":
    main()
