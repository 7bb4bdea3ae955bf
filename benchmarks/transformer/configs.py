"""The transformer experiment's presets, its grid of runs and each run's optimiser."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import optax

import fromage_optax
from benchmarks import optimizers

OPTIMIZER_NAMES = ("fromage", "adamw", "sgd", "optax_fromage", "fromage_adamw", "muon")
LABELS = {
    "fromage": "fromage_optax.fromage",
    "adamw": "optax.adamw",
    "sgd": "optax.sgd (momentum 0.9)",
    "optax_fromage": "optax.fromage",
    "fromage_adamw": "fromage_optax.fromage_with_adamw",
    "muon": "optax.contrib.muon",
}
# Which tensors the recipe (fromage_adamw) gives Fromage; AdamW updates the rest.
RECIPE_SELECTIONS = ("kernels", "matrices")
# The recipe's Fromage norms: one per tensor (the paper) or one per output unit (as Nero).
RECIPE_NORMS = ("tensor", "neuron")
# Leaves that are weight matrices (the "layers" of deep relative trust, and the
# leaves AdamW decays); biases and LayerNorm parameters are left out.
MATRIX_LEAF_NAMES = ("kernel", "embedding", "position_embedding")


def _lrs(flag: str) -> dict:
    return {"aliases": (flag,)}


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a run of the experiment fixes: the model, the training, the grids, the data.

    Attributes:
      model: name of the `benchmarks.models.gpt.gpt_config` preset.
      steps: optimiser steps of every run.
      batch_size: sequences per step.
      eval_interval: steps between evaluations (there is one at step 0 and at the end).
      max_eval_batches: cap on the validation split's evaluation batches (windows
        are spread evenly; the whole split when it holds fewer).
      max_train_eval_batches: the same cap for the training split's evaluation.
      eval_batch_size: sequences per evaluation batch.
      warmup_steps: linear warm-up of the AdamW and SGD schedules.
      fromage_learning_rates, fromage_p_bounds, adamw_learning_rates,
      sgd_learning_rates, optax_fromage_learning_rates: the grids.
      fromage_schedules: "constant" (the paper) and/or "cosine" for fromage_optax.fromage.
      fromage_momenta: None (the paper) and/or β: fromage_optax.fromage fed the
        gradients' exponential moving average ``optax.trace(β)`` (a variant).
      adamw_weight_decays: AdamW's decoupled weight decay on the matrices.
      recipe_learning_rates, recipe_adamw_learning_rates, recipe_p_bounds,
      recipe_momenta, recipe_norms, recipe_selections, recipe_weight_decays: the grid of
        fromage_optax.fromage_with_adamw (Fromage's peak lr, AdamW's peak lr,
        both warm-up + cosine; Fromage's p_bound, momentum, norms per "tensor"
        or per output "neuron"; Fromage on the "kernels" of the blocks, or on
        every "matrices" including the embeddings; AdamW's decoupled weight decay
        on the embeddings it updates).
      muon_learning_rates, muon_adam_learning_rates: the grid of optax.contrib.muon
        (Muon's peak lr on the blocks' kernels, AdamW's on the rest; both warm-up + cosine).
      optimizers: which of `OPTIMIZER_NAMES` run.
      seeds: every run of the grid runs once per seed (init and batches).
      corpus: the shipped text when neither --data nor --data-dir is given
        ("pydoc" or "docstrings", `benchmarks.text_data.CORPORA`).
      scan_layers, dtype, init: override the model preset's (None: keep it).
      data, data_dir: a UTF-8 text file (split 90/10), or a WikiText-2 folder;
        neither: the text Python ships.
      checkpoint_every: Orbax checkpoint period in steps (0: none).
    """

    model: str
    steps: int
    batch_size: int
    eval_interval: int
    max_eval_batches: int
    eval_batch_size: int
    warmup_steps: int
    fromage_learning_rates: tuple[float, ...] = dataclasses.field(
        default=(0.01, 0.003), metadata=_lrs("--fromage-lrs")
    )
    fromage_p_bounds: tuple[float | None, ...] = dataclasses.field(
        default=(None, 1.0, 2.0), metadata={"help": "numbers or 'none', e.g. none 1.0 2.0"}
    )
    adamw_learning_rates: tuple[float, ...] = dataclasses.field(
        default=(3e-3, 1e-3, 3e-4), metadata=_lrs("--adamw-lrs")
    )
    sgd_learning_rates: tuple[float, ...] = dataclasses.field(
        default=(1.0, 0.3, 0.1), metadata=_lrs("--sgd-lrs")
    )
    optax_fromage_learning_rates: tuple[float, ...] = dataclasses.field(
        default=(0.01, 0.003), metadata=_lrs("--optax-fromage-lrs")
    )
    fromage_schedules: tuple[str, ...] = dataclasses.field(
        default=("constant",), metadata={"choices": ("constant", "cosine")}
    )
    fromage_momenta: tuple[float | None, ...] = dataclasses.field(
        default=(None,), metadata={"help": "'none' (the paper) and/or β: along optax.trace(β)"}
    )
    adamw_weight_decays: tuple[float, ...] = (0.1,)
    recipe_learning_rates: tuple[float, ...] = dataclasses.field(
        default=(0.03,), metadata=_lrs("--recipe-lrs")
    )
    recipe_adamw_learning_rates: tuple[float, ...] = dataclasses.field(
        default=(3e-3,), metadata=_lrs("--recipe-adamw-lrs")
    )
    recipe_p_bounds: tuple[float | None, ...] = dataclasses.field(
        default=(None,), metadata={"help": "numbers or 'none'"}
    )
    recipe_momenta: tuple[float | None, ...] = dataclasses.field(
        default=(None,), metadata={"help": "'none' and/or β: Fromage along optax.trace(β)"}
    )
    recipe_norms: tuple[str, ...] = dataclasses.field(
        default=("tensor",), metadata={"choices": RECIPE_NORMS}
    )
    recipe_selections: tuple[str, ...] = dataclasses.field(
        default=("kernels",), metadata={"choices": RECIPE_SELECTIONS}
    )
    recipe_weight_decays: tuple[float, ...] = (0.0,)
    muon_learning_rates: tuple[float, ...] = dataclasses.field(
        default=(0.02,), metadata=_lrs("--muon-lrs")
    )
    muon_adam_learning_rates: tuple[float, ...] = dataclasses.field(
        default=(3e-3,), metadata=_lrs("--muon-adam-lrs")
    )
    optimizers: tuple[str, ...] = dataclasses.field(
        default=OPTIMIZER_NAMES, metadata={"choices": OPTIMIZER_NAMES}
    )
    seeds: tuple[int, ...] = (0,)
    corpus: str = dataclasses.field(default="pydoc", metadata={"choices": ("pydoc", "docstrings")})
    max_train_eval_batches: int = 5
    scan_layers: bool | None = dataclasses.field(
        default=None, metadata={"help": "stack the blocks with nn.scan, per-layer layer_axes"}
    )
    dtype: str | None = dataclasses.field(
        default=None, metadata={"choices": ("float32", "bfloat16")}
    )
    init: str | None = dataclasses.field(default=None, metadata={"choices": ("gpt2", "lecun")})
    data: str | None = dataclasses.field(
        default=None, metadata={"help": "a UTF-8 text file, split 90/10 into train/validation"}
    )
    data_dir: str | None = dataclasses.field(
        default=None, metadata={"help": "a folder with wiki.{train,valid,test}.tokens or .raw"}
    )
    checkpoint_every: int = 0
    out: str = "runs/transformer"
    preset: str = dataclasses.field(default="", metadata={"flag": False})

    def __post_init__(self):
        if self.data is not None and self.data_dir is not None:
            raise ValueError("--data and --data-dir are exclusive: give one")
        if not self.seeds:
            raise ValueError("--seeds needs at least one seed")

    def protocol(self) -> dict:
        """The fields a finished run's result depends on besides its own setting (a saved
        run is reused only if they match): everything but the grids, the seeds, the
        output folder and the checkpoint period."""
        grid_suffixes = (
            "_rates",
            "_p_bounds",
            "_schedules",
            "_momenta",
            "_norms",
            "_selections",
            "_weight_decays",
        )
        skip = {"optimizers", "seeds", "out", "preset", "checkpoint_every"}
        return {
            key: value
            for key, value in dataclasses.asdict(self).items()
            if key not in skip and not key.endswith(grid_suffixes)
        }

    def model_overrides(self) -> dict:
        """The model fields this config sets (for ``gpt.gpt_config(model, **...)``)."""
        fields = {"scan_layers": self.scan_layers, "dtype": self.dtype, "init": self.init}
        return {key: value for key, value in fields.items() if value is not None}


