"""How long one optimiser step takes: Fromage vs optax.fromage, SGD, Adam and LARS.

Times ``update`` + ``optax.apply_updates`` under ``jax.jit`` with the params and
optimiser state donated, after warm-up, as the median of several runs with all
optimisers interleaved (so a busy machine slows them alike), on

* ``few_large``: 50M parameters in 100 leaves (memory-bound; ``--preset cpu``),
* ``many_small``: 2M parameters in 2000 leaves (per-tensor overhead dominates),
* ``gpt``: the parameter tree of the benchmarks' GPT model,

in float32 and bfloat16, and reports each optimiser's state size and compile
time, and (with ``--bandwidth-gbs``, or on a GPU it knows) the memory-traffic
floor: the least bytes a step must move (``minimal_traffic_bytes``) over the
card's bandwidth, and the step's time as a multiple of it. It also times a
whole jitted train step (forward, backward, update) of an MLP and of the GPT
model. Results: a table on the console, ``step_speed.json`` and
``step_speed.png`` in ``--out``::

  python -m benchmarks.step_speed --preset cpu --out runs/step_speed
  python -m benchmarks.step_speed --preset quick      # seconds, for the tests

Ratios to ``optax.sgd`` carry over between machines; absolute times do not (on a
GPU, against the floor, they mean something).
"""

from __future__ import annotations

import argparse
import functools
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import fromage_optax
from benchmarks import reporting
from benchmarks.models import gpt, mlp

OPTIMIZERS: dict[str, Callable[[], optax.GradientTransformation]] = {
    "optax.sgd": lambda: optax.sgd(0.01),
    "optax.adam": lambda: optax.adam(1e-3),
    "optax.lars": lambda: optax.lars(0.01),
    "optax.fromage": lambda: optax.fromage(0.01),
    "fromage": lambda: fromage_optax.fromage(0.01),
    "fromage p_bound=2": lambda: fromage_optax.fromage(0.01, p_bound=2.0),
    "fromage p_bound=2, at the bound": lambda: fromage_optax.fromage(0.01, p_bound=2.0),
}
# Optimisers whose state is initialised from the params times this factor. With
# W₀ = W/2 every tensor starts at its bound 2·‖W₀‖, so every step needs ⟨W, g⟩
# (far from the bound, `fromage` skips that third pass over the tensors).
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

PRESETS: dict[str, dict[str, Any]] = {
    # Seconds (the tests): compile time grows with the leaves, so the trees are small.
    "quick": {
        "trees": {
            "few_large": {"leaves": 2, "shape": (100, 250)},
            "many_small": {"pairs": 4, "kernel": (8, 12)},
            "gpt": {"gpt_preset": "tiny"},
        },
        "dtypes": ("float32",),
        "repeats": 3,
        "mlp": {"hidden_sizes": (32,), "batch": 16, "inputs": 64},
        "gpt_train": {"gpt_preset": "tiny", "batch": 2},
    },
    "cpu": {
        "trees": {
            "few_large": {"leaves": 100, "shape": (500, 1000)},
            "many_small": {"pairs": 1000, "kernel": (40, 49)},
            "gpt": {"gpt_preset": "speed_cpu"},
        },
        "dtypes": ("float32", "bfloat16"),
        "repeats": 15,
        "mlp": {"hidden_sizes": (1024,) * 4, "batch": 256, "inputs": 784},
        "gpt_train": {"gpt_preset": "speed_cpu", "batch": 8},
    },
    "gpu": {
        "trees": {
            "few_large": {"leaves": 100, "shape": (500, 1000)},
            "many_small": {"pairs": 1000, "kernel": (40, 49)},
            "gpt": {"gpt_preset": "gpu"},
        },
        "dtypes": ("float32", "bfloat16"),
        "repeats": 30,
        "mlp": {"hidden_sizes": (4096,) * 4, "batch": 1024, "inputs": 784},
        "gpt_train": {"gpt_preset": "gpu", "batch": 16},
    },
}


@functools.cache
def _gpt_tree_shapes(preset: str) -> tuple:
    config = gpt.gpt_config(preset)
    shapes = jax.eval_shape(lambda: gpt.init_gpt_params(config, jax.random.key(0)))
    leaves, treedef = jax.tree.flatten(shapes)
    return treedef, [leaf.shape for leaf in leaves]


# One jitted function for every tree, so each (shape, dtype) compiles once per process.
@functools.partial(jax.jit, static_argnames=("shape", "dtype"))
def _normal_leaf(key, shape, dtype):
    return jax.random.normal(key, shape, jnp.float32).astype(dtype)


