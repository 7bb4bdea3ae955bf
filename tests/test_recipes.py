"""`kernel_mask` and `fromage_with_adamw`: vs. optax.multi_transform and the float64 reference."""

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _reference import reference_step, relative_error

import fromage_optax

EPS32 = float(np.finfo(np.float32).eps)


def flax_like_params(seed=0):
    """A Flax-shaped params dict: embeddings, Dense kernels (one stacked by scan), biases, norms."""
    rng = np.random.default_rng(seed)
    normal = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
    return {
        "token_embedding": {"embedding": normal(11, 6)},
        "block_0": {
            "attention": {"kernel": normal(6, 9), "bias": jnp.zeros(9)},
            "norm": {"scale": jnp.ones(6), "bias": jnp.zeros(6)},
        },
        "blocks": {"mlp": {"kernel": normal(3, 6, 12), "bias": normal(3, 12)}},
        "output_head": {"kernel": normal(6, 11)},
    }


def gradients(params, seed):
    rng = np.random.default_rng(seed + 100)
    return jax.tree.map(
        lambda p: jnp.asarray(rng.normal(size=np.shape(p)), jnp.float32) * 0.3, params
    )


def selected_paths(mask):
    return {
        jax.tree_util.keystr(path)
        for path, chosen in jax.tree_util.tree_leaves_with_path(mask)
        if chosen
    }


def hand_built(learning_rate, adamw_learning_rate, mask_fn, **fromage_options):
    """The recipe written out with optax.multi_transform, as a user would."""

    def labels(params):
        return jax.tree.map(lambda chosen: "f" if chosen else "a", mask_fn(params))

    return optax.multi_transform(
        {
            "f": fromage_optax.fromage(learning_rate, **fromage_options),
            "a": optax.adamw(adamw_learning_rate, weight_decay=0.0),
        },
        labels,
    )


def float32_tolerance(tensor):
    """Relative error of one float32 Fromage step on `tensor`, from rounding alone.

    The norms are sums of n squares (error at most n·eps relative), and the step
    adds a handful of roundings (the ratio, √(1+η²), the products, the sum).
    """
    return (np.size(tensor) + 8) * EPS32


# kernel_mask ----------------------------------------------------------------------------------


def test_kernel_mask_selects_dense_kernels_only():
    params = flax_like_params()
    assert selected_paths(fromage_optax.kernel_mask()(params)) == {
        "['block_0']['attention']['kernel']",
        "['blocks']['mlp']['kernel']",
        "['output_head']['kernel']",
    }
    hidden = fromage_optax.kernel_mask(exclude=("output_head",))(params)
    assert "['output_head']['kernel']" not in selected_paths(hidden)
    by_shape = fromage_optax.kernel_mask(names=None)(params)
    assert selected_paths(by_shape) == {
        "['token_embedding']['embedding']",
        "['block_0']['attention']['kernel']",
        "['blocks']['mlp']['kernel']",
        "['blocks']['mlp']['bias']",  # [layers, units]: 2-D although a bias
        "['output_head']['kernel']",
    }
    stacked_only = fromage_optax.kernel_mask(min_ndim=3)(params)
    assert selected_paths(stacked_only) == {"['blocks']['mlp']['kernel']"}


def test_kernel_mask_on_attributes_none_leaves_shapes_and_masked_nodes():
    class Dense(NamedTuple):
        kernel: jax.Array
        bias: jax.Array

    layer = Dense(jnp.ones((3, 2)), jnp.zeros(2))
    assert fromage_optax.kernel_mask()([layer, layer]) == [Dense(True, False), Dense(True, False)]
    with_none = {"dense": {"kernel": jnp.ones((2, 2)), "bias": None}}
    assert fromage_optax.kernel_mask()(with_none) == {"dense": {"kernel": True, "bias": None}}
    shapes = jax.eval_shape(flax_like_params)
    assert selected_paths(fromage_optax.kernel_mask()(shapes)) == selected_paths(
        fromage_optax.kernel_mask()(flax_like_params())
    )
    masked = {"kernel": optax.MaskedNode(), "other": {"kernel": jnp.ones((2, 2))}}
    assert fromage_optax.kernel_mask()(masked) == {
        "kernel": optax.MaskedNode(),
        "other": {"kernel": True},
    }
    assert fromage_optax.kernel_mask()({}) == {}


