"""Fromage across JAX processes: FSDP-sharded params, per-process batches, Orbax checkpoints.

Trains a small Flax model (an input layer, a stack of residual blocks scanned with
``nn.scan``, an output layer; no biases) with ``fromage_optax.fromage`` (p_bound on,
``layer_axes`` from ``scanned_layer_axes``) on a synthetic regression task. Every
kernel is split over all devices of all processes: its second-last axis over the mesh
axis ``data`` (FSDP; ``data`` spans the processes), its last axis over ``model`` when
``--model-parallel M`` > 1 (``model`` stays within a process). Each process feeds only
its rows of the global batch (``jax.make_array_from_process_local_data``) and every
process takes part in saving and restoring the state with Orbax.

Two step functions run from the same initial state (``--modes``): ``jit``, one jitted
step on the sharded arrays (XLA inserts the collectives), and ``shard_map``, the same
gradients with the optimiser update written per shard inside ``jax.shard_map`` with
``axis_name`` naming the mesh axes that split each kernel.

One command starts N local processes (each with ``--devices-per-process`` CPU
devices) that form one global mesh with JAX's multi-process runtime over 127.0.0.1::

  python -m benchmarks.multihost --launch 2                     # data=4 (2 x 2 devices)
  python -m benchmarks.multihost --launch 4 --model-parallel 2  # data=4 x model=2
  python -m benchmarks.multihost --launch 2 --save-at 5 --out runs/multihost_a
  python -m benchmarks.multihost --launch 2 --restore runs/multihost_a/checkpoint

On real hosts run one worker per host instead (no ``--launch``)::

  python -m benchmarks.multihost --coordinator HOST0:PORT --num-processes N --process-id I

Process 0 prints a table and writes ``multihost.json``, ``multihost_loss.png`` and the
gathered final params and optimiser state (``final_<mode>.npz``) into ``--out``. The
launcher stops every process as soon as one exits with an error; without it, JAX's
heartbeat (``--heartbeat-timeout``) ends the others.
"""

from __future__ import annotations

import argparse
import faulthandler
import functools
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import fromage_optax
from benchmarks import reporting

PRESETS: dict[str, dict[str, Any]] = {
    # Seconds per process: for the tests.
    "quick": {"steps": 6, "batch_size": 64, "width": 64, "layers": 4},
    # The README's step-time table.
    "cpu": {"steps": 60, "batch_size": 256, "width": 256, "layers": 4},
}
INPUT_FEATURES = 16
OUTPUT_FEATURES = 8
MODES = ("jit", "shard_map")


# --- launcher: N local processes, stopped together ----------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def worker_argv(argv: list[str]) -> list[str]:
    """`argv` without ``--launch N`` / ``--launch=N``: the arguments every worker gets."""
    kept, skip_next = [], False
    for argument in argv:
        if skip_next:
            skip_next = False
        elif argument == "--launch":
            skip_next = True
        elif not argument.startswith("--launch="):
            kept.append(argument)
    return kept