def parameter_tree(spec: dict, dtype: str, seed: int) -> dict:
    """A params-like tree of random normal arrays described by `spec`.

    `spec` is ``{"gpt_preset": name}`` (the GPT model's tree), ``{"pairs": n,
    "kernel": shape}`` or ``{"leaves": n, "shape": shape}``.
    """
    key = jax.random.key(seed)
    if "gpt_preset" in spec:
        treedef, shapes = _gpt_tree_shapes(spec["gpt_preset"])
    elif "pairs" in spec:
        # A deep narrow network: `pairs` layers of a kernel and a bias (leaf order: bias, kernel).
        layers = {f"layer_{i:04d}": {"bias": 0, "kernel": 0} for i in range(spec["pairs"])}
        treedef = jax.tree.structure(layers)
        shapes = [tuple(spec["kernel"][:1]), tuple(spec["kernel"])] * spec["pairs"]
    else:
        shapes = [tuple(spec["shape"])] * spec["leaves"]
        treedef = jax.tree.structure({f"w_{i:04d}": 0 for i in range(spec["leaves"])})
    keys = jax.random.split(key, len(shapes))
    leaves = [_normal_leaf(k, shape=s, dtype=dtype) for k, s in zip(keys, shapes)]
    return jax.tree.unflatten(treedef, leaves)


def _state_bytes(state) -> int:
    # `.nbytes` of a device array, not of a host copy: Adam's state on a GPU is gigabytes.
    return int(sum(jnp.asarray(leaf).nbytes for leaf in jax.tree.leaves(state)))


def _block(tree):
    jax.block_until_ready(tree)
    return tree


class _Contender:
    """One optimiser's compiled step, with its own donated params and state."""

    def __init__(self, name: str, step_fn, params, state, args):
        self.name = name
        start = time.perf_counter()
        self.compiled = (
            jax.jit(step_fn, donate_argnums=(0, 1)).lower(params, state, *args).compile()
        )
        self.compile_seconds = time.perf_counter() - start
        self.state_bytes = _state_bytes(state)
        self.params, self.state, self.args = params, state, args
        self.times: list[float] = []

    def run(self, record: bool) -> None:
        start = time.perf_counter()
        self.params, self.state, *_ = _block(self.compiled(self.params, self.state, *self.args))
        if record:
            self.times.append(time.perf_counter() - start)


def _interleaved(contenders: list[_Contender], repeats: int, warmup: int = 2) -> None:
    for _ in range(warmup):
        for contender in contenders:
            contender.run(record=False)
    # A new (seeded) order every round: a step's time depends on what ran just before
    # it (caches, memory the previous step frees), and rotating one fixed order would
    # keep every optimiser behind the same predecessor.
    rng = np.random.default_rng(0)
    for _ in range(repeats):
        for index in rng.permutation(len(contenders)):
            contenders[index].run(record=True)


def minimal_traffic_bytes(optimizer: str, param_bytes: int, state_bytes: int) -> int:
    """Bytes one step must move at the least (see `NORM_BASED_OPTIMIZERS`)."""
    passes = 5 if optimizer in NORM_BASED_OPTIMIZERS else 3
    return passes * param_bytes + 2 * state_bytes


def device_bandwidth_gbs(device_kind: str) -> float | None:
    """Peak memory bandwidth (GB/s) of a known accelerator; None for CPUs and unknown cards."""
    for name, gbs in BANDWIDTH_GBS:
        if name in device_kind:
            return gbs
    return None


def time_optimizer_steps(
    tree_name: str,
    spec: dict,
    dtype: str,
    repeats: int,
    names: list[str],
    bandwidth_gbs: float | None = None,
) -> list[dict]:
    """Rows of median step time per optimiser on one parameter tree.

    With `bandwidth_gbs`, each row also holds the memory-traffic floor: the time
    `minimal_traffic_bytes` takes at that bandwidth, and the step time over it.
    """
    grads = parameter_tree(spec, dtype, seed=1)
    contenders = []
    for name in names:
        optimizer = OPTIMIZERS[name]()

        def step(params, state, grads, optimizer=optimizer):
            updates, state = optimizer.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        params = parameter_tree(spec, dtype, seed=0)
        init_scale = INIT_SCALE.get(name, 1)
        # Jitted: run eagerly, an init over 2000 leaves dispatches (and compiles) op by op.
        init = jax.jit(
            lambda p, o=optimizer, s=init_scale: o.init(jax.tree.map(lambda x: x * s, p))
        )
        state = init(params)
        contenders.append(_Contender(name, step, params, state, (grads,)))
    _interleaved(contenders, repeats)
    sgd_ms = float(np.median(contenders[0].times) * 1e3)
    tree = {
        "tree": tree_name,
        "dtype": dtype,
        "params": int(sum(leaf.size for leaf in jax.tree.leaves(grads))),
        "leaves": len(jax.tree.leaves(grads)),
        "param_bytes": _state_bytes(grads),
    }
    rows = [_optimizer_row(tree, contender, sgd_ms, bandwidth_gbs) for contender in contenders]
    del contenders
    return rows