PRESETS = {
    "quick": Config(
        model="tiny",
        steps=12,
        batch_size=4,
        eval_interval=6,
        max_eval_batches=2,
        eval_batch_size=8,
        warmup_steps=2,
        fromage_learning_rates=(0.01,),
        fromage_p_bounds=(1.0,),
        adamw_learning_rates=(1e-3,),
        sgd_learning_rates=(0.1,),
        optax_fromage_learning_rates=(0.01,),
    ),
    # nanoGPT's CPU configuration: 4 layers, 4 heads, width 128, context 64, batch 12, 2000 steps.
    "cpu": Config(
        model="cpu",
        steps=2000,
        batch_size=12,
        eval_interval=250,
        max_eval_batches=5,
        eval_batch_size=48,
        warmup_steps=100,
    ),
    # The README's comparison: the cpu model at LeCun init, each optimiser at the
    # setting tuned on pydoc topics seed 0 (docs/results/transformer/), three
    # seeds, validation on ≥ 200k bytes (or the whole split when smaller).
    "recipe": Config(
        model="cpu",
        init="lecun",
        steps=2000,
        batch_size=12,
        eval_interval=500,
        max_eval_batches=70,  # 70 × 48 windows × 64 bytes = 215,040 bytes
        eval_batch_size=48,
        warmup_steps=100,
        optimizers=("adamw", "fromage_adamw", "fromage", "muon"),
        adamw_learning_rates=(3e-3,),
        adamw_weight_decays=(0.3,),
        recipe_learning_rates=(0.02,),
        recipe_adamw_learning_rates=(0.01,),
        recipe_weight_decays=(0.3,),
        fromage_learning_rates=(0.03,),
        fromage_p_bounds=(None,),
        fromage_schedules=("cosine",),
        # The best of six runs (docs/results/transformer/muon_tuning/).
        muon_learning_rates=(0.01,),
        muon_adam_learning_rates=(3e-3,),
        seeds=(0, 1, 2),
    ),
    # ≈114M parameters; for one GPU/TPU, ideally on WikiText-2 (--data-dir).
    "gpu": Config(
        model="gpu",
        steps=5000,
        batch_size=32,
        eval_interval=500,
        max_eval_batches=32,
        eval_batch_size=32,
        warmup_steps=200,
    ),
}


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One training run: an optimiser at one setting and seed."""

    optimizer: str
    learning_rate: float
    p_bound: float | None = None
    schedule: str = "constant"  # or "cosine": warm-up + cosine decay to lr/10
    momentum: float | None = None  # fromage(_adamw): Fromage steps along an EMA of gradients
    weight_decay: float = 0.1  # adamw: decay on the matrices; fromage_adamw: on AdamW's embeddings
    adamw_learning_rate: float | None = None  # fromage_adamw: AdamW's lr on the other tensors
    norms: str = "tensor"  # fromage_adamw: "tensor" or "neuron" (per output unit)
    selection: str = "kernels"  # fromage_adamw: see RECIPE_SELECTIONS
    seed: int = 0

    @property
    def name(self) -> str:
        """The run's name: its setting and seed (its results file and checkpoint folder)."""
        return f"{self.setting}_seed{self.seed}"

    @property
    def setting(self) -> str:
        """The run's name without its seed: equal for the seeds of one setting."""
        name = f"{self.optimizer}_lr{self.learning_rate:g}"
        if self.optimizer in ("fromage_adamw", "muon"):
            name += f"_alr{self.adamw_learning_rate:g}"
        if self.optimizer in ("fromage", "fromage_adamw"):
            name += f"_p{self.p_bound:g}" if self.p_bound is not None else "_pNone"
        if self.optimizer in ("fromage", "fromage_adamw") and self.momentum is not None:
            name += f"_m{self.momentum:g}"
        if self.optimizer == "fromage_adamw":
            name += "" if self.norms == "tensor" else f"_{self.norms}"
            name += "" if self.selection == "kernels" else f"_{self.selection}"
            name += "" if self.weight_decay == 0 else f"_wd{self.weight_decay:g}"
        if self.optimizer == "adamw" and self.weight_decay != 0.1:
            name += f"_wd{self.weight_decay:g}"
        if self.optimizer in ("fromage", "optax_fromage") and self.schedule != "constant":
            name += f"_{self.schedule}"
        return name