def describe_exit(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def stop_processes(processes: list[subprocess.Popen]) -> None:
    """SIGKILL to every running worker: JAX's distributed runtime takes SIGTERM as a
    preemption notice and keeps running."""
    for process in processes:
        if process.poll() is None:
            process.kill()
    for process in processes:
        process.wait()


def watch_processes(processes: list[subprocess.Popen], timeout: float) -> int:
    """0 when all exit with 0; 1 as soon as one fails or `timeout` passes (with a message)."""
    deadline = time.monotonic() + timeout
    while True:
        codes = [process.poll() for process in processes]
        failed = [(i, code) for i, code in enumerate(codes) if code not in (None, 0)]
        if failed:
            i, code = failed[0]
            running = sum(code is None for code in codes)
            print(
                f"launcher: process {i} of {len(processes)} failed ({describe_exit(code)}); "
                f"stopping the {running} still running",
                file=sys.stderr,
                flush=True,
            )
            return 1
        if all(code == 0 for code in codes):
            return 0
        if time.monotonic() > deadline:
            print(f"launcher: timed out after {timeout:g} s; stopping all", file=sys.stderr)
            return 1
        time.sleep(0.1)


def launch(num_processes: int, argv: list[str], devices_per_process: int, timeout: float) -> int:
    """Runs this script as `num_processes` workers on 127.0.0.1; returns the exit status."""
    coordinator = f"127.0.0.1:{free_port()}"
    environment = dict(os.environ, JAX_PLATFORMS="cpu")
    environment["XLA_FLAGS"] = (
        environment.get("XLA_FLAGS", "")
        + f" --xla_force_host_platform_device_count={devices_per_process}"
    ).strip()
    common = [*worker_argv(argv), "--coordinator", coordinator]
    common += ["--num-processes", str(num_processes)]
    # SIGTERM (e.g. from a job scheduler) unwinds through `finally`, stopping the workers.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    processes: list[subprocess.Popen] = []
    try:
        for process_id in range(num_processes):
            command = [sys.executable, "-m", "benchmarks.multihost", *common]
            command += ["--process-id", str(process_id)]
            processes.append(subprocess.Popen(command, env=environment))
            print(
                f"launcher: process {process_id} pid {processes[-1].pid}",
                file=sys.stderr,
                flush=True,
            )
        return watch_processes(processes, timeout)
    finally:
        stop_processes(processes)


# --- model, mesh, shardings, data ----------------------------------------------------------


class Block(nn.Module):
    """x + tanh(x W): one residual layer, in the (carry, input) form `nn.scan` needs."""

    width: int

    @nn.compact
    def __call__(self, x, _):
        return x + jnp.tanh(nn.Dense(self.width, use_bias=False)(x)), None


class Model(nn.Module):
    """Input layer, `layers` scanned blocks (params stacked on axis 0), output layer.

    No biases: with p_bound, Fromage holds tensors that start at zero at zero.
    """

    width: int
    layers: int

    @nn.compact
    def __call__(self, x):
        x = jnp.tanh(nn.Dense(self.width, use_bias=False, name="embed")(x))
        blocks = nn.scan(
            Block,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            length=self.layers,
        )
        x, _ = blocks(self.width, name="blocks")(x, None)
        return nn.Dense(OUTPUT_FEATURES, use_bias=False, name="head")(x)


def make_mesh(model_parallel: int) -> jax.sharding.Mesh:
    """(data, model) mesh with each `model` group inside one process, `data` across them."""
    if jax.local_device_count() % model_parallel:
        raise ValueError(
            f"--model-parallel {model_parallel} must divide the {jax.local_device_count()} "
            "devices of each process (tensor parallelism stays within a process)."
        )
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    grid = np.array(devices).reshape(-1, model_parallel)
    return jax.sharding.Mesh(grid, ("data", "model"))


def kernel_spec(leaf) -> P:
    """Second-last axis over `data` (FSDP), last over `model`; leading (layer) axes whole."""
    return P(*([None] * (leaf.ndim - 2)), "data", "model")


def axis_names_of(spec: P) -> tuple[str, ...]:
    """The mesh axes a leaf is split over: its `axis_name` inside shard_map."""
    return tuple(name for name in spec if name is not None)


def global_batch(seed: int, step: int, batch_size: int) -> dict[str, np.ndarray]:
    """The same batch in every process: inputs and a fixed random teacher's targets."""
    teacher = np.random.default_rng(seed).standard_normal((INPUT_FEATURES, OUTPUT_FEATURES))
    inputs = np.random.default_rng([seed, step]).standard_normal((batch_size, INPUT_FEATURES))
    targets = np.sin(inputs @ teacher / np.sqrt(INPUT_FEATURES))
    return {"inputs": inputs.astype(np.float32), "targets": targets.astype(np.float32)}


def process_rows(sharding: NamedSharding, global_shape: tuple[int, ...]) -> slice:
    """The rows of the global batch that this process's devices hold."""
    indices = sharding.addressable_devices_indices_map(global_shape).values()
    starts = [index[0].start or 0 for index in indices]
    stops = [global_shape[0] if index[0].stop is None else index[0].stop for index in indices]
    return slice(min(starts), max(stops))


def device_batch(batch: dict[str, np.ndarray], mesh) -> dict[str, jax.Array]:
    """One global array per field from this process's rows only (rows split over `data`)."""
    sharding = NamedSharding(mesh, P("data"))

    def to_global(array):
        rows = process_rows(sharding, array.shape)
        return jax.make_array_from_process_local_data(sharding, array[rows], array.shape)

    return jax.tree.map(to_global, batch)


# --- optimiser, steps, state ---------------------------------------------------------------


def make_optimizer(config: dict, axis_name: Any = None) -> optax.GradientTransformation:
    """Fromage with warmup + cosine decay (so the restored step count matters) and p_bound."""
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config["learning_rate"],
        warmup_steps=max(1, config["steps"] // 10),
        decay_steps=config["steps"],
        end_value=config["learning_rate"] / 10,
    )
    return fromage_optax.fromage(
        schedule,
        p_bound=config["p_bound"],
        layer_axes=functools.partial(fromage_optax.scanned_layer_axes, module_name="blocks"),
        axis_name=axis_name,
    )


def mean_squared_error(model: Model, params, batch) -> jax.Array:
    predictions = model.apply({"params": params}, batch["inputs"])
    return jnp.mean((predictions - batch["targets"]) ** 2)


def make_jit_step(model: Model, optimizer, param_shardings, state_sharding):
    """(params, opt_state, batch) -> (params, opt_state, loss), XLA placing the collectives."""

    def step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(functools.partial(mean_squared_error, model))(
            params, batch
        )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(step, out_shardings=(param_shardings, state_sharding, state_sharding))


def make_shard_map_step(model: Model, config: dict, mesh, param_specs):
    """The same step, with the optimiser update on local shards inside `jax.shard_map`.

    Every kernel is split over both mesh axes (`kernel_spec`), so `axis_name` names both;
    the optimiser state (step count, per-layer ‖W₀‖) is the same on every device.
    """
    optimizer = make_optimizer(config, axis_name=("data", "model"))

    def update(grads, opt_state, params):
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    sharded_update = jax.shard_map(
        update, mesh=mesh, in_specs=(param_specs, P(), param_specs), out_specs=(param_specs, P())
    )

    def step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(functools.partial(mean_squared_error, model))(
            params, batch
        )
        params, opt_state = sharded_update(grads, opt_state, params)
        return params, opt_state, loss

    return jax.jit(step)


def param_specs_of(model: Model, seed: int):
    abstract = jax.eval_shape(model.init, jax.random.key(seed), jnp.zeros((1, INPUT_FEATURES)))
    return jax.tree.map(kernel_spec, abstract["params"])


def init_state(model: Model, optimizer, mesh, seed: int):
    """Params created already sharded (never whole on one device) and the optimiser state."""
    param_shardings = jax.tree.map(
        lambda spec: NamedSharding(mesh, spec),
        param_specs_of(model, seed),
        is_leaf=lambda x: isinstance(x, P),
    )

    def init_params(key):
        return model.init(key, jnp.zeros((1, INPUT_FEATURES)))["params"]

    params = jax.jit(init_params, out_shardings=param_shardings)(jax.random.key(seed))
    opt_state = jax.jit(optimizer.init, out_shardings=NamedSharding(mesh, P()))(params)
    return params, opt_state


def save_checkpoint(path: Path, params, opt_state) -> None:
    """Every process writes its shards (orbax coordinates the processes)."""
    import orbax.checkpoint as ocp

    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(path.resolve(), {"params": params, "opt_state": opt_state}, force=True)
    checkpointer.wait_until_finished()


def restore_checkpoint(path: Path, params, opt_state):
    """Restores into the shardings of `params` and `opt_state`; each process reads its shards."""
    import orbax.checkpoint as ocp

    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
        {"params": params, "opt_state": opt_state},
    )
    restored = ocp.StandardCheckpointer().restore(path.resolve(), target)
    return restored["params"], restored["opt_state"]