def test_kernel_mask_errors():
    with pytest.raises(TypeError, match=r"\('kernel',\)"):
        fromage_optax.kernel_mask("kernel")
    with pytest.raises(TypeError, match="exclude must be a sequence"):
        fromage_optax.kernel_mask(exclude="head")
    with pytest.raises(TypeError, match="hold strings"):
        fromage_optax.kernel_mask(names=(1,))
    with pytest.raises(ValueError, match="names is empty"):
        fromage_optax.kernel_mask(names=())
    with pytest.raises(ValueError, match="non-negative int"):
        fromage_optax.kernel_mask(min_ndim=-1)
    for unnamed in (jnp.ones((3, 3)), [jnp.ones((2, 2)), jnp.ones(2)]):
        with pytest.raises(ValueError, match="names=None"):
            fromage_optax.kernel_mask()(unnamed)
    # By shape alone, unnamed leaves are selectable.
    assert fromage_optax.kernel_mask(names=None)(jnp.ones((3, 3))) is True
    assert fromage_optax.kernel_mask(names=None)([jnp.ones((2, 2)), jnp.ones(2)]) == [True, False]


# fromage_with_adamw ---------------------------------------------------------------------------


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize(
    "options",
    [{}, {"p_bound": 1.5}, {"layer_axes": -1}],
    ids=["plain", "p_bound", "per_unit"],
)
def test_equals_multi_transform_built_by_hand(options, jit):
    params = flax_like_params()
    schedule = optax.linear_schedule(0.05, 0.01, 3)
    recipe = fromage_optax.fromage_with_adamw(schedule, 1e-3, **options)
    reference = hand_built(schedule, 1e-3, fromage_optax.kernel_mask(), **options)
    states = recipe.init(params), reference.init(params)
    recipe_update = jax.jit(recipe.update) if jit else recipe.update
    reference_update = jax.jit(reference.update) if jit else reference.update
    ours, theirs = params, params
    for step in range(3):
        grads = gradients(params, step)
        updates, state = recipe_update(grads, states[0], ours)
        expected, reference_state = reference_update(grads, states[1], theirs)
        # The same transformations on the same leaves: the same numbers, bit for bit.
        chex.assert_trees_all_equal(updates, expected)
        states = state, reference_state
        ours, theirs = optax.apply_updates(ours, updates), optax.apply_updates(theirs, expected)


@pytest.mark.parametrize("p_bound", [None, 1.0])
@pytest.mark.parametrize("layer_axes", [None, -1])
def test_fromage_leaves_match_the_float64_reference(p_bound, layer_axes):
    params = flax_like_params(seed=1)
    initial = jax.tree.map(np.asarray, params)
    mask = fromage_optax.kernel_mask()(params)
    recipe = fromage_optax.fromage_with_adamw(0.1, 1e-3, p_bound=p_bound, layer_axes=layer_axes)
    state = recipe.init(params)
    update = jax.jit(recipe.update)
    for step in range(3):
        grads = gradients(params, step)
        updates, state = update(grads, state, params)
        new_params = optax.apply_updates(params, updates)
        for (path, chosen), w, g, w0, new in zip(
            jax.tree_util.tree_leaves_with_path(mask),
            jax.tree.leaves(params),
            jax.tree.leaves(grads),
            jax.tree.leaves(initial),
            jax.tree.leaves(new_params),
        ):
            if not chosen:
                continue
            axes = () if layer_axes is None else (np.ndim(w) - 1,)
            expected = reference_step(w, g, 0.1, p_bound, w0, layer_axes=axes)
            error = relative_error(new, expected)
            assert error <= float32_tolerance(w), f"{jax.tree_util.keystr(path)}: {error:.3g}"
        params = new_params