def grid(config: Config, names: Sequence[str]) -> list[RunSpec]:
    """Every run of the config's grids for the optimisers `names`, at every seed of the config."""
    return [
        dataclasses.replace(run, seed=seed)
        for seed in config.seeds
        for run in _settings(config, names)
    ]


def _settings(config: Config, names: Sequence[str]) -> list[RunSpec]:
    runs = []
    for name in names:
        if name == "fromage":
            runs += [
                RunSpec(name, lr, p, schedule, momentum)
                for momentum in config.fromage_momenta
                for schedule in config.fromage_schedules
                for lr in config.fromage_learning_rates
                for p in config.fromage_p_bounds
            ]
        elif name == "adamw":
            runs += [
                RunSpec(name, lr, schedule="cosine", weight_decay=decay)
                for decay in config.adamw_weight_decays
                for lr in config.adamw_learning_rates
            ]
        elif name == "fromage_adamw":
            runs += [
                RunSpec(
                    name,
                    lr,
                    p,
                    "cosine",
                    momentum,
                    adamw_learning_rate=adamw_lr,
                    norms=norms,
                    selection=selection,
                    weight_decay=decay,
                )
                for decay in config.recipe_weight_decays
                for selection in config.recipe_selections
                for norms in config.recipe_norms
                for momentum in config.recipe_momenta
                for adamw_lr in config.recipe_adamw_learning_rates
                for lr in config.recipe_learning_rates
                for p in config.recipe_p_bounds
            ]
        elif name == "sgd":
            runs += [RunSpec(name, lr, schedule="cosine") for lr in config.sgd_learning_rates]
        elif name == "optax_fromage":
            runs += [RunSpec(name, lr) for lr in config.optax_fromage_learning_rates]
        elif name == "muon":
            runs += [
                RunSpec(name, lr, schedule="cosine", weight_decay=0.0, adamw_learning_rate=adam_lr)
                for adam_lr in config.muon_adam_learning_rates
                for lr in config.muon_learning_rates
            ]
        else:
            raise ValueError(f"unknown optimizer {name!r}; choose from {OPTIMIZER_NAMES}")
    return runs


