"""One contender's compile time in a process of its own.

``python -m benchmarks.step_speed.compile_time --spec JSON --dtype float32 --optimizer NAME``
builds the tree, initialises the optimiser, compiles a trivial function (XLA's one-time
start-up costs, the same for every contender), then lowers and compiles the step
(``update`` + ``optax.apply_updates``, params and state donated) as `timing` does, and
prints ``{"compile_s": ...}``.

Why a process of its own: XLA:CPU compiles a step more slowly after the process has
compiled other large programs (on the 2,000-tensor tree, fromage took 1.1-1.2x longer
after optax.lars and optax.fromage than first), so compile times measured one after
another in one process depend on the order of the contenders.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import jax
import jax.numpy as jnp

from benchmarks.step_speed.configs import OPTIMIZERS


def step_compile_seconds(spec: dict, dtype: str, name: str) -> float:
    """Seconds to lower and compile `name`'s step on the tree `spec`, in this process."""
    from benchmarks.step_speed import timing

    jax.jit(lambda x: x + 1).lower(jnp.ones(3)).compile()
    step, params, state = timing.optimizer_step(name, spec, dtype)
    grads = timing.parameter_tree(spec, dtype, seed=1)
    start = time.perf_counter()
    jax.jit(step, donate_argnums=(0, 1)).lower(params, state, grads).compile()
    return time.perf_counter() - start


def fresh_process_compile_seconds(spec: dict, dtype: str, name: str) -> float:
    """`step_compile_seconds` in a new Python process (same interpreter and environment)."""
    command = [
        sys.executable, "-m", "benchmarks.step_speed.compile_time",
        "--spec", json.dumps(spec), "--dtype", dtype, "--optimizer", name,
    ]  # fmt: skip
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    if finished.returncode != 0:
        raise RuntimeError(
            f"compiling {name} on {spec} ({dtype}) in a fresh process failed:\n"
            + finished.stderr[-3000:]
        )
    return float(json.loads(finished.stdout.strip().splitlines()[-1])["compile_s"])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.step_speed.compile_time", description=__doc__
    )
    parser.add_argument("--spec", required=True, help="a tree spec as JSON (see timing)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--optimizer", required=True, choices=tuple(OPTIMIZERS))
    args = parser.parse_args(argv)
    seconds = step_compile_seconds(json.loads(args.spec), args.dtype, args.optimizer)
    print(json.dumps({"compile_s": seconds}))


if __name__ == "__main__":
    main()
