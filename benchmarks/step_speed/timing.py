"""Timing of optimiser steps: parameter trees, compiled contenders run interleaved, the
memory-traffic floor, and whole train steps of an MLP and the GPT."""

from __future__ import annotations

import functools
import os
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import training
from benchmarks.models import gpt, mlp
from benchmarks.step_speed import compile_time
from benchmarks.step_speed.configs import (
    BANDWIDTH_GBS,
    INIT_SCALE,
    NORM_BASED_OPTIMIZERS,
    OPTIMIZERS,
    TRAIN_STEP_OPTIMIZERS,
)


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


# Before a step is timed, the process's other threads must have been idle this long
# (`wait_until_idle`); the longest wait, and the fixed wait where the OS does not say
# which threads run.
IDLE_WINDOW_S = 0.001
IDLE_LIMIT_S = 2.0
IDLE_FALLBACK_S = 0.05


def _threads_running() -> bool | None:
    """Whether a thread of this process other than this one is running or runnable;
    None where the OS does not say (no ``/proc/self/task``)."""
    me = str(threading.get_native_id())
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return None
    for tid in tids:
        if tid == me:
            continue
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:  # the thread has ended
            continue
        # The state is the field after the command name, which is in parentheses.
        if stat[stat.rindex(")") + 2 :].startswith("R"):
            return True
    return False


def wait_until_idle(
    window_s: float = IDLE_WINDOW_S,
    limit_s: float = IDLE_LIMIT_S,
    fallback_s: float = IDLE_FALLBACK_S,
) -> float:
    """Wait until no other thread of this process has run for `window_s`; the seconds waited.

    A step's outputs can be ready before the runtime is done with the step: after
    each `optax.lars` step on the 50M-parameter tree, one XLA:CPU thread spends
    about 22 ms more, in system time (by all signs freeing the step's 400 MB of
    temporaries). A step timed at once ran beside that work on the other core
    (fromage 30-46 ms instead of 18-20, SGD 28 ms instead of 12), so each
    contender's time depended on which contender ran before it. It polls rather
    than sleeps, so that it returns as soon as the threads are idle. Where the OS
    does not say which threads run, it waits `fallback_s`; it gives up after `limit_s`.
    """
    start = time.perf_counter()
    quiet_since = start
    while True:
        now = time.perf_counter()
        running = _threads_running()
        if running is None:
            if now - start >= fallback_s:
                return now - start
        elif running:
            quiet_since = now
        elif now - quiet_since >= window_s:
            return now - start
        if now - start >= limit_s:
            return now - start


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
        self.busy_after: list[float] = []

    def run(self, record: bool) -> None:
        """One step, timed from a quiet process until its outputs are ready; then the wait
        until the runtime's threads are idle again (`wait_until_idle`), so that the next
        step, whoever's it is, starts from a quiet process too."""
        start = time.perf_counter()
        self.params, self.state, *_ = _block(self.compiled(self.params, self.state, *self.args))
        elapsed = time.perf_counter() - start
        waited = wait_until_idle()
        if record:
            self.times.append(elapsed)
            self.busy_after.append(max(waited - IDLE_WINDOW_S, 0.0))


def _interleaved(contenders: list[_Contender], repeats: int, warmup: int = 2) -> None:
    wait_until_idle()
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


def optimizer_step(name: str, spec: dict, dtype: str):
    """(step, params, state) of contender `name` on the tree `spec`: the step is
    ``update`` + ``optax.apply_updates`` of (params, state, grads)."""
    optimizer = OPTIMIZERS[name]()

    def step(params, state, grads):
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    params = parameter_tree(spec, dtype, seed=0)
    scale = INIT_SCALE.get(name, 1)
    # Jitted: run eagerly, an init over 2000 leaves dispatches (and compiles) op by op.
    state = jax.jit(lambda p: optimizer.init(jax.tree.map(lambda x: x * scale, p)))(params)
    return step, params, state


def time_optimizer_steps(
    tree_name: str,
    spec: dict,
    dtype: str,
    repeats: int,
    names: list[str],
    bandwidth_gbs: float | None = None,
    fresh_compile: bool = False,
    fresh_compile_repeats: int = 1,
) -> list[dict]:
    """Rows of median step time per optimiser on one parameter tree.

    With `bandwidth_gbs`, each row also holds the memory-traffic floor: the time
    `minimal_traffic_bytes` takes at that bandwidth, and the step time over it.
    With `fresh_compile`, each row's ``compile_s`` is measured again in processes of
    its own, `fresh_compile_repeats` per contender in rounds over the contenders, and is
    their median (``compile_runs_s`` holds each; ``compile_in_process_s`` this
    process's figure).
    """
    grads = parameter_tree(spec, dtype, seed=1)
    contenders = []
    for name in names:
        step, params, state = optimizer_step(name, spec, dtype)
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
    if fresh_compile:
        runs: dict[str, list[float]] = {row["optimizer"]: [] for row in rows}
        for _ in range(fresh_compile_repeats):
            for row in rows:
                runs[row["optimizer"]].append(
                    compile_time.fresh_process_compile_seconds(dict(spec), dtype, row["optimizer"])
                )
        for row in rows:
            row["compile_in_process_s"] = row["compile_s"]
            row["compile_runs_s"] = runs[row["optimizer"]]
            row["compile_s"] = float(np.median(runs[row["optimizer"]]))
            row["compile_where"] = "fresh process"
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
        # How long the runtime's threads stayed busy after the outputs were ready (not in "ms").
        "busy_after_ms": float(np.median(contender.busy_after) * 1e3),
    }


def _mlp_problem(config: dict):
    model = mlp.MLP(hidden_sizes=tuple(config["hidden_sizes"]), num_outputs=10)
    rng = np.random.default_rng(0)
    inputs = jnp.asarray(rng.normal(size=(config["batch"], config["inputs"])), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 10, size=config["batch"]), jnp.int32)
    params = jax.jit(model.init)(jax.random.key(0), inputs)["params"]
    loss = lambda p, x, y: training.cross_entropy_loss(model.apply({"params": p}, x), y)
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
    loss = lambda p, x, y: training.cross_entropy_loss(model.apply({"params": p}, x), y)
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
            "busy_after_ms": float(np.median(c.busy_after) * 1e3),
        }
        for c in contenders
    ]


def train_step_rows(config, repeats: int, names: list[str], bar) -> list[dict]:
    train_names = [n for n in TRAIN_STEP_OPTIMIZERS if n in names]
    bar.set_postfix_str("mlp train step")
    rows = time_train_steps("mlp", _mlp_problem(config.mlp), repeats, train_names)
    bar.update()
    bar.set_postfix_str("gpt train step")
    gpt_repeats = max(3, repeats // 3)
    rows += time_train_steps("gpt", _gpt_problem(config.gpt_train), gpt_repeats, train_names)
    bar.update()
    return rows