# --- training, results ---------------------------------------------------------------------


def train(step_fn, params, opt_state, config: dict, mesh, first_step: int, checkpoint=None):
    """Steps `first_step` .. steps-1; saves after step `save_at` when `checkpoint` is a path."""
    history = {"step": [], "loss": [], "step_seconds": []}
    for step in range(first_step, config["steps"]):
        batch = device_batch(global_batch(config["seed"], step, config["batch_size"]), mesh)
        start = time.perf_counter()
        params, opt_state, loss = step_fn(params, opt_state, batch)
        loss = float(loss)  # waits for the step; the loss is replicated on every device
        history["step_seconds"].append(time.perf_counter() - start)
        history["step"].append(step)
        history["loss"].append(loss)
        if checkpoint is not None and step + 1 == config["save_at"]:
            save_checkpoint(checkpoint, params, opt_state)
    return params, opt_state, history


def gather(tree) -> dict[str, np.ndarray]:
    """Every leaf whole on this process, keyed by its path ("['params']['head']['kernel']")."""
    from jax.experimental import multihost_utils

    whole = multihost_utils.process_allgather(tree, tiled=True)
    return {
        jax.tree_util.keystr(p): np.asarray(x)
        for p, x in jax.tree_util.tree_leaves_with_path(whole)
    }


