"""jit + NamedSharding on 8 CPU devices: a sharded Fromage step equals the one-device step.

Run by tests/test_sharding.py as `python spmd_check.py RESULTS.json`. For `fromage` with
p_bound on four layouts (FSDP: every leaf split over `data`; a 2-D `data x model` layout;
Megatron-style tensor parallelism on Auto and on Explicit mesh axes) and for the equivalent
chain of transforms on FSDP, it records the max |sharded - unsharded| of the new params (also
for gradients whose squares overflow or underflow), whether every output keeps its input
sharding, and every collective in the compiled HLO.
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
LAYERS = 4


def make_params_and_grads():
    """Params with a zero bias, same-shaped small kernels, one big kernel and a scanned stack.

    Gradients are noise plus ±3·W, so some tensors grow (and hit p_bound) and some shrink.
    """
    shapes = {
        "big": {"kernel": (512, 256)},
        "dense1": {"kernel": (64, 32), "bias": (32,)},
        "dense2": {"kernel": (32, 32), "bias": (32,)},
        "dense3": {"kernel": (32, 32), "bias": (32,)},
        "blocks": {"kernel": (LAYERS, 32, 32), "bias": (LAYERS, 32)},
    }
    leaves, treedef = jax.tree.flatten(shapes, is_leaf=lambda x: isinstance(x, tuple))
    rng = np.random.default_rng(0)
    params = [(rng.standard_normal(s) / np.sqrt(s[-1])).astype(np.float32) for s in leaves]
    params[leaves.index((32,))] *= 0  # dense1's bias: the zero-norm rule
    grads = [
        (0.1 * rng.standard_normal(w.shape) + (-3.0, 3.0)[i % 2] * w).astype(np.float32)
        for i, w in enumerate(params)
    ]
    params = jax.tree.unflatten(treedef, [jnp.asarray(w) for w in params])
    grads = jax.tree.unflatten(treedef, [jnp.asarray(g) for g in grads])
    return params, grads


def fsdp_specs(params):
    """Every leaf split over `data` along its first non-layer axis."""
    specs = jax.tree.map(lambda w: P("data"), params)
    specs["blocks"] = {"kernel": P(None, "data"), "bias": P(None, "data")}
    return specs


def data_model_specs(params):
    """Kernels split over data x model, biases over model; the stack's layer axis over data."""
    specs = jax.tree.map(lambda w: P("data", "model") if w.ndim == 2 else P("model"), params)
    specs["blocks"] = {"kernel": P("data", None, "model"), "bias": P("data", "model")}
    return specs


def tensor_parallel_specs(params):
    """Megatron-style: same-shaped kernels split by column (dense2) and by row (dense3).

    Tensors of one shape with different layouts must not be stacked for their norms, or XLA
    would move them between devices (and jax's Explicit mode rejects the stack).
    """
    return {
        "big": {"kernel": P(None, "model")},
        "dense1": {"kernel": P(None, "model"), "bias": P("model")},
        "dense2": {"kernel": P(None, "model"), "bias": P("model")},
        "dense3": {"kernel": P("model", None), "bias": P()},
        "blocks": {"kernel": P(None, None, "model"), "bias": P(None, "model")},
    }


def optimisers(layer_axes):
    return {
        "fromage_p_bound": fromage_optax.fromage(
            LEARNING_RATE, p_bound=P_BOUND, layer_axes=layer_axes
        ),
        "chain_p_bound": optax.chain(
            fromage_optax.scale_by_fromage(layer_axes=layer_axes),
            optax.scale_by_learning_rate(LEARNING_RATE),
            fromage_optax.control_weight_norm(LEARNING_RATE),
            fromage_optax.bound_weight_norm(P_BOUND, layer_axes=layer_axes),
        ),
    }


def without_zero_bias(params):
    """The params without dense1's zero bias, whose plain −η·g step scales with g."""
    return {**params, "dense1": {"kernel": params["dense1"]["kernel"]}}


def step_function(optimiser):
    def step(params, grads, state):
        updates, state = optimiser.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def leaf_layer_axes(layer_axes):
    return jax.tree.leaves(layer_axes, is_leaf=lambda x: x is None)


def norm_slices(params, layer_axes):
    """How many separate norms the params have (one per tensor, or per layer slice)."""
    return sum(
        1 if axis is None else w.shape[axis]
        for w, axis in zip(jax.tree.leaves(params), leaf_layer_axes(layer_axes), strict=True)
    )


def initial_norm_leaves(initial_norms, params, layer_axes):
    """‖W₀‖ per leaf: a chain's state holds a tree like the params, `fromage`'s one
    vector (per tensor, or per layer slice, in the order of the leaves)."""
    leaves = jax.tree.leaves(initial_norms)
    param_leaves = jax.tree.leaves(params)
    if len(leaves) == len(param_leaves) and len(leaves) != 1:
        return leaves
    flat, split, offset = np.asarray(leaves[0]), [], 0
    for w, axis in zip(param_leaves, leaf_layer_axes(layer_axes), strict=True):
        shape = tuple(d if a == axis else 1 for a, d in enumerate(w.shape))
        size = int(np.prod(shape))
        split.append(flat[offset : offset + size].reshape(shape))
        offset += size
    assert offset == flat.size, (offset, flat.shape)
    return split


