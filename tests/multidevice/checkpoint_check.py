"""Orbax checkpoints of Fromage state: 10 steps == 5 steps, save, restore elsewhere, 5 steps.

Run by tests/test_checkpoint.py in two fresh processes on 8 CPU devices, params sharded FSDP-
style over `data`:

  python checkpoint_check.py save DIR     # 10-step reference; 5 steps; orbax save of state
  python checkpoint_check.py resume DIR   # orbax restore (sharded); 5 more steps; compare

The optimiser is `fromage` with a learning-rate schedule (so the step count matters), p_bound
(so ‖W₀‖ in the state matters) and layer_axes for a stacked block (per-layer ‖W₀‖). `resume`
writes DIR/results.json with the bitwise comparison and, as a control, the result of
restarting the optimiser instead of restoring its state.
"""

from __future__ import annotations

import sys
from pathlib import Path

import common  # sets XLA_FLAGS before jax is imported
import jax  # noqa: I001
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import fromage_optax
from fromage_optax._layer_axes import scanned_layer_axes

TOTAL_STEPS = 10
SAVED_AT = 5
LAYERS = 4
WIDTH = 16
# Below 1 so the cap binds within a few steps, and ‖W₀‖ in the state decides the result.
P_BOUND = 0.95


def make_optimiser():
    schedule = optax.warmup_cosine_decay_schedule(0.0, 0.2, 3, TOTAL_STEPS, end_value=0.02)
    return fromage_optax.fromage(
        schedule,
        p_bound=P_BOUND,
        layer_axes=lambda params: scanned_layer_axes(params, "blocks"),
    )


def initial_params(mesh):
    rng = np.random.default_rng(0)
    params = {
        "embed": rng.standard_normal((8, WIDTH)) / np.sqrt(8),
        "blocks": {
            "kernel": rng.standard_normal((LAYERS, WIDTH, WIDTH)) / np.sqrt(WIDTH),
            "bias": np.zeros((LAYERS, WIDTH)),
        },
        "head": rng.standard_normal((WIDTH, 8)) / np.sqrt(WIDTH),
    }
    specs = {"embed": P(None, "data"), "blocks": P(None, "data"), "head": P("data")}
    shardings = jax.tree.map(lambda s: NamedSharding(mesh, s), specs)
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
    return jax.device_put(params, jax.tree.broadcast(shardings, params))


def batch_at(step):
    """The same inputs and targets for a step in every process."""
    rng = np.random.default_rng(1000 + step)
    inputs = rng.standard_normal((32, 8)).astype(np.float32)
    return inputs, np.tanh(inputs[:, ::-1] * 2).astype(np.float32)


def loss(params, inputs, targets):
    x = jnp.tanh(inputs @ params["embed"])

    def layer(x, weights):
        return x + jnp.tanh(x @ weights["kernel"] + weights["bias"]), None

    x, _ = jax.lax.scan(layer, x, params["blocks"])
    return jnp.mean((x @ params["head"] - targets) ** 2)


@jax.jit
def train_step(params, opt_state, inputs, targets):
    grads = jax.grad(loss)(params, inputs, targets)
    updates, opt_state = make_optimiser().update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def train(params, opt_state, first_step, last_step):
    for step_index in range(first_step, last_step):
        params, opt_state = train_step(params, opt_state, *batch_at(step_index))
    return params, opt_state


def to_numpy(tree):
    return jax.tree.map(np.asarray, tree)


def save(directory: Path, mesh):
    params = initial_params(mesh)
    opt_state = jax.jit(make_optimiser().init)(params)
    reference_params, reference_state = train(params, opt_state, 0, TOTAL_STEPS)
    np.savez(
        directory / "reference.npz", *jax.tree.leaves(to_numpy((reference_params, reference_state)))
    )
    params, opt_state = train(params, opt_state, 0, SAVED_AT)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(directory / "checkpoint", {"params": params, "opt_state": opt_state})
    checkpointer.wait_until_finished()


def resume(directory: Path, mesh):
    fresh_params = initial_params(mesh)
    fresh_state = jax.jit(make_optimiser().init)(fresh_params)
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
        {"params": fresh_params, "opt_state": fresh_state},
    )
    restored = ocp.StandardCheckpointer().restore(directory / "checkpoint", target)
    params, opt_state = train(restored["params"], restored["opt_state"], SAVED_AT, TOTAL_STEPS)
    # Controls, as a script that saved too little would run: (1) a new optimiser state (count
    # 0, ‖W₀‖ of the step-5 params); (2) the right count but ‖W₀‖ of the step-5 params.
    restarted_state = jax.jit(make_optimiser().init)(restored["params"])
    restarted_params, _ = train(restored["params"], restarted_state, SAVED_AT, TOTAL_STEPS)
    wrong_norms_state = restored["opt_state"]._replace(initial_norms=restarted_state.initial_norms)
    wrong_norms_params, _ = train(restored["params"], wrong_norms_state, SAVED_AT, TOTAL_STEPS)

    with np.load(directory / "reference.npz") as file:
        reference = [file[f"arr_{i}"] for i in range(len(file.files))]
    resumed = jax.tree.leaves(to_numpy((params, opt_state)))
    reference_params = reference[: len(jax.tree.leaves(params))]

    def difference_to_reference(other_params):
        return common.max_abs_difference(to_numpy(jax.tree.leaves(other_params)), reference_params)

    results = {
        "leaves": len(reference),
        "restored_count": int(restored["opt_state"].count),
        "restored_initial_norm_shapes": list(restored["opt_state"].initial_norms.shape),
        "restored_sharding_kept": all(
            r.sharding.is_equivalent_to(f.sharding, f.ndim)
            for r, f in zip(jax.tree.leaves(restored), jax.tree.leaves(target), strict=True)
        ),
        "bitwise_equal": len(resumed) == len(reference)
        and all(
            a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
            for a, b in zip(resumed, reference, strict=True)
        ),
        "max_abs_difference": common.max_abs_difference(resumed, reference),
        "restarted_optimiser_max_abs_difference": difference_to_reference(restarted_params),
        "wrong_initial_norms_max_abs_difference": difference_to_reference(wrong_norms_params),
    }
    common.write_results(results, directory / "results.json")


def main():
    mode, directory = sys.argv[1], Path(sys.argv[2])
    mesh = jax.make_mesh(
        (common.DEVICE_COUNT,), ("data",), axis_types=(jax.sharding.AxisType.Auto,)
    )
    {"save": save, "resume": resume}[mode](directory, mesh)


if __name__ == "__main__":
    main()