def summarise(history: dict) -> dict:
    seconds = history["step_seconds"]
    return {
        **history,
        "first_loss": history["loss"][0] if history["loss"] else None,
        "final_loss": history["loss"][-1] if history["loss"] else None,
        "first_step_seconds": seconds[0] if seconds else None,  # includes compiling
        "median_step_seconds": float(np.median(seconds[1:])) if len(seconds) > 1 else None,
        # On a shared machine the fastest step is the least disturbed one.
        "fastest_step_seconds": float(np.min(seconds[1:])) if len(seconds) > 1 else None,
    }


def run(config: dict) -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
    """Trains once per mode from the same state; returns (results, final state per mode)."""
    mesh = make_mesh(config["model_parallel"])
    model = Model(config["width"], config["layers"])
    optimizer = make_optimizer(config)
    params, opt_state = init_state(model, optimizer, mesh, config["seed"])
    if config["restore"]:
        params, opt_state = restore_checkpoint(Path(config["restore"]), params, opt_state)
    first_step = int(opt_state.count)
    param_shardings = jax.tree.map(lambda x: x.sharding, params)
    steps = {
        "jit": lambda: make_jit_step(model, optimizer, param_shardings, NamedSharding(mesh, P())),
        "shard_map": lambda: make_shard_map_step(
            model, config, mesh, param_specs_of(model, config["seed"])
        ),
    }
    results = {
        "processes": jax.process_count(),
        "devices": jax.device_count(),
        "mesh": dict(mesh.shape),
        "first_step": first_step,
        "modes": {},
    }
    finals = {}
    print(
        f"process {jax.process_index()} of {jax.process_count()}: "
        f"{jax.local_device_count()} local devices, training from step {first_step}",
        file=sys.stderr,
        flush=True,
    )
    for i, mode in enumerate(config["modes"]):
        checkpoint = Path(config["out"]) / "checkpoint" if i == 0 and config["save_at"] else None
        new_params, new_state, history = train(
            steps[mode](), params, opt_state, config, mesh, first_step, checkpoint
        )
        results["modes"][mode] = summarise(history)
        finals[mode] = gather({"params": new_params, "opt_state": new_state})
    return results, finals


def report(config: dict, results: dict, finals: dict) -> None:
    """Process 0: the table, multihost.json, multihost_loss.png and final_<mode>.npz."""
    mesh = " x ".join(f"{name}={size}" for name, size in results["mesh"].items())
    print(f"{results['processes']} processes, {results['devices']} devices, mesh {mesh}:")
    rows = [
        {
            "mode": mode,
            "steps": f"{summary['step'][0]}..{summary['step'][-1]}" if summary["step"] else "-",
            "first loss": summary["first_loss"],
            "final loss": summary["final_loss"],
            "first step s": summary["first_step_seconds"],
            "median step ms": 1e3 * (summary["median_step_seconds"] or float("nan")),
            "fastest step ms": 1e3 * (summary["fastest_step_seconds"] or float("nan")),
        }
        for mode, summary in results["modes"].items()
    ]
    print(reporting.format_table(rows))
    out = Path(config["out"])
    config_json = {k: v for k, v in config.items() if k != "launch"}
    json_path = reporting.write_json(
        out / "multihost.json", {"config": config_json, "jax": jax.__version__, **results}
    )
    for mode, arrays in finals.items():
        np.savez(out / f"final_{mode}.npz", **arrays)
    series = {m: (s["step"], s["loss"]) for m, s in results["modes"].items() if s["step"]}
    png_path = reporting.line_plot(
        out / "multihost_loss.png",
        series,
        xlabel="step",
        ylabel="mean squared error",
        title=f"Fromage on {results['processes']} processes, mesh {mesh}",
        logy=True,
    )
    print(f"wrote {json_path}, {png_path} and final_*.npz")


