"""`layer_axes`: L layers stacked by nn.scan / nnx.vmap get the step of L separate layers.

A stacked tensor of shape (L, ...) holds L layers; Fromage's norms, its zero-norm rule and
the p_bound cap must apply to each layer on its own. Each test compares a scanned model with
`layer_axes` against the same model with L separate layers, and checks that without
`layer_axes` the step differs (so the comparison can fail).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import fromage_optax
from fromage_optax._layer_axes import scanned_layer_axes

LAYERS = 4
WIDTH = 8
LEARNING_RATE = 0.1
# Per-slice and whole-tensor reductions sum in different orders: a few float32 ulps of the
# largest entry (see `tolerance`).
RELATIVE_TOLERANCE = 1e-6


class Block(nn.Module):
    """A residual tanh layer, written with the (carry, input) signature nn.scan expects."""

    @nn.compact
    def __call__(self, x, _):
        return x + jnp.tanh(nn.Dense(WIDTH)(x)), None


class ScannedModel(nn.Module):
    @nn.compact
    def __call__(self, x):
        stack = nn.scan(
            Block,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            length=LAYERS,
        )
        x, _ = stack(name="layers")(x, None)
        return nn.Dense(1, name="head")(x)


class UnrolledModel(nn.Module):
    @nn.compact
    def __call__(self, x):
        for i in range(LAYERS):
            x, _ = Block(name=f"layers_{i}")(x, None)
        return nn.Dense(1, name="head")(x)


def unstack(scanned_params):
    """The scanned model's params as the unrolled model's: layers/... [i] -> layers_i/..."""
    params = {"head": scanned_params["head"]}
    for i in range(LAYERS):
        params[f"layers_{i}"] = jax.tree.map(lambda x, i=i: x[i], scanned_params["layers"])
    return params


def tolerance(reference):
    """A few float32 ulps of the largest entry of `reference`."""
    largest = max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(reference))
    return RELATIVE_TOLERANCE * max(largest, 1.0)


def max_abs_difference(tree_a, tree_b):
    return max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(jax.tree.leaves(tree_a), jax.tree.leaves(tree_b), strict=True)
    )


def synthetic_params_and_grads(seed=0):
    """Scanned-layout params with one layer's bias at zero, and grads that grow the norms."""
    rng = np.random.default_rng(seed)
    params = {
        "layers": {
            "Dense_0": {
                "kernel": rng.standard_normal((LAYERS, WIDTH, WIDTH))
                * np.arange(1, LAYERS + 1)[:, None, None],
                "bias": rng.standard_normal((LAYERS, WIDTH)),
            }
        },
        "head": {"kernel": rng.standard_normal((WIDTH, 1)), "bias": np.zeros(1)},
    }
    params["layers"]["Dense_0"]["bias"][1] = 0.0  # a zero slice: per-layer zero-norm rule
    grads = jax.tree.map(lambda w: 0.3 * rng.standard_normal(w.shape) - 2.0 * w, params)
    grads["layers"]["Dense_0"]["kernel"][2] = 0.0  # a zero-gradient slice
    to_f32 = functools.partial(jax.tree.map, lambda x: jnp.asarray(x, jnp.float32))
    return to_f32(params), to_f32(grads)


def one_step(optimiser, params, grads):
    state = optimiser.init(params)
    updates, _ = optimiser.update(grads, state, params)
    return optax.apply_updates(params, updates)


LAYER_AXES_FORMS = {
    "helper tree": lambda params: scanned_layer_axes(params, "layers"),
    "prefix tree": lambda params: {"layers": 0, "head": None},
    "callable": lambda params: functools.partial(scanned_layer_axes, module_name="layers"),
}