def _optimizer_row(
    tree: dict, contender: _Contender, sgd_ms: float, bandwidth_gbs: float | None
) -> dict:
    ms = float(np.median(contender.times) * 1e3)
    floor_bytes = minimal_traffic_bytes(contender.name, tree["param_bytes"], contender.state_bytes)
    floor_ms = None if bandwidth_gbs is None else floor_bytes / (bandwidth_gbs * 1e9) * 1e3
    return {
        **tree,
        "optimizer": contender.name,
        "ms": ms,
        "x_sgd": ms / sgd_ms,
        "state_bytes": contender.state_bytes,
        "state_bytes_per_leaf": contender.state_bytes / tree["leaves"],
        "floor_bytes": floor_bytes,
        "floor_ms": floor_ms,
        "x_floor": None if floor_ms is None else ms / floor_ms,
        "compile_s": contender.compile_seconds,
        "times_ms": [t * 1e3 for t in contender.times],
    }


def _cross_entropy(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def _mlp_problem(config: dict):
    model = mlp.MLP(hidden_sizes=tuple(config["hidden_sizes"]), num_outputs=10)
    rng = np.random.default_rng(0)
    inputs = jnp.asarray(rng.normal(size=(config["batch"], config["inputs"])), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 10, size=config["batch"]), jnp.int32)
    params = jax.jit(model.init)(jax.random.key(0), inputs)["params"]
    loss = lambda p, x, y: _cross_entropy(model.apply({"params": p}, x), y)
    return params, loss, (inputs, labels)


def _gpt_problem(config: dict):
    gpt_config = gpt.gpt_config(config["gpt_preset"])
    model = gpt.GPT(gpt_config)
    rng = np.random.default_rng(0)
    tokens = rng.integers(
        0, gpt_config.vocab_size, size=(config["batch"], gpt_config.context_length + 1)
    )
    inputs = jnp.asarray(tokens[:, :-1], jnp.int32)
    targets = jnp.asarray(tokens[:, 1:], jnp.int32)
    params = gpt.init_gpt_params(gpt_config, jax.random.key(0))
    loss = lambda p, x, y: _cross_entropy(model.apply({"params": p}, x), y)
    return params, loss, (inputs, targets)


def time_train_steps(model_name: str, problem, repeats: int, names: list[str]) -> list[dict]:
    """Median time of a whole jitted train step (forward, backward, update) per optimiser."""
    params0, loss, batch = problem
    contenders = []
    for name in names:
        optimizer = OPTIMIZERS[name]()

        def train_step(params, state, inputs, labels, optimizer=optimizer):
            grads = jax.grad(loss)(params, inputs, labels)
            updates, state = optimizer.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        params = jax.tree.map(jnp.copy, params0)
        contenders.append(_Contender(name, train_step, params, optimizer.init(params), batch))
    _interleaved(contenders, repeats)
    sgd_ms = float(np.median(contenders[0].times) * 1e3)
    num_params = int(sum(leaf.size for leaf in jax.tree.leaves(params0)))
    return [
        {
            "model": model_name,
            "params": num_params,
            "optimizer": c.name,
            "ms": float(np.median(c.times) * 1e3),
            "x_sgd": float(np.median(c.times) * 1e3) / sgd_ms,
            "compile_s": c.compile_seconds,
        }
        for c in contenders
    ]