def bound_active_slices(new_params, initial_norms, layer_axes):
    """How many tensors (layer slices) were scaled back to exactly p_bound·‖W₀‖."""
    count = 0
    for w, n0, axis in zip(
        jax.tree.leaves(new_params),
        initial_norm_leaves(initial_norms, new_params, layer_axes),
        leaf_layer_axes(layer_axes),
        strict=True,
    ):
        w = np.asarray(w, np.float64)
        reduce = tuple(a for a in range(w.ndim) if a != axis)
        norms = np.sqrt(np.sum(w * w, axis=reduce, keepdims=True))
        count += int(np.sum(np.isclose(norms, P_BOUND * np.asarray(n0), rtol=1e-5, atol=0)))
    return count


def sharded_run(optimiser, step, mesh, specs, params, grads, reference):
    """One jitted step on params and grads laid out by `specs` on `mesh`, vs `reference`."""
    reference_params, reference_state = reference
    shardings = jax.tree.map(lambda s: NamedSharding(mesh, s), specs)
    sharded_params = jax.device_put(params, shardings)
    sharded_grads = jax.device_put(grads, shardings)
    state = jax.jit(optimiser.init)(sharded_params)
    compiled = jax.jit(step).lower(sharded_params, sharded_grads, state).compile()
    new_params, new_state = compiled(sharded_params, sharded_grads, state)
    keeps_sharding = jax.tree.leaves(
        jax.tree.map(
            lambda new, old: new.sharding.is_equivalent_to(old.sharding, old.ndim),
            new_params,
            sharded_params,
        )
    )
    run = {
        "max_abs_difference": common.max_abs_difference(new_params, reference_params),
        "state_max_abs_difference": common.max_abs_difference(new_state, reference_state),
        "keeps_input_sharding": all(keeps_sharding),
        "output_specs": jax.tree.map(lambda w: str(w.sharding.spec), new_params),
        "collectives": common.collectives(compiled.as_text()),
        "new_params": new_params,
        "initial_norms": getattr(new_state, "initial_norms", None),
    }
    # Same program, gradients whose squares overflow / underflow float32: the norms come
    # from the rescaling fallback (pmax and psum across devices). dense1's bias is zero, so
    # its plain −η·g step scales with g: left out.
    for scale in (1e25, 1e-25):
        scaled_grads = jax.tree.map(lambda g, s=scale: g * jnp.float32(s), sharded_grads)
        scaled_params, _ = compiled(sharded_params, scaled_grads, state)
        run[f"gradients_x_{scale:g}_max_abs_difference"] = common.max_abs_difference(
            without_zero_bias(scaled_params), without_zero_bias(reference_params)
        )
    return run


def main():
    params, grads = make_params_and_grads()
    layer_axes = scanned_layer_axes(params, "blocks")
    auto, explicit = jax.sharding.AxisType.Auto, jax.sharding.AxisType.Explicit
    # Auto: classic jit + NamedSharding, XLA propagates shardings; Explicit (jax.make_mesh's
    # default in recent jax): shardings are part of the types and jax inserts the reductions.
    layouts = {
        "fsdp": (jax.make_mesh((8,), ("data",), axis_types=(auto,)), fsdp_specs(params)),
        "data_x_model": (
            jax.make_mesh((4, 2), ("data", "model"), axis_types=(auto, auto)),
            data_model_specs(params),
        ),
        "tensor_parallel": (
            jax.make_mesh((8,), ("model",), axis_types=(auto,)),
            tensor_parallel_specs(params),
        ),
        "tensor_parallel_explicit": (
            jax.make_mesh((8,), ("model",), axis_types=(explicit,)),
            tensor_parallel_specs(params),
        ),
    }
    runs = {
        "fromage_p_bound": list(layouts),
        "chain_p_bound": ["fsdp"],
    }
    results = {"norm_slices": norm_slices(params, layer_axes), "runs": []}
    # A control for the HLO scan: gathering one FSDP-sharded kernel onto every device.
    mesh, specs = layouts["fsdp"]
    kernel = jax.device_put(params["big"]["kernel"], NamedSharding(mesh, specs["big"]["kernel"]))
    gather = jax.jit(lambda w: w + 1, out_shardings=NamedSharding(mesh, P()))
    results["gather_control"] = common.collectives(gather.lower(kernel).compile().as_text())
    for name, optimiser in optimisers(layer_axes).items():
        step = step_function(optimiser)
        reference_state = jax.jit(optimiser.init)(params)
        reference = jax.jit(step)(params, grads, reference_state)
        for layout in runs[name]:
            mesh, specs = layouts[layout]
            try:
                run = sharded_run(optimiser, step, mesh, specs, params, grads, reference)
            except Exception as error:  # recorded, so one failing layout fails one test
                run = {"error": f"{type(error).__name__}: {error}"[:2000]}
            if name == "fromage_p_bound" and "error" not in run:
                run["bound_active_slices"] = bound_active_slices(
                    run.pop("new_params"), run.pop("initial_norms"), layer_axes
                )
            run.pop("new_params", None)
            run.pop("initial_norms", None)
            results["runs"].append({"optimiser": name, "layout": layout, **run})
    common.write_results(results)


if __name__ == "__main__":
    main()