def matrix_mask(params: Any) -> Any:
    """True for weight matrices and embeddings, False for biases and LayerNorm parameters."""

    def is_matrix(path, _):
        return getattr(path[-1], "key", None) in MATRIX_LEAF_NAMES

    return jax.tree_util.tree_map_with_path(is_matrix, params)


def recipe_mask(selection: str):
    """The recipe's Fromage leaves: the blocks' Dense kernels, or every matrix incl. embeddings.

    An untied output head ("output_head") goes to AdamW in both: like the
    embeddings, its scale sets the logits'.
    """
    if selection == "kernels":
        return fromage_optax.kernel_mask(exclude=("output_head",))
    if selection == "matrices":
        return matrix_mask
    raise ValueError(f"unknown recipe selection {selection!r}; choose from {RECIPE_SELECTIONS}")


def neuron_layer_axes(params: Any) -> Any:
    """Fromage's ``layer_axes`` for one norm per output unit of every GPT matrix.

    A Dense kernel ``[in, out]`` gets -1 (a norm over its inputs for each output
    unit, the granularity of Nero); an embedding ``[vocab, width]`` gets 0 (a
    norm per token's vector, which is also that token's output weights when
    tied); blocks stacked by ``nn.scan`` add their layer axis 0.
    """

    def axes(path, _):
        keys = [getattr(key, "key", None) for key in path]
        unit_axis = -1 if keys[-1] == "kernel" else 0
        if "blocks" in keys:  # [layers, ...]: the layer axis, then the unit axis
            return (0, unit_axis if unit_axis < 0 else 1)
        return unit_axis

    return jax.tree_util.tree_map_with_path(axes, params)


