"""`axis_name` inside shard_map and pmap on 8 CPU devices: local shards give the global step.

Run by tests/test_sharding.py as `python shard_map_check.py RESULTS.json`. Each case runs the
Fromage init and step on local shards with `axis_name` naming the mesh axes that split a
layer (a pytree prefix: None for replicated leaves) and records the max |sharded - unsharded|
of the new params and of the p_bound initial norms; a control without `axis_name` records how
far off per-shard norms are.
"""

from __future__ import annotations

import common  # sets XLA_FLAGS before jax is imported
import jax  # noqa: I001
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import fromage_optax
from fromage_optax._layer_axes import scanned_layer_axes

LEARNING_RATE = 0.1
P_BOUND = 1.0


def make_params_and_grads():
    """A sharded kernel, a zero bias, a replicated bias and a scanned stack of 4 layers.

    Gradients are noise minus 3·W, so norms grow and p_bound is hit.
    """
    rng = np.random.default_rng(1)
    shapes = {"w": (64, 32), "zero_bias": (32,), "b": (32,), "blocks": {"kernel": (4, 32, 32)}}
    leaves, treedef = jax.tree.flatten(shapes, is_leaf=lambda x: isinstance(x, tuple))
    params = [(rng.standard_normal(s) / np.sqrt(s[-1])).astype(np.float32) for s in leaves]
    grads = [(0.1 * rng.standard_normal(w.shape) - 3 * w).astype(np.float32) for w in params]
    params = jax.tree.unflatten(treedef, [jnp.asarray(w) for w in params])
    params["zero_bias"] = jnp.zeros_like(params["zero_bias"])
    return params, jax.tree.unflatten(treedef, [jnp.asarray(g) for g in grads])


def fromage_p_bound(layer_axes, axis_name):
    return fromage_optax.fromage(
        LEARNING_RATE, p_bound=P_BOUND, layer_axes=layer_axes, axis_name=axis_name
    )


def chain_p_bound(layer_axes, axis_name):
    return optax.chain(
        fromage_optax.scale_by_fromage(layer_axes=layer_axes, axis_name=axis_name),
        optax.scale_by_learning_rate(LEARNING_RATE),
        fromage_optax.control_weight_norm(LEARNING_RATE),
        fromage_optax.bound_weight_norm(P_BOUND, layer_axes=layer_axes, axis_name=axis_name),
    )


def unsharded_step(make_optimiser, params, layer_axes):
    """A jitted `grads -> (new params, state)`: init and one step on one device."""
    optimiser = make_optimiser(layer_axes, None)

    def init_and_step(params, grads):
        state = optimiser.init(params)
        updates, state = optimiser.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    jitted = jax.jit(init_and_step)
    return lambda grads: jitted(params, grads)


def shard_map_step(
    make_optimiser,
    params,
    layer_axes,
    axis_name,
    mesh,
    specs,
    check_vma=True,
    sharded_layers=(),
):
    """A jitted `grads -> (new params, state)`: init and one step from `params` in shard_map.

    The optimiser state is replicated (P()) except the initial norms of the leaves named in
    `sharded_layers`, whose layer axis (axis 0) is split over `data`. With `check_vma`,
    shard_map also verifies that the state really is the same on every device, which holds
    only if the norms were summed over the right mesh axes.
    """
    optimiser = make_optimiser(layer_axes, axis_name)
    # One P() covers the whole replicated state (a prefix of it), however its p_bound
    # layout was counted (the control without axis_name counts local elements).
    state_specs = P() if not sharded_layers else jax.tree_util.tree_map_with_path(
        lambda path, _: (
            P("data") if any(name in jax.tree_util.keystr(path) for name in sharded_layers) else P()
        ),
        jax.eval_shape(make_optimiser(layer_axes, None).init, params),
    )

    def init_and_step(params, grads):
        state = optimiser.init(params)
        updates, state = optimiser.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    mapped = jax.shard_map(
        init_and_step,
        mesh=mesh,
        in_specs=(specs, specs),
        out_specs=(specs, state_specs),
        check_vma=check_vma,
    )
    shardings = jax.tree.map(lambda s: NamedSharding(mesh, s), specs)
    sharded_params = jax.device_put(params, shardings)
    jitted = jax.jit(mapped)
    return lambda grads: jitted(sharded_params, jax.device_put(grads, shardings))


