"""The word-level language model experiment's presets, runs, groups and optimisers."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import optax

from benchmarks import optimizers
from benchmarks.models.word_transformer import WordTransformerConfig

OPTIMIZER_NAMES = ("fromage", "adam", "sgd")
LABELS = {
    "fromage": "fromage_optax.fromage",
    "adam": "optax.adam",
    "sgd": "optax.sgd (clip 0.25)",
}
SGD_CLIP_NORM = 0.25
# The authors' logged training perplexity at epoch 10 (paper README §2), by (optimiser, lr,
# p_bound); their final test perplexities are not published.
AUTHORS_EPOCH10_TRAIN_PERPLEXITY = {
    ("fromage", 0.01, 1.0): 100.9,
    ("adam", 1e-3, None): 56.4,
    ("adam", 1e-4, None): 123.9,
    ("sgd", 1.0, None): 167.7,
}


def _lrs(flag: str) -> dict:
    return {"aliases": (flag,)}


@dataclasses.dataclass(frozen=True)
class Config:
    """A sweep: every optimiser setting at the first seed, then the other seeds at the best ones.

    Attributes:
      width, num_heads, hidden, num_layers, dropout: the model (`WordTransformerConfig`).
      batch_size, bptt: training columns and window length (PyTorch's batchify).
      eval_batch_size: columns of the validation and test streams (the example's 10).
      epochs: passes over the training stream.
      decay_after_epoch: the learning rate is divided by `decay_factor` after this epoch.
      fromage_learning_rates, fromage_p_bounds, adam_learning_rates, sgd_learning_rates: the grid.
      seeds: the first trains the grid; the others retrain each optimiser's best setting.
      optimizers: which of `OPTIMIZER_NAMES` run.
      train_words: keep this prefix of the training words (None: all); the vocabulary
        comes from it.
      min_count: the vocabulary keeps the training words seen at least this often
        (as WikiText's did); the others are <unk> in every split.
      data, data_dir: a UTF-8 text file (split 80/10/10), or a WikiText-2 folder;
        neither: the text Python ships, `corpus`.
      corpus: "pydoc" (Python's documentation topics) or "docstrings" (the
        standard library's docstrings, split by module).
    """

    width: int = 200
    num_heads: int = 2
    hidden: int = 200
    num_layers: int = 2
    dropout: float = 0.2
    batch_size: int = 20
    bptt: int = 35
    eval_batch_size: int = 10
    epochs: int = 20
    decay_after_epoch: int = 10
    decay_factor: float = 10.0
    fromage_learning_rates: tuple[float, ...] = dataclasses.field(
        default=(0.01,), metadata=_lrs("--fromage-lrs")
    )
    fromage_p_bounds: tuple[float | None, ...] = dataclasses.field(
        default=(1.0, None), metadata={"help": "numbers or 'none', e.g. 1.0 none"}
    )
    adam_learning_rates: tuple[float, ...] = dataclasses.field(
        default=(1e-3, 1e-4), metadata=_lrs("--adam-lrs")
    )
    sgd_learning_rates: tuple[float, ...] = dataclasses.field(
        default=(0.1, 1.0, 10.0), metadata=_lrs("--sgd-lrs")
    )
    seeds: tuple[int, ...] = dataclasses.field(default=(0, 1, 2), metadata={"help": "e.g. 0,1,2"})
    optimizers: tuple[str, ...] = dataclasses.field(
        default=OPTIMIZER_NAMES, metadata={"choices": OPTIMIZER_NAMES}
    )
    train_words: int | None = dataclasses.field(
        default=None, metadata={"help": "a prefix of the training words ('none': all)"}
    )
    min_count: int = 1
    corpus: str = dataclasses.field(default="pydoc", metadata={"choices": ("pydoc", "docstrings")})
    data: str | None = dataclasses.field(
        default=None, metadata={"help": "a UTF-8 text file, split 80/10/10 by lines"}
    )
    data_dir: str | None = dataclasses.field(
        default=None, metadata={"help": "a folder with wiki.{train,valid,test}.tokens"}
    )
    out: str = "runs/word_lm"
    preset: str = dataclasses.field(default="", metadata={"flag": False})

    def __post_init__(self):
        if self.data is not None and self.data_dir is not None:
            raise ValueError("--data and --data-dir are exclusive: give one")
        if not self.seeds:
            raise ValueError("--seeds needs at least one seed")
        if not 0 <= self.decay_after_epoch <= self.epochs:
            raise ValueError("--decay-after-epoch must lie in [0, epochs]")
        if self.preset == "paper" and self.data_dir is None:
            raise ValueError("the paper preset trains on WikiText-2: give --data-dir")

    def model(self, vocab_size: int) -> WordTransformerConfig:
        """The model of this config for a vocabulary of `vocab_size` words."""
        return WordTransformerConfig(
            vocab_size, self.width, self.num_heads, self.hidden, self.num_layers, self.dropout
        )

    def protocol(self) -> dict:
        """The fields a finished run's result depends on (a saved run is reused only if they
        match): everything but the grids, the seeds and the output folder."""
        grid_fields = {"optimizers", "seeds", "out", "preset"}
        return {
            key: value
            for key, value in dataclasses.asdict(self).items()
            if key not in grid_fields and not key.endswith(("_learning_rates", "_p_bounds"))
        }


PRESETS = {
    # Seconds on a CPU (the tests run it): every optimiser once, two seeds of the best.
    "quick": Config(
        width=16,
        hidden=16,
        num_layers=1,
        batch_size=4,
        bptt=8,
        eval_batch_size=4,
        epochs=2,
        decay_after_epoch=1,
        adam_learning_rates=(1e-3,),
        fromage_p_bounds=(1.0,),
        sgd_learning_rates=(1.0,),
        seeds=(0, 1),
        train_words=1500,
        min_count=2,
        out="runs/word_lm_quick",
    ),
    # The authors' model and schedule on 2 CPU cores (24 minutes measured for the sweep);
    # the package docstring describes the cut.
    # Rare words as WikiText made them: a training word seen fewer than 3 times is <unk>.
    "cpu": Config(train_words=30000, min_count=3, out="runs/word_lm"),
    # The full protocol on WikiText-2 (--data-dir), for a GPU.
    "paper": Config(out="runs/word_lm_paper"),
}


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One training run: an optimiser at one setting and seed."""

    optimizer: str
    learning_rate: float
    p_bound: float | None = None
    seed: int = 0

    @property
    def setting(self) -> str:
        """The run's name without its seed: equal for the seeds of one setting."""
        name = f"{self.optimizer}_lr{self.learning_rate:g}"
        if self.optimizer == "fromage":
            name += f"_p{self.p_bound:g}" if self.p_bound is not None else "_pNone"
        return name

    @property
    def name(self) -> str:
        return f"{self.setting}_seed{self.seed}"

    @property
    def group_key(self) -> tuple:
        """Runs with the same key share one compiled, vmapped training (lrs and seeds vary)."""
        return (self.optimizer, self.p_bound)


def grid(config: Config, seed: int | None = None) -> list[RunSpec]:
    """Every setting of the config's grids for its optimisers, at `seed` (default: the first)."""
    seed = config.seeds[0] if seed is None else seed
    runs = []
    for name in config.optimizers:
        if name == "fromage":
            runs += [
                RunSpec(name, lr, p, seed)
                for p in config.fromage_p_bounds
                for lr in config.fromage_learning_rates
            ]
        elif name == "adam":
            runs += [RunSpec(name, lr, seed=seed) for lr in config.adam_learning_rates]
        elif name == "sgd":
            runs += [RunSpec(name, lr, seed=seed) for lr in config.sgd_learning_rates]
        else:
            raise ValueError(f"unknown optimizer {name!r}; choose from {OPTIMIZER_NAMES}")
    return runs


def groups(runs: Sequence[RunSpec]) -> list[list[RunSpec]]:
    """`runs` gathered by `RunSpec.group_key`, in order of first appearance."""
    gathered: dict[tuple, list[RunSpec]] = {}
    for run in runs:
        gathered.setdefault(run.group_key, []).append(run)
    return list(gathered.values())


def learning_rate_at(config: Config, learning_rate: float, epoch: int) -> float:
    """The learning rate during `epoch` (1-based): ÷ decay_factor after decay_after_epoch."""
    if epoch > config.decay_after_epoch:
        return learning_rate / config.decay_factor
    return learning_rate


@functools.cache
def make_optimizer(optimizer: str, p_bound: float | None) -> optax.GradientTransformation:
    """The optimiser of a group, its learning rate injected (set per model and epoch).

    Fromage works on every tensor (biases and LayerNorm parameters too), Adam is
    plain (optax defaults, no decay or clipping), SGD has no momentum and clips
    the global gradient norm at 0.25, as the PyTorch example. Cached: the same
    object for the same group, so a jitted epoch compiled for it is reused.
    """
    options = {
        "fromage": {"p_bound": p_bound},
        "adam": {},
        "sgd": {"clip_norm": SGD_CLIP_NORM},
    }
    if optimizer not in options:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose from {OPTIMIZER_NAMES}")
    # The initial rate is a placeholder: every model's rate is set before each epoch.
    return optimizers.make_optimizer(
        optimizer, 1.0, monitor=False, injectable=True, **options[optimizer]
    )