def test_other_leaves_take_adamw_steps():
    params = flax_like_params(seed=2)
    mask = fromage_optax.kernel_mask()(params)
    recipe = fromage_optax.fromage_with_adamw(
        0.1, 3e-3, b1=0.8, b2=0.95, eps=1e-6, weight_decay=0.1
    )
    adamw = optax.adamw(3e-3, b1=0.8, b2=0.95, eps=1e-6, weight_decay=0.1)
    others = lambda tree: jax.tree.map(
        lambda chosen, x: None if chosen else x, mask, tree, is_leaf=lambda x: x is None
    )
    state, adamw_state = recipe.init(params), adamw.init(others(params))
    for step in range(3):
        grads = gradients(params, step)
        updates, state = recipe.update(grads, state, params)
        expected, adamw_state = adamw.update(others(grads), adamw_state, others(params))
        # Unjitted, both run the same operations on these leaves one by one.
        chex.assert_trees_all_equal(others(updates), expected)
        params = optax.apply_updates(params, updates)


def test_momentum_is_a_trace_before_fromage():
    params = flax_like_params(seed=3)
    recipe = fromage_optax.fromage_with_adamw(0.05, 1e-3, momentum=0.9)
    labels = lambda p: jax.tree.map(
        lambda chosen: "f" if chosen else "a", fromage_optax.kernel_mask()(p)
    )
    reference = optax.multi_transform(
        {
            "f": optax.chain(optax.trace(0.9), fromage_optax.fromage(0.05)),
            "a": optax.adamw(1e-3, weight_decay=0.0),
        },
        labels,
    )
    state, reference_state = recipe.init(params), reference.init(params)
    for step in range(3):
        grads = gradients(params, step)
        updates, state = recipe.update(grads, state, params)
        expected, reference_state = reference.update(grads, reference_state, params)
        chex.assert_trees_all_equal(updates, expected)
        params = optax.apply_updates(params, updates)
    with pytest.raises(ValueError, match="momentum"):
        fromage_optax.fromage_with_adamw(0.05, 1e-3, momentum=1.0)


def test_empty_and_full_selections():
    params = flax_like_params(seed=4)
    grads = gradients(params, 0)
    nothing = fromage_optax.fromage_with_adamw(0.1, 1e-3, fromage_mask=lambda p: False)
    updates, _ = jax.jit(nothing.update)(grads, nothing.init(params), params)
    adamw = optax.adamw(1e-3, weight_decay=0.0)
    expected, _ = jax.jit(adamw.update)(grads, adamw.init(params), params)
    chex.assert_trees_all_equal(updates, expected)

    everything = fromage_optax.fromage_with_adamw(0.1, 1e-3, fromage_mask=True)
    updates, _ = jax.jit(everything.update)(grads, everything.init(params), params)
    fromage = fromage_optax.fromage(0.1)
    expected, _ = jax.jit(fromage.update)(grads, fromage.init(params), params)
    chex.assert_trees_all_equal(updates, expected)


def test_mask_as_a_pytree_prefix():
    params = flax_like_params(seed=5)
    grads = gradients(params, 0)
    prefix = {"token_embedding": False, "block_0": True, "blocks": False, "output_head": False}
    recipe = fromage_optax.fromage_with_adamw(0.1, 1e-3, fromage_mask=prefix)
    updates, _ = recipe.update(grads, recipe.init(params), params)
    for name in ("kernel", "bias"):
        w = params["block_0"]["attention"][name]
        g = grads["block_0"]["attention"][name]
        new = w + updates["block_0"]["attention"][name]
        assert relative_error(new, reference_step(w, g, 0.1)) <= float32_tolerance(w)
    # The zero bias takes Fromage's plain step −η·g/√(1+η²) (no ratio to be relative to).
    np.testing.assert_allclose(
        updates["block_0"]["norm"]["bias"],
        -0.1 * grads["block_0"]["norm"]["bias"] / np.sqrt(1.01),
        rtol=4 * EPS32,
    )