def pmap_step(params, grads, layer_axes):
    """The same step under pmap: each leaf's first axis split over 8 devices, `b` replicated."""
    axis_name = {"w": "devices", "zero_bias": "devices", "b": None, "blocks": "devices"}
    optimiser = fromage_p_bound(layer_axes, axis_name)

    def split(tree):
        tree = dict(tree)
        tree["blocks"] = {"kernel": jnp.moveaxis(tree["blocks"]["kernel"], 1, 0)}
        shards = jax.tree.map(lambda x: x.reshape(8, x.shape[0] // 8, *x.shape[1:]), tree)
        shards["b"] = jnp.broadcast_to(tree["b"], (8, *tree["b"].shape))
        shards["blocks"] = {"kernel": jnp.moveaxis(shards["blocks"]["kernel"], 2, 1)}
        return shards

    def join(shards):
        shards = dict(shards)
        stack = jnp.moveaxis(shards["blocks"]["kernel"], 1, 0)  # (4, 8, 4, 32)
        tree = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), shards)
        tree["blocks"] = {"kernel": stack.reshape(4, -1, stack.shape[-1])}
        tree["b"] = shards["b"][0]
        return tree

    def init_and_step(params, grads):
        state = optimiser.init(params)
        updates, state = optimiser.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    new_shards, state = jax.pmap(init_and_step, axis_name="devices")(split(params), split(grads))
    return join(new_shards), jax.tree.map(lambda x: x[0], state)


def scaled(tree, scale):
    return jax.tree.map(lambda x: x * jnp.float32(scale), tree)


def without_zero_bias(tree):
    """The params without `zero_bias`, whose plain −η·g step is not scale-invariant."""
    return {key: value for key, value in tree.items() if key != "zero_bias"}


def main():
    params, grads = make_params_and_grads()
    layer_axes = scanned_layer_axes(params, "blocks")
    cases = []

    mesh = jax.make_mesh((8,), ("data",))
    specs = {"w": P("data"), "zero_bias": P("data"), "b": P(), "blocks": P(None, "data")}
    axis_name = {"w": "data", "zero_bias": "data", "b": None, "blocks": "data"}
    reference = unsharded_step(fromage_p_bound, params, layer_axes)(grads)
    step = shard_map_step(fromage_p_bound, params, layer_axes, axis_name, mesh, specs)
    cases.append(("fromage_p_bound data=8, prefix axis_name", reference, step(grads)))
    # Squares of these gradients overflow (1e25) or underflow (1e-25) in float32, so the norms
    # come from the rescaling fallback, with its pmax and psum over devices.
    for scale in (1e25, 1e-25):
        new_params, new_state = step(scaled(grads, scale))
        cases.append(
            (
                f"fromage_p_bound data=8, gradients x {scale:g}",
                (without_zero_bias(reference[0]), reference[1]),
                (without_zero_bias(new_params), new_state),
            )
        )
    per_shard_norms = shard_map_step(
        fromage_p_bound, params, layer_axes, None, mesh, specs, check_vma=False
    )
    cases.append(("control: no axis_name", reference, per_shard_norms(grads)))

    # 2-D: `w` is split over both mesh axes; the stack's layer axis is split over `data`, so
    # only `model` (which splits each layer) may be summed over for it.
    mesh = jax.make_mesh((4, 2), ("data", "model"))
    specs = {
        "w": P("data", "model"),
        "zero_bias": P("model"),
        "b": P(),
        "blocks": P("data", None, "model"),
    }
    axis_name = {"w": ("data", "model"), "zero_bias": "model", "b": None, "blocks": "model"}
    chain_reference = unsharded_step(chain_p_bound, params, layer_axes)
    step = shard_map_step(
        chain_p_bound, params, layer_axes, axis_name, mesh, specs, sharded_layers=("blocks",)
    )
    cases.append(
        ("chain_p_bound data=4 x model=2, tuple axis_name", chain_reference(grads), step(grads))
    )
    # Only layer 0's gradient overflows, so only the devices holding layer 0 need the rescaling
    # fallback: the devices must still agree on every collective they run.
    one_layer = dict(grads, blocks={"kernel": grads["blocks"]["kernel"].at[0].multiply(1e25)})
    cases.append(
        (
            "chain_p_bound data=4 x model=2, one layer's gradient x 1e25",
            chain_reference(one_layer),
            step(one_layer),
        )
    )
    cases.append(("pmap fromage_p_bound", reference, pmap_step(params, grads, layer_axes)))

    results = {"cases": []}
    for name, (reference_params, reference_state), (new_params, new_state) in cases:
        results["cases"].append(
            {
                "case": name,
                "max_abs_difference": common.max_abs_difference(new_params, reference_params),
                "state_max_abs_difference": common.max_abs_difference(new_state, reference_state),
                "max_abs_param_change": common.max_abs_difference(
                    reference_params, {key: params[key] for key in reference_params}
                ),
            }
        )
    common.write_results(results)


if __name__ == "__main__":
    main()