def _recipe_layer_axes(norms: str, layer_axes: Any) -> Any:
    if norms == "tensor":
        return layer_axes
    if norms == "neuron":
        return neuron_layer_axes
    raise ValueError(f"unknown recipe norms {norms!r}; choose from {RECIPE_NORMS}")


def make_optimizer(
    run: RunSpec, *, steps: int, warmup_steps: int, layer_axes: Any = None
) -> optax.GradientTransformation:
    """The optimiser of `run`, followed by `monitor_relative_trust` over the weight matrices.

    Fromage (both implementations) runs at a constant learning rate, as in the
    paper, unless ``run.schedule`` is "cosine" (the same warm-up + cosine as
    the others), and sees the raw gradients unless ``run.momentum`` is set:
    then ``optax.chain(optax.trace(momentum), fromage(...))``, Fromage's
    per-layer relative step along a moving average of the gradients (not in
    the paper). AdamW (weight decay 0.1 on matrices, β₂ = 0.99, as nanoGPT)
    and SGD (momentum 0.9) use warm-up + cosine and clip the global gradient
    norm at 1; clipping would not change a Fromage step, which ignores
    gradient scale. The recipe (``fromage_adamw``) runs Fromage on the tensors
    of ``run.selection`` and AdamW (β₂ = 0.99, no weight decay, no clipping) on
    the rest, both with warm-up + cosine from their own peak learning rates;
    AdamW decays (``run.weight_decay``) only the embeddings among its tensors.
    Muon (``optax.contrib.muon``) orthogonalises the steps of the blocks' Dense
    kernels (the recipe's Fromage leaves) and runs AdamW (β₂ = 0.99, no decay)
    on the rest, both with warm-up + cosine from their own peaks.
    """
    if run.schedule == "cosine":
        learning_rate = optimizers.warmup_cosine(run.learning_rate, warmup_steps, steps)
    elif run.schedule == "constant":
        learning_rate = run.learning_rate
    else:
        raise ValueError(f"unknown schedule {run.schedule!r}; choose 'constant' or 'cosine'")
    options = {
        "fromage": {"p_bound": run.p_bound, "layer_axes": layer_axes, "momentum": run.momentum},
        "adamw": {
            "b2": 0.99,
            "weight_decay": run.weight_decay,
            "mask": matrix_mask,
            "clip_norm": 1.0,
        },
        "sgd": {"momentum": 0.9, "clip_norm": 1.0},
        "optax_fromage": {},
    }
    if run.optimizer == "muon":
        options["muon"] = {
            "adam_learning_rate": optimizers.warmup_cosine(
                run.adamw_learning_rate, warmup_steps, steps
            ),
            "muon_mask": recipe_mask("kernels"),
            "adam_b2": 0.99,
        }
    if run.optimizer == "fromage_adamw":
        options["fromage_adamw"] = {
            "adamw_learning_rate": optimizers.warmup_cosine(
                run.adamw_learning_rate, warmup_steps, steps
            ),
            "fromage_mask": recipe_mask(run.selection),
            "p_bound": run.p_bound,
            "layer_axes": _recipe_layer_axes(run.norms, layer_axes),
            "momentum": run.momentum,
            "b2": 0.99,
            "weight_decay": run.weight_decay,
            # Without decay no mask, so the state (and checkpoints) stay those of plain AdamW.
            "weight_decay_mask": matrix_mask if run.weight_decay else None,
        }
    if run.optimizer not in options:
        raise ValueError(f"unknown optimizer {run.optimizer!r}; choose from {OPTIMIZER_NAMES}")
    return optimizers.make_optimizer(
        run.optimizer,
        learning_rate,
        monitor_mask=matrix_mask,
        monitor_layer_axes=layer_axes,
        **options[run.optimizer],
    )