# --- command line --------------------------------------------------------------------------


def parse_modes(text: str) -> tuple[str, ...]:
    modes = tuple(m.strip() for m in text.split(","))
    if not modes or any(m not in MODES for m in modes):
        raise argparse.ArgumentTypeError(f"--modes: a comma-separated subset of {MODES}")
    return modes


def parse_args(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    for name in ("steps", "batch_size", "width", "layers"):
        parser.add_argument("--" + name.replace("_", "-"), type=int, help="overrides the preset")
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--p-bound", type=float, default=2.0)
    parser.add_argument("--model-parallel", type=int, default=1, help="size of the model axis")
    parser.add_argument("--modes", type=parse_modes, default=MODES)
    parser.add_argument("--save-at", type=int, help="orbax checkpoint after this many steps")
    parser.add_argument("--restore", help="checkpoint folder to continue from")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/multihost")
    launcher = parser.add_argument_group("launcher (one machine)")
    launcher.add_argument("--launch", type=int, help="start this many local worker processes")
    launcher.add_argument("--devices-per-process", type=int, default=2)
    launcher.add_argument("--timeout", type=float, default=600.0, help="seconds, then stop all")
    worker = parser.add_argument_group("worker (one per host)")
    worker.add_argument("--coordinator", help="HOST:PORT of process 0")
    worker.add_argument("--num-processes", type=int)
    worker.add_argument("--process-id", type=int)
    worker.add_argument("--initialization-timeout", type=int, default=60, help="seconds")
    worker.add_argument("--heartbeat-timeout", type=int, default=30, help="seconds")
    args = parser.parse_args(argv)
    config = dict(PRESETS[args.preset])
    config.update({k: v for k, v in vars(args).items() if k not in config or v is not None})
    if args.launch is not None and args.launch < 1:
        parser.error("--launch needs at least 1 process")
    return config


# JAX's own deadline ends a join that cannot complete a few seconds after the timeout.
# Should its RPC hang instead (seen once on a loaded machine: a worker still in
# `initialize` 50 s after a 3 s timeout), a watchdog thread that needs no GIL ends the
# process this long after the timeout, printing where every thread was.
INITIALIZATION_GRACE = 20.0


def initialize_distributed(config: dict) -> None:
    """Joins the processes into one JAX runtime; must come before any other JAX call."""
    limit = config["initialization_timeout"] + INITIALIZATION_GRACE
    print(
        f"process {config['process_id']}: joining {config['num_processes']} processes at "
        f"{config['coordinator']} (waiting at most {config['initialization_timeout']} s; "
        f"a join still hanging after {limit:g} s ends this process)",
        file=sys.stderr,
        flush=True,
    )
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    faulthandler.dump_traceback_later(limit, exit=True)
    try:
        jax.distributed.initialize(
            coordinator_address=config["coordinator"],
            num_processes=config["num_processes"],
            process_id=config["process_id"],
            initialization_timeout=config["initialization_timeout"],
            heartbeat_timeout_seconds=config["heartbeat_timeout"],
        )
    finally:
        faulthandler.cancel_dump_traceback_later()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    config = parse_args(argv)
    if config["launch"]:
        return launch(config["launch"], argv, config["devices_per_process"], config["timeout"])
    if config["coordinator"]:
        initialize_distributed(config)
    results, finals = run(config)
    if jax.process_index() == 0:
        report(config, results, finals)
    return 0


if __name__ == "__main__":
    sys.exit(main())
