"""The composability battery's shard_map column: every transform that takes `axis_name`.

Run by tests/test_composability.py as `python battery_shard_map.py RESULTS.json`. A 512x512
kernel is split over a 2-device mesh axis "data" (local shards of 256x512, over the
library's size threshold, so each shard has a run of its own on CPUs) beside replicated
biases and heads. Each transform runs init and update inside jit(shard_map) with
`axis_name` naming "data" for the kernel, and the script records the largest relative
difference from the same transform on the unsharded tree — for the values, under vmap
inside shard_map, and for jit(grad) through the sharded step.
"""

from __future__ import annotations

import functools

import common  # sets XLA_FLAGS before jax is imported
import jax  # noqa: I001
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

import fromage_optax

LEARNING_RATE = 0.1
P_BOUND = 1.5


def problem():
    rng = np.random.default_rng(0)

    def normal(shape, scale=1.0):
        return jnp.asarray((scale * rng.standard_normal(shape) / np.sqrt(shape[0])), jnp.float32)

    params = {
        "kernel": normal((512, 512)),
        "bias": normal((512,), 0.1),
        "heads": [normal((4, 5)) for _ in range(3)],
    }
    grads = jax.tree.map(lambda w: normal(w.shape), params)
    return params, grads


AXIS_NAME = {"kernel": "data", "bias": None, "heads": None}
SPECS = {"kernel": P("data"), "bias": P(), "heads": [P(), P(), P()]}

# name -> make(axis_name) -> run(params, grads) -> outputs (new params, or diagnostics).
TRANSFORMS = {
    "fromage": lambda a: (
        lambda p, g: _apply(fromage_optax.fromage(LEARNING_RATE, axis_name=a), p, g)
    ),
    "fromage_p_bound": lambda a: (
        lambda p, g: _apply(
            fromage_optax.fromage(LEARNING_RATE, P_BOUND, axis_name=a), p, g, initial_scale=0.7
        )
    ),
    "scale_by_fromage": lambda a: (
        lambda p, g: _apply(fromage_optax.scale_by_fromage(axis_name=a), p, g)
    ),
    "bound_weight_norm": lambda a: (
        lambda p, g: _apply(
            fromage_optax.bound_weight_norm(P_BOUND, axis_name=a), p, g, initial_scale=0.7
        )
    ),
    "relative_update_norms": lambda a: (
        lambda p, g: fromage_optax.relative_update_norms(g, p, axis_name=a)
    ),
    "monitor_relative_trust": lambda a: lambda p, g: _monitor(a, p, g),
}


def _apply(transform, params, grads, initial_scale=None):
    initial = params if initial_scale is None else jax.tree.map(lambda w: w * initial_scale, params)
    updates, _ = transform.update(grads, transform.init(initial), params)
    return optax.apply_updates(params, updates)


def _monitor(axis_name, params, grads):
    monitor = fromage_optax.monitor_relative_trust(axis_name=axis_name)
    _, state = monitor.update(grads, monitor.init(params), params)
    return [state.relative_update_norms, state.deep_relative_trust]


def _relative_difference(actual, expected) -> float:
    worst = 0.0
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
        scale = max(np.linalg.norm(e.ravel()), np.finfo(np.float32).tiny)
        worst = max(worst, float(np.linalg.norm((a - e).ravel()) / scale))
    return worst


def main():
    mesh = Mesh(np.array(jax.devices()[:2]), ("data",))
    params, grads = problem()
    batched = jax.tree.map(lambda x: jnp.stack([x, 2 * x]), (params, grads))
    batched_specs = jax.tree.map(lambda s: P(None, *s), SPECS, is_leaf=lambda s: isinstance(s, P))
    results = {}
    for name, make in TRANSFORMS.items():
        unsharded, sharded = make(None), make(AXIS_NAME)
        unsharded_jit = jax.jit(unsharded)
        expected = unsharded_jit(params, grads)
        out_specs = jax.tree.map(lambda _: P(), expected)
        if name != "relative_update_norms" and name != "monitor_relative_trust":
            out_specs = SPECS
        mapped = jax.jit(
            jax.shard_map(sharded, mesh=mesh, in_specs=(SPECS, SPECS), out_specs=out_specs)
        )
        results[f"{name} values"] = _relative_difference(mapped(params, grads), expected)

        # vmap over two problems, inside shard_map.
        batched_out = jax.tree.map(
            lambda s: P(None, *s), out_specs, is_leaf=lambda s: isinstance(s, P)
        )
        vmapped = jax.jit(
            jax.shard_map(
                jax.vmap(sharded),
                mesh=mesh,
                in_specs=(batched_specs, batched_specs),
                out_specs=batched_out,
            )
        )
        # Against each problem's own unsharded result (the program compiled above).
        expected_batched = jax.tree.map(
            lambda *members: jnp.stack(members),
            *(unsharded_jit(*(jax.tree.map(lambda x, i=i: x[i], batched))) for i in (0, 1)),
        )
        results[f"{name} vmap"] = _relative_difference(vmapped(*batched), expected_batched)

        # jit(grad) w.r.t. the params, through the sharded step. Where the outputs hold the
        # kernel's shard, each device's loss is its own (varying over "data"): it holds its
        # shard of the kernel's output and half of every replicated output, so the devices'
        # losses add up to the unsharded loss. Diagnostics are replicated: the loss is the
        # same on every device (invariant), and its gradient is the global one as it is.
        kernel_is_output = out_specs is SPECS
        weight = 0.5 if kernel_is_output else 1.0
        sharded_loss = functools.partial(_loss, sharded, weight, kernel_is_output)
        gradient = jax.jit(
            jax.shard_map(
                jax.grad(sharded_loss), mesh=mesh, in_specs=(SPECS, SPECS), out_specs=SPECS
            )
        )
        unsharded_loss = functools.partial(_loss, unsharded, 1.0, kernel_is_output)
        expected_gradient = jax.jit(jax.grad(unsharded_loss))(params, grads)
        results[f"{name} jit(grad)"] = _relative_difference(
            gradient(params, grads), expected_gradient
        )
    common.write_results(results)


def _loss(run, replicated_weight, kernel_is_output, params, grads):
    """Σ sin(output), the replicated outputs weighted by `replicated_weight`."""
    outputs = run(params, grads)
    total = 0.0
    for path, x in jax.tree_util.tree_flatten_with_path(outputs)[0]:
        sharded = kernel_is_output and jax.tree_util.keystr(path) == "['kernel']"
        total += (1.0 if sharded else replicated_weight) * jnp.sum(jnp.sin(x))
    return total


if __name__ == "__main__":
    main()
