"""The step-speed benchmark's presets, its contenders (from `benchmarks.optimizers`) and the
memory bandwidths of known accelerators."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

from benchmarks import optimizers
from benchmarks.step_speed import norm_variants

# The contenders, by display name: each a registry optimiser at a typical learning rate.
OPTIMIZERS = {
    "optax.sgd": functools.partial(optimizers.create, "sgd", 0.01),
    "optax.adam": functools.partial(optimizers.create, "adam", 1e-3),
    "optax.lars": functools.partial(optimizers.create, "lars", 0.01),
    "optax.fromage": functools.partial(optimizers.create, "optax_fromage", 0.01),
    "fromage": functools.partial(optimizers.create, "fromage", 0.01),
    "fromage p_bound=2": functools.partial(optimizers.create, "fromage", 0.01, p_bound=2.0),
    "fromage p_bound=2, at the bound": functools.partial(
        optimizers.create, "fromage", 0.01, p_bound=2.0
    ),
    # Design study (`norm_variants`), not run unless named: the step from plain sums only
    # (inexact at extreme scales), from plain sums behind the library's one-conditional
    # fallback (exact), and from sums at three scales in one read (exact, branch-free).
    "plain-sums step": functools.partial(norm_variants.plain_sums_step, 0.01),
    "gated plain-sums step": functools.partial(norm_variants.gated_plain_sums_step, 0.01),
    "three-scale step": functools.partial(norm_variants.three_scale_step, 0.01),
}
DESIGN_STUDY = ("plain-sums step", "gated plain-sums step", "three-scale step")
INIT_SCALE = {"fromage p_bound=2, at the bound": 0.5}
TRAIN_STEP_OPTIMIZERS = ("optax.sgd", "optax.adam", "fromage")
# The least memory traffic of one step, counted in params-sized passes: every optimiser
# reads W and g and writes W' (3 passes, SGD's floor); one that scales by ‖W‖/‖g‖ must
# read W and g once more for the norms before it can write anything (5). Optimiser state
# (Adam's moments, LARS's momentum) is read and written once on top.
NORM_BASED_OPTIMIZERS = frozenset(
    {
        "optax.lars",
        "optax.fromage",
        "fromage",
        "fromage p_bound=2",
        "fromage p_bound=2, at the bound",
        *DESIGN_STUDY,
    }
)
# Peak memory bandwidth in GB/s by `device_kind` (first match wins): the vendors' figures.
BANDWIDTH_GBS = (
    ("H100 PCIe", 2000.0),
    ("H100 NVL", 3900.0),
    ("H100", 3350.0),  # H100 SXM (HBM3)
    ("H200", 4800.0),
    ("A100-SXM4-80GB", 2039.0),
    ("A100 80GB PCIe", 1935.0),
    ("A100", 1555.0),  # the 40 GB cards
)


@dataclasses.dataclass(frozen=True)
class Config:
    """What to time: parameter trees (specs: see `timing.parameter_tree`), dtypes, contenders.

    Attributes:
      trees: {name: spec} of the parameter trees this preset can time.
      dtypes: the dtypes each tree is timed in.
      repeats: timed runs per optimiser (each the median of interleaved runs).
      mlp, gpt_train: the two whole-train-step problems (hidden sizes, batch; GPT preset).
      tree_names: which of `trees` to time (flag ``--trees``).
      optimizers: which contenders (names of `OPTIMIZERS`; optax.sgd always runs first).
      fresh_compile_trees: which of the timed trees report each contender's compile time
        from a fresh process (`compile_time`) rather than from this one, where it depends
        on what was compiled before.
      fresh_compile_repeats: how many fresh processes per contender on those trees (rounds
        over the contenders in turn); ``compile_s`` is their median.
      train_steps: also time a whole jitted train step of the MLP and the GPT.
      bandwidth_gbs: memory bandwidth of the traffic floor (None: from the device kind;
        no floor on a CPU).
    """

    trees: Mapping[str, Mapping[str, Any]] = dataclasses.field(metadata={"flag": False})
    dtypes: tuple[str, ...] = dataclasses.field(metadata={"choices": ("float32", "bfloat16")})
    repeats: int = dataclasses.field(metadata={"help": "timed runs per optimiser"})
    mlp: Mapping[str, Any] = dataclasses.field(metadata={"flag": False})
    gpt_train: Mapping[str, Any] = dataclasses.field(metadata={"flag": False})
    tree_names: tuple[str, ...] = dataclasses.field(
        default=("few_large", "many_small", "gpt"),
        metadata={
            "aliases": ("--trees",),
            "help": "e.g. few_large,many_small,gpt (many_tiny, for compile time, on request)",
        },
    )
    optimizers: tuple[str, ...] = dataclasses.field(
        default=tuple(n for n in OPTIMIZERS if n not in DESIGN_STUDY),
        metadata={"choices": tuple(OPTIMIZERS)},
    )
    fresh_compile_trees: tuple[str, ...] = dataclasses.field(
        default=("many_small",),
        metadata={
            "help": "trees whose compile times are measured again, each contender in a "
            "process of its own (compile_time.py); none: ''"
        },
    )
    fresh_compile_repeats: int = dataclasses.field(
        default=5,
        metadata={
            "help": "fresh processes per contender on those trees, in interleaved rounds; "
            "the median is reported (the same program's compile took 9.5-11.9 s in six "
            "processes of one run, in two modes)"
        },
    )
    train_steps: bool = dataclasses.field(
        default=True, metadata={"help": "time whole train steps too (--no-train-steps: skip)"}
    )
    bandwidth_gbs: float | None = dataclasses.field(
        default=None,
        metadata={
            "help": "memory bandwidth for the traffic floor (default: from the device kind, "
            "e.g. H100 SXM 3350, H200 4800; no floor on a CPU)"
        },
    )
    out: str = "runs/step_speed"
    preset: str = dataclasses.field(default="", metadata={"flag": False})


_FULL_TREES = {
    "few_large": {"leaves": 100, "shape": (500, 1000)},
    "many_small": {"pairs": 1000, "kernel": (40, 49)},
    # Thousands of tiny tensors (norm-layer scales, biases): compile time's worst case.
    "many_tiny": {"leaves": 5000, "shape": (8,)},
}
PRESETS = {
    # Seconds (the tests): compile time grows with the leaves, so the trees are small.
    "quick": Config(
        trees={
            "few_large": {"leaves": 2, "shape": (100, 250)},
            "many_small": {"pairs": 4, "kernel": (8, 12)},
            "many_tiny": {"leaves": 20, "shape": (8,)},
            "gpt": {"gpt_preset": "tiny"},
        },
        dtypes=("float32",),
        repeats=3,
        fresh_compile_trees=(),
        fresh_compile_repeats=1,
        mlp={"hidden_sizes": (32,), "batch": 16, "inputs": 64},
        gpt_train={"gpt_preset": "tiny", "batch": 2},
    ),
    "cpu": Config(
        trees={**_FULL_TREES, "gpt": {"gpt_preset": "speed_cpu"}},
        dtypes=("float32", "bfloat16"),
        repeats=15,
        mlp={"hidden_sizes": (1024,) * 4, "batch": 256, "inputs": 784},
        gpt_train={"gpt_preset": "speed_cpu", "batch": 8},
    ),
    "gpu": Config(
        trees={**_FULL_TREES, "gpt": {"gpt_preset": "gpu"}},
        dtypes=("float32", "bfloat16"),
        repeats=30,
        mlp={"hidden_sizes": (4096,) * 4, "batch": 1024, "inputs": 784},
        gpt_train={"gpt_preset": "gpu", "batch": 16},
    ),
}