def _bar_plot(path: Path, rows: list[dict], names: list[str], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(r["tree"], r["dtype"]) for r in rows}, key=lambda g: (g[1], g[0]))
    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=120)
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        ratios = [
            next(
                r["x_sgd"] for r in rows if (r["tree"], r["dtype"]) == g and r["optimizer"] == name
            )
            for g in groups
        ]
        ax.bar(np.arange(len(groups)) + j * width, ratios, width, label=name)
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2)
    ax.set_xticklabels([f"{t}\n{d}" for t, d in groups], fontsize=8)
    ax.set_ylabel("step time / optax.sgd step time")
    ax.set_yscale("log")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=3)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _train_step_rows(config: dict, repeats: int, names: list[str], bar) -> list[dict]:
    train_names = [n for n in TRAIN_STEP_OPTIMIZERS if n in names]
    bar.set_postfix_str("mlp train step")
    rows = time_train_steps("mlp", _mlp_problem(config["mlp"]), repeats, train_names)
    bar.update()
    bar.set_postfix_str("gpt train step")
    gpt_repeats = max(3, repeats // 3)
    rows += time_train_steps("gpt", _gpt_problem(config["gpt_train"]), gpt_repeats, train_names)
    bar.update()
    return rows


def _machine(bandwidth_gbs: float | None) -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "devices": [str(d) for d in jax.devices()],
        "device_kind": jax.devices()[0].device_kind,
        "bandwidth_gbs": bandwidth_gbs,
        "jax": jax.__version__,
        "optax": optax.__version__,
    }


def _print_tables(rows: list[dict], train_rows: list[dict]) -> None:
    columns = ["tree", "dtype", "params", "leaves", "optimizer", "ms", "x_sgd"]
    columns += ["floor_ms", "x_floor", "state_bytes", "compile_s"]
    print(reporting.format_table(rows, columns))
    print()
    print(
        reporting.format_table(
            train_rows, ["model", "params", "optimizer", "ms", "x_sgd", "compile_s"]
        )
    )


def run(
    preset: str,
    out: Path,
    repeats: int | None = None,
    optimizers: list[str] | None = None,
    trees: list[str] | None = None,
    dtypes: list[str] | None = None,
    train_steps: bool = True,
    bandwidth_gbs: float | None = None,
) -> dict:
    """Times every (tree, dtype, optimiser), writes the JSON and plot, prints the tables.

    `bandwidth_gbs` (default: looked up from the device kind, none on a CPU) sets the
    memory-traffic floor that each step is compared with.
    """
    config = PRESETS[preset]
    repeats = repeats or config["repeats"]
    bandwidth_gbs = bandwidth_gbs or device_bandwidth_gbs(jax.devices()[0].device_kind)
    names = ["optax.sgd"] + [n for n in (optimizers or OPTIMIZERS) if n != "optax.sgd"]
    unknown = sorted(set(names) - set(OPTIMIZERS))
    if unknown:
        raise SystemExit(f"unknown optimizers {unknown}; choose from {list(OPTIMIZERS)}")
    jobs = [
        (t, spec, d)
        for t, spec in config["trees"].items()
        if trees is None or t in trees
        for d in (dtypes or config["dtypes"])
    ]
    rows: list[dict] = []
    bar = reporting.progress(total=len(jobs) + 2 * train_steps, desc="step speed")
    for tree_name, spec, dtype in jobs:
        bar.set_postfix_str(f"{tree_name} {dtype}")
        rows.extend(time_optimizer_steps(tree_name, spec, dtype, repeats, names, bandwidth_gbs))
        bar.update()
    train_rows = _train_step_rows(config, repeats, names, bar) if train_steps else []
    bar.close()

    results = {
        "preset": preset,
        "repeats": repeats,
        "machine": _machine(bandwidth_gbs),
        "optimizer_steps": rows,
        "train_steps": train_rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    reporting.write_json(out / "step_speed.json", results)
    _bar_plot(
        out / "step_speed.png", rows, names, f"Optimiser step time on {jax.devices()[0].platform}"
    )
    _print_tables(rows, train_rows)
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--out", type=Path, default=Path("runs/step_speed"))
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per optimiser")
    parser.add_argument(
        "--optimizers", default=None, help=f"comma-separated subset of {list(OPTIMIZERS)}"
    )
    parser.add_argument("--trees", default=None, help="comma-separated: few_large,many_small,gpt")
    parser.add_argument("--dtypes", default=None, help="comma-separated: float32,bfloat16")
    parser.add_argument("--no-train-steps", action="store_true", help="skip the whole-step timing")
    parser.add_argument(
        "--bandwidth-gbs",
        type=float,
        default=None,
        help="memory bandwidth for the traffic floor (default: looked up from the device kind, "
        "e.g. H100 SXM 3350, H200 4800; no floor on a CPU)",
    )
    args = parser.parse_args(argv)
    split = lambda text: None if text is None else [t.strip() for t in text.split(",") if t.strip()]
    run(
        args.preset,
        args.out,
        args.repeats,
        split(args.optimizers),
        split(args.trees),
        split(args.dtypes),
        train_steps=not args.no_train_steps,
        bandwidth_gbs=args.bandwidth_gbs,
    )


if __name__ == "__main__":
    main()