@pytest.mark.parametrize(
    "form, p_bound",
    [("helper tree", None), ("helper tree", 1.0), ("prefix tree", 1.0), ("callable", 1.0)],
)
def test_stacked_step_equals_separate_layers(form, p_bound):
    params, grads = synthetic_params_and_grads()
    layer_axes = LAYER_AXES_FORMS[form](params)
    optimiser = fromage_optax.fromage(LEARNING_RATE, p_bound=p_bound, layer_axes=layer_axes)
    stacked = jax.jit(functools.partial(one_step, optimiser))(params, grads)
    separate = one_step(
        fromage_optax.fromage(LEARNING_RATE, p_bound=p_bound), unstack(params), unstack(grads)
    )
    assert max_abs_difference(unstack(stacked), separate) <= tolerance(separate)

    whole_stack = one_step(fromage_optax.fromage(LEARNING_RATE, p_bound=p_bound), params, grads)
    assert max_abs_difference(unstack(whole_stack), separate) > 1e-2

    zero_slice = stacked["layers"]["Dense_0"]["bias"][1]
    if p_bound is None:  # the zero-norm rule: a plain −η·g step for that layer only
        expected = (
            -LEARNING_RATE * grads["layers"]["Dense_0"]["bias"][1] / np.sqrt(1 + LEARNING_RATE**2)
        )
        np.testing.assert_allclose(zero_slice, expected, rtol=1e-6)
    else:  # p_bound holds a layer that starts at zero at zero, and caps the others
        np.testing.assert_array_equal(zero_slice, 0.0)
        kernels = np.asarray(stacked["layers"]["Dense_0"]["kernel"], np.float64)
        initial = np.asarray(params["layers"]["Dense_0"]["kernel"], np.float64)
        new_norms = np.linalg.norm(kernels.reshape(LAYERS, -1), axis=1)
        initial_norms = np.linalg.norm(initial.reshape(LAYERS, -1), axis=1)
        capped = np.isclose(new_norms, p_bound * initial_norms, rtol=1e-5)
        assert capped.sum() >= 2, (new_norms, initial_norms)


@pytest.mark.parametrize("p_bound", [None, 1.0])
def test_int_layer_axes_with_multi_transform(p_bound):
    """`layer_axes=0` for a whole (sub)optimiser, the scanned stack routed to it by label."""
    params, grads = synthetic_params_and_grads(seed=1)
    labels = {"layers": "stacked", "head": jax.tree.map(lambda _: "single", params["head"])}
    optimiser = optax.multi_transform(
        {
            "stacked": fromage_optax.fromage(LEARNING_RATE, p_bound=p_bound, layer_axes=0),
            "single": fromage_optax.fromage(LEARNING_RATE, p_bound=p_bound),
        },
        labels,
    )
    stacked = jax.jit(functools.partial(one_step, optimiser))(params, grads)
    separate = one_step(
        fromage_optax.fromage(LEARNING_RATE, p_bound=p_bound), unstack(params), unstack(grads)
    )
    assert max_abs_difference(unstack(stacked), separate) <= tolerance(separate)


@pytest.mark.parametrize("p_bound", [None, 1.5])
def test_transform_chain_with_layer_axes_equals_separate_layers(p_bound):
    params, grads = synthetic_params_and_grads(seed=2)
    layer_axes = functools.partial(scanned_layer_axes, module_name="layers")

    def chain(layer_axes):
        parts = [
            fromage_optax.scale_by_fromage(layer_axes=layer_axes),
            optax.scale_by_learning_rate(LEARNING_RATE),
            fromage_optax.control_weight_norm(LEARNING_RATE),
        ]
        if p_bound is not None:
            parts.append(fromage_optax.bound_weight_norm(p_bound, layer_axes=layer_axes))
        return optax.chain(*parts)

    stacked = jax.jit(functools.partial(one_step, chain(layer_axes)))(params, grads)
    separate = one_step(chain(None), unstack(params), unstack(grads))
    assert max_abs_difference(unstack(stacked), separate) <= tolerance(separate)


def train(model, params, optimiser, steps=3):
    """A few steps of regression on fixed random data; returns the final params."""
    inputs = jax.random.normal(jax.random.PRNGKey(1), (16, WIDTH))
    targets = jnp.sin(inputs.sum(axis=1, keepdims=True))

    def loss(params):
        return jnp.mean((model.apply({"params": params}, inputs) - targets) ** 2)

    @jax.jit
    def step(params, state):
        updates, state = optimiser.update(jax.grad(loss)(params), state, params)
        return optax.apply_updates(params, updates), state

    state = optimiser.init(params)
    for _ in range(steps):
        params, state = step(params, state)
    return params


def test_linen_scan_trains_like_unrolled_layers(p_bound=None):
    scanned_params = jax.jit(ScannedModel().init)(jax.random.PRNGKey(0), jnp.ones((1, WIDTH)))
    scanned_params = scanned_params["params"]
    assert scanned_params["layers"]["Dense_0"]["kernel"].shape == (LAYERS, WIDTH, WIDTH)
    layer_axes = functools.partial(scanned_layer_axes, module_name="layers")
    scanned = train(
        ScannedModel(),
        scanned_params,
        fromage_optax.fromage(LEARNING_RATE, p_bound=p_bound, layer_axes=layer_axes),
    )
    unrolled = train(
        UnrolledModel(), unstack(scanned_params), fromage_optax.fromage(LEARNING_RATE, p_bound)
    )
    # Three steps through tanh layers: gradients of the scanned and unrolled forms differ by
    # rounding, which the steps carry along.
    assert max_abs_difference(unstack(scanned), unrolled) <= 1e-5
    wrong = train(ScannedModel(), scanned_params, fromage_optax.fromage(LEARNING_RATE, p_bound))
    assert max_abs_difference(unstack(wrong), unrolled) > 1e-3


