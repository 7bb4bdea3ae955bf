"""The GAN experiment's presets, and the paper's optimisers and learning rates for its GAN."""

from __future__ import annotations

import dataclasses

from benchmarks import data as data_lib
from benchmarks import optimizers

# The authors' best learning rates for their GAN after tuning (names of `benchmarks.optimizers`).
PAPER_BEST_LEARNING_RATES = {"fromage": 0.01, "adam": 1e-4, "sgd": 0.01, "optax_fromage": 0.01}
# Adam with betas (0, 0.999), as the paper's GAN; plain SGD; both Fromages as they are.
OPTIMIZER_OPTIONS = {"adam": {"b1": 0.0, "b2": 0.999}}
LABELS = {
    "fromage": "fromage_optax.fromage",
    "adam": "Adam (0, 0.999)",
    "sgd": "SGD",
    "optax_fromage": "optax.fromage",
}
SAMPLES_PER_CLASS_IN_GRID = 8


def base_optimizer(name: str, learning_rate):
    """The optimiser called `name` as the paper's GAN runs used it."""
    return optimizers.create(name, learning_rate, **OPTIMIZER_OPTIONS.get(name, {}))


def make_optimizer(name: str, learning_rate: float):
    """`base_optimizer` with its learning rate in the state (``optimizers.with_learning_rate``)."""
    return optimizers.make_optimizer(
        name, learning_rate, monitor=False, injectable=True, **OPTIMIZER_OPTIONS.get(name, {})
    )


def learning_rate_grid(name: str, factors) -> list[float]:
    """The authors' best rate for `name` times each of `factors`, to 3 significant digits."""
    return [float(f"{PAPER_BEST_LEARNING_RATES[name] * factor:.3g}") for factor in factors]


@dataclasses.dataclass(frozen=True)
class Config:
    """A GAN comparison: per optimiser a learning-rate grid, then seeds at the best rate."""

    dataset: str = dataclasses.field(metadata={"choices": data_lib.DATASET_NAMES})
    steps: int = dataclasses.field(metadata={"help": "train steps per run"})
    eval_every: int = dataclasses.field(metadata={"help": "steps between scores"})
    batch_size: int
    latent_size: int
    generator_hidden: tuple[int, ...]
    discriminator_hidden: tuple[int, ...]
    lr_factors: tuple[float, ...] = dataclasses.field(
        metadata={"help": "multiples of the authors' best lr, e.g. 0.333,1,3"}
    )
    seeds: tuple[int, ...] = dataclasses.field(
        metadata={"help": "e.g. 0,1,2 (the first also runs the lr grid)"}
    )
    classifier_hidden: tuple[int, ...]
    classifier_epochs: int
    eval_samples_per_class: int = dataclasses.field(
        metadata={"help": "generated images per class for each score"}
    )
    optimizers: tuple[str, ...] = dataclasses.field(
        default=tuple(PAPER_BEST_LEARNING_RATES),
        metadata={"choices": tuple(PAPER_BEST_LEARNING_RATES), "help": "e.g. fromage,adam"},
    )
    lr_decay_at: float = dataclasses.field(
        default=0.9, metadata={"help": "fraction of the steps after which the lr is divided by 10"}
    )
    classifier_seed: int = 0
    data_dir: str | None = dataclasses.field(
        default=None, metadata={"help": "folder of the four MNIST IDX files (preset gpu)"}
    )
    out: str = "runs/gan"
    preset: str = dataclasses.field(default="", metadata={"flag": False})

    def __post_init__(self):
        if self.steps % self.eval_every:
            raise ValueError("--steps must be a multiple of --eval-every")


def learning_rate_decay_step(config: Config) -> int:
    """The step from which the learning rate is divided by 10: ``lr_decay_at`` of the way,
    rounded to a multiple of ``eval_every`` (the rate changes between jitted chunks)."""
    eval_every = config.eval_every
    return int(round(config.lr_decay_at * config.steps / eval_every)) * eval_every


PRESETS = {
    "quick": Config(
        dataset="digits",
        steps=20,
        eval_every=10,
        batch_size=64,
        latent_size=8,
        generator_hidden=(32,),
        discriminator_hidden=(32,),
        lr_factors=(1.0, 3.0),
        seeds=(0, 1),
        classifier_hidden=(32,),
        classifier_epochs=10,
        eval_samples_per_class=16,
    ),
    # scikit-learn's digits on 2 busy CPU cores: 1,000 steps of 3 stacked models (and two
    # scores) took 8.3-8.8 s at load average 2.6-3.6, so 8 phases (4 optimisers x grid and
    # seeds) x 16,000 steps take about 18-19 minutes, plus a few seconds of compilation
    # per optimiser and for the classifier. The grid goes up to 10x the authors' best
    # because a 1,000-step pilot put Fromage's and SGD's best at the top of x1/3..x3.
    # Measured with that grid on the quiet machine: 17 minutes (docs/results/gan/).
    "cpu": Config(
        dataset="digits",
        steps=16_000,
        eval_every=500,
        batch_size=256,
        latent_size=32,
        generator_hidden=(128, 128),
        discriminator_hidden=(128, 128),
        lr_factors=(1 / 3, 1.0, 3.0, 10.0),
        seeds=(0, 1, 2),
        classifier_hidden=(128, 64),
        classifier_epochs=40,
        eval_samples_per_class=144,
    ),
    # Full MNIST from IDX files: 30,000 steps of batch 256 are 128 epochs.
    "gpu": Config(
        dataset="mnist",
        steps=30_000,
        eval_every=1000,
        batch_size=256,
        latent_size=64,
        generator_hidden=(512, 512, 512),
        discriminator_hidden=(512, 512, 512),
        lr_factors=(1 / 3, 1.0, 3.0),
        seeds=(0, 1, 2),
        classifier_hidden=(256, 128),
        classifier_epochs=10,
        eval_samples_per_class=1000,
    ),
}
