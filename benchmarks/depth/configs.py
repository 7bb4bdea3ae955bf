"""The depth experiment's presets and the paper's protocol constants."""

from __future__ import annotations

import dataclasses

from benchmarks import data as data_lib
from benchmarks.models import mlp

TRAINABLE_ACCURACY = 0.9
PAPER_DEEPEST_TRAINABLE = {"sgd": 10, "adam": 22, "fromage": 35}
# The paper's three initial learning rates per optimiser (names of `benchmarks.optimizers`).
PAPER_LEARNING_RATES = {
    "sgd": (1.0, 0.1, 0.01),
    "adam": (1e-2, 1e-3, 1e-4),
    "fromage": (0.1, 0.01, 0.001),
    "optax_fromage": (0.1, 0.01, 0.001),
}
# SGD with momentum 0.9; the others with optax's defaults.
OPTIMIZER_OPTIONS = {"sgd": {"momentum": 0.9}}
LABELS = {
    "sgd": "SGD (momentum 0.9)",
    "adam": "Adam",
    "fromage": "fromage_optax.fromage",
    "optax_fromage": "optax.fromage",
}


@dataclasses.dataclass(frozen=True)
class Config:
    """A depth sweep: every optimiser at every depth, each at its three learning rates."""

    dataset: str = dataclasses.field(metadata={"choices": data_lib.DATASET_NAMES})
    width: int
    depths: tuple[int, ...] = dataclasses.field(metadata={"help": "e.g. 1,10,20"})
    epochs: int
    seeds: tuple[int, ...] = dataclasses.field(default=(0,), metadata={"help": "e.g. 0,1,2"})
    batch_size: int = 250
    lr_decay: float = dataclasses.field(default=0.95, metadata={"help": "factor per epoch"})
    optimizers: tuple[str, ...] = dataclasses.field(
        default=tuple(PAPER_LEARNING_RATES),
        metadata={"choices": tuple(PAPER_LEARNING_RATES), "help": "e.g. sgd,adam,fromage"},
    )
    init: str = dataclasses.field(default="torch", metadata={"choices": mlp.INIT_SCHEMES})
    data_dir: str | None = dataclasses.field(
        default=None, metadata={"help": "folder of the four MNIST IDX files (preset paper)"}
    )
    out: str = "runs/depth"
    preset: str = dataclasses.field(default="", metadata={"flag": False})


PRESETS = {
    "quick": Config(dataset="digits", width=32, depths=(1, 3), epochs=2),
    # 17 minutes measured on 2 shared CPU cores. Compute per step grows as width² x depth,
    # so a narrow net buys the most steps; 4,000 training images make an epoch only
    # 16 steps (the paper's has 240), hence 60 epochs.
    "cpu": Config(
        dataset="mnist_subset",
        width=64,
        depths=(1, 2, 4, 6, 8, 12, 16, 20, 24, 32, 48),
        epochs=60,
    ),
    "paper": Config(
        dataset="mnist",
        width=784,
        depths=(*range(1, 11), 15, 20, 25, 30, 35, 40, 45, 50),
        epochs=100,
    ),
}