class NnxBlock(nnx.Module):
    def __init__(self, rngs):
        self.linear = nnx.Linear(WIDTH, WIDTH, rngs=rngs)

    def __call__(self, x):
        return x + jnp.tanh(self.linear(x))


class NnxScannedModel(nnx.Module):
    """Blocks created by a vmap'd constructor (one stacked Param per weight), run by nnx.scan."""

    def __init__(self, rngs):
        @nnx.split_rngs(splits=LAYERS)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make_blocks(rngs):
            return NnxBlock(rngs)

        self.blocks = make_blocks(rngs)
        self.head = nnx.Linear(WIDTH, 1, rngs=rngs)

    def __call__(self, x):
        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        def run_blocks(x, block):
            return block(x)

        return self.head(run_blocks(x, self.blocks))


class NnxUnrolledModel(nnx.Module):
    def __init__(self, rngs):
        # nnx.List from flax 0.12; flax 0.11 (the tested floor) takes a plain list.
        self.blocks = getattr(nnx, "List", list)([NnxBlock(rngs) for _ in range(LAYERS)])
        self.head = nnx.Linear(WIDTH, 1, rngs=rngs)

    def __call__(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def copy_scanned_into_unrolled(scanned, unrolled):
    for i, block in enumerate(unrolled.blocks):
        block.linear.kernel[...] = scanned.blocks.linear.kernel[...][i]
        block.linear.bias[...] = scanned.blocks.linear.bias[...][i]
    unrolled.head.kernel[...] = scanned.head.kernel[...]
    unrolled.head.bias[...] = scanned.head.bias[...]


def nnx_train(model, optimiser, steps=3):
    inputs = jax.random.normal(jax.random.PRNGKey(1), (16, WIDTH))
    targets = jnp.sin(inputs.sum(axis=1, keepdims=True))
    optimizer = nnx.Optimizer(model, optimiser, wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        grads = nnx.grad(lambda m: jnp.mean((m(inputs) - targets) ** 2))(model)
        optimizer.update(model, grads)

    for _ in range(steps):
        step(model, optimizer)
    return model


def test_nnx_vmap_scan_trains_like_unrolled_layers(p_bound=1.0):
    scanned = NnxScannedModel(nnx.Rngs(0))
    assert scanned.blocks.linear.kernel[...].shape == (LAYERS, WIDTH, WIDTH)
    unrolled = NnxUnrolledModel(nnx.Rngs(1))
    copy_scanned_into_unrolled(scanned, unrolled)

    # The layers' kernels differ in norm, so one norm for the whole stack would give a
    # different step (test_linen_scan_trains_like_unrolled_layers runs that control).
    initial_norms = jnp.linalg.norm(scanned.blocks.linear.kernel[...].reshape(LAYERS, -1), axis=1)
    assert float(jnp.max(initial_norms) / jnp.min(initial_norms)) > 1.02

    layer_axes = functools.partial(scanned_layer_axes, module_name="blocks")
    nnx_train(scanned, fromage_optax.fromage(LEARNING_RATE, p_bound, layer_axes=layer_axes))
    nnx_train(unrolled, fromage_optax.fromage(LEARNING_RATE, p_bound))

    def per_layer(model):
        kernels = model.blocks.linear.kernel[...]
        return [kernels[i] for i in range(LAYERS)] + [model.head.kernel[...]]

    unrolled_kernels = [b.linear.kernel[...] for b in unrolled.blocks] + [unrolled.head.kernel[...]]
    assert max_abs_difference(per_layer(scanned), unrolled_kernels) <= 1e-5


def test_scanned_layer_axes_marks_only_the_named_stack():
    params = {
        "embed": {"embedding": jnp.ones((5, 3))},
        "encoder": {"layers": {"attn": {"kernel": jnp.ones((4, 3, 3))}, "norm": jnp.ones((4, 3))}},
        "layers_head": {"kernel": jnp.ones((3, 1))},
    }
    assert scanned_layer_axes(params, "layers") == {
        "embed": {"embedding": None},
        "encoder": {"layers": {"attn": {"kernel": 0}, "norm": 0}},
        "layers_head": {"kernel": None},
    }
    two_stacks = scanned_layer_axes(params, ("layers", "layers_head"), axis=(0,))
    assert two_stacks["layers_head"]["kernel"] == (0,)
    with pytest.raises(ValueError, match="no parameter lies under a key named"):
        scanned_layer_axes(params, "Layers")


def test_nested_stacks_with_tuple_layer_axes():
    """A (2, 3, ...) stack, e.g. nn.scan inside nn.scan: layer_axes=(0, 1) is 6 layers."""
    rng = np.random.default_rng(3)
    kernels = jnp.asarray(rng.standard_normal((2, 3, WIDTH, WIDTH)), jnp.float32)
    kernels = kernels * jnp.arange(1.0, 7.0).reshape(2, 3, 1, 1)
    grads = 0.5 * jnp.asarray(rng.standard_normal(kernels.shape), jnp.float32) - kernels
    optimiser = fromage_optax.fromage(LEARNING_RATE, p_bound=1.0, layer_axes=(0, 1))
    stacked = jax.jit(functools.partial(one_step, optimiser))(kernels, grads)
    single = fromage_optax.fromage(LEARNING_RATE, p_bound=1.0)
    separate = jax.jit(jax.vmap(jax.vmap(functools.partial(one_step, single))))(kernels, grads)
    assert max_abs_difference(stacked, separate) <= tolerance(separate)
    negative = fromage_optax.fromage(LEARNING_RATE, p_bound=1.0, layer_axes=(-4, -3))
    assert max_abs_difference(one_step(negative, kernels, grads), stacked) <= tolerance(stacked)
    one_axis = fromage_optax.fromage(LEARNING_RATE, p_bound=1.0, layer_axes=0)
    assert max_abs_difference(one_step(one_axis, kernels, grads), separate) > 1e-2


def test_helper_as_callable_under_optax_masked():
    """optax.masked hands the transform a params tree with MaskedNode leaves; the callable
    form rebuilds layer_axes for that tree."""
    params, grads = synthetic_params_and_grads(seed=4)
    mask = {"layers": True, "head": jax.tree.map(lambda _: False, params["head"])}
    layer_axes = functools.partial(scanned_layer_axes, module_name="layers")
    optimiser = optax.masked(
        fromage_optax.fromage(LEARNING_RATE, p_bound=1.0, layer_axes=layer_axes), mask
    )
    stacked = jax.jit(functools.partial(one_step, optimiser))(params, grads)
    separate = one_step(
        fromage_optax.fromage(LEARNING_RATE, p_bound=1.0), unstack(params), unstack(grads)
    )
    for i in range(LAYERS):
        layer = f"layers_{i}"
        assert max_abs_difference(unstack(stacked)[layer], separate[layer]) <= tolerance(separate)
    # optax.masked passes the masked-out head's gradient through as its update.
    np.testing.assert_array_equal(
        stacked["head"]["kernel"], params["head"]["kernel"] + grads["head"]["kernel"]
    )


def test_helper_as_callable_in_a_partition_without_the_scanned_stack():
    """optax.multi_transform hands each partition the params with the others' leaves masked
    out: a partition holding none of the scanned leaves sees the stack's name over
    MaskedNodes only, which is no misspelt name."""
    params, grads = synthetic_params_and_grads(seed=5)
    layer_axes = functools.partial(scanned_layer_axes, module_name="layers")
    labels = {"layers": jax.tree.map(lambda _: "stack", params["layers"]), "head": "head"}
    labels["head"] = jax.tree.map(lambda _: "head", params["head"])
    optimiser = optax.multi_transform(
        {
            "stack": fromage_optax.fromage(LEARNING_RATE, layer_axes=layer_axes),
            "head": fromage_optax.fromage(LEARNING_RATE, layer_axes=layer_axes),
        },
        labels,
    )
    stepped = jax.jit(functools.partial(one_step, optimiser))(params, grads)
    separate = one_step(fromage_optax.fromage(LEARNING_RATE), unstack(params), unstack(grads))
    assert max_abs_difference(stepped["head"], separate["head"]) <= tolerance(separate)
    with pytest.raises(ValueError, match="no parameter lies under a key named"):
        fromage_optax.fromage(LEARNING_RATE, p_bound=1.0, layer_axes=layer_axes).init(
            params["head"]
        )