def test_none_leaves_and_an_outer_mask():
    params = {"dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros(2)}, "frozen": None}
    grads = {"dense": {"kernel": jnp.full((3, 2), 0.5), "bias": jnp.ones(2)}, "frozen": None}
    recipe = fromage_optax.fromage_with_adamw(0.1, 1e-3)
    updates, _ = recipe.update(grads, recipe.init(params), params)
    assert updates["frozen"] is None
    # Adam's first step is −lr·g/(|g| + eps): −lr here, up to the float32 rounding of the
    # bias correction 1 − β₂ = 1e-3 (relative eps/1e-3 in v̂, half of it after the square root).
    np.testing.assert_allclose(updates["dense"]["bias"], -1e-3, rtol=EPS32 / 1e-3)
    # Inside optax.masked, the recipe sees MaskedNodes where the outer mask is False.
    outer = optax.masked(recipe, {"dense": {"kernel": True, "bias": False}, "frozen": None})
    updates, _ = jax.jit(outer.update)(grads, outer.init(params), params)
    np.testing.assert_array_equal(updates["dense"]["bias"], grads["dense"]["bias"])
    w, g = np.asarray(params["dense"]["kernel"]), np.asarray(grads["dense"]["kernel"])
    new = w + np.asarray(updates["dense"]["kernel"])
    assert relative_error(new, reference_step(w, g, 0.1)) <= float32_tolerance(w)


def test_jitted_training_loop_and_state():
    params = flax_like_params(seed=6)
    recipe = fromage_optax.fromage_with_adamw(
        optax.cosine_decay_schedule(0.05, 10), optax.cosine_decay_schedule(1e-3, 10)
    )

    @jax.jit
    def step(params, state, grads):
        updates, state = recipe.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    state = recipe.init(params)
    for i in range(10):
        params, state = step(params, state, gradients(params, i))
    assert set(state.inner_states) == {"fromage", "adamw"}
    fromage_state = state.inner_states["fromage"].inner_state
    adamw_state = state.inner_states["adamw"].inner_state
    assert isinstance(fromage_state, fromage_optax.FromageState)
    assert int(fromage_state.count) == int(adamw_state[0].count) == 10
    assert all(bool(jnp.all(jnp.isfinite(w))) for w in jax.tree.leaves(params))


def test_kernel_mask_and_the_recipe_on_an_nnx_state():
    """An nnx.State keeps each array in a Variable (its path ends in `.value`): the mask
    names the Variable's key, keeps the Variable around each bool, and the recipe trains an
    NNX model through nnx.Optimizer: Fromage steps on the kernels, AdamW on the biases."""
    from flax import nnx

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.hidden = nnx.Linear(6, 8, rngs=rngs)
            self.out = nnx.Linear(8, 2, rngs=rngs)

        def __call__(self, x):
            return self.out(jax.nn.relu(self.hidden(x)))

    model = MLP(nnx.Rngs(0))
    state = nnx.state(model, nnx.Param)
    mask = fromage_optax.kernel_mask()(state)
    assert jax.tree.structure(mask) == jax.tree.structure(state)
    assert mask["hidden"]["kernel"].get_value() and not mask["hidden"]["bias"].get_value()

    before = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
    optimizer = nnx.Optimizer(model, fromage_optax.fromage_with_adamw(0.1, 1e-3), wrt=nnx.Param)
    x = jnp.linspace(-1.0, 1.0, 18).reshape(3, 6)
    grads = nnx.grad(lambda m: jnp.sum(m(x) ** 2))(model)
    optimizer.update(model, grads)
    after = nnx.state(model, nnx.Param)
    for layer in ("hidden", "out"):
        kernel = reference_step(before[layer]["kernel"][...], grads[layer]["kernel"][...], 0.1)
        assert relative_error(after[layer]["kernel"][...], kernel) <= 1e-6
        g = np.asarray(grads[layer]["bias"][...], np.float64)
        bias = before[layer]["bias"][...] - 1e-3 * g / (np.abs(g) + 1e-8)
        np.testing.assert_allclose(after[layer]["bias"][...], bias, rtol=1e-5, atol=1e-7)
