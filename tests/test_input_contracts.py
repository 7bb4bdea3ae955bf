"""Bad or unusual input gets the right answer or a clear error (issues #12 and #13's edges).

Each test here failed on the code before these contracts were written down.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

import fromage_optax
from tests._reference import reference_step, relative_error

# float32 steps agree with the float64 reference to a few ulps of the result.
F32_TOLERANCE = 16 * float(np.finfo(np.float32).eps)


def _chain(learning_rate, p_bound):
    return optax.chain(
        fromage_optax.scale_by_fromage(),
        optax.scale_by_learning_rate(learning_rate),
        fromage_optax.control_weight_norm(learning_rate),
        fromage_optax.bound_weight_norm(p_bound) if p_bound else optax.identity(),
    )


def _step(optimizer, grads, params, initial=None, jit=False):
    state = optimizer.init(params if initial is None else initial)
    update = jax.jit(optimizer.update) if jit else optimizer.update
    updates, _ = update(grads, state, params)
    return optax.apply_updates(params, updates)


# 1. A negative learning rate (from a schedule) keeps the bound.


@pytest.mark.parametrize("jit", [False, True])
def test_negative_scheduled_learning_rate_keeps_the_bound(jit):
    params = {"w": jnp.array([3.0, 4.0])}
    schedule = lambda count: -0.1  # noqa: E731
    fused = _step(fromage_optax.fromage(schedule, p_bound=1.0), params, params, jit=jit)
    chained = _step(_chain(schedule, 1.0), params, params, jit=jit)
    assert float(jnp.linalg.norm(fused["w"])) <= 5.0 * (1 + F32_TOLERANCE)
    expected = reference_step(params["w"], params["w"], -0.1, 1.0, params["w"])
    assert relative_error(fused["w"], expected) <= F32_TOLERANCE
    assert relative_error(chained["w"], expected) <= F32_TOLERANCE


def test_negative_learning_rate_far_below_the_bound_matches_the_reference():
    rng = np.random.default_rng(0)
    w, g = rng.normal(size=(2, 50)).astype(np.float32)
    optimizer = fromage_optax.fromage(lambda count: -0.3, p_bound=1.2)
    new = _step(optimizer, {"w": jnp.asarray(g)}, {"w": jnp.asarray(w)})
    expected = reference_step(w, g, -0.3, 1.2, w)
    assert relative_error(new["w"], expected) <= F32_TOLERANCE


# 2. A p_bound state made for other params is refused, even with the same tensor count.


@pytest.mark.parametrize("jit", [False, True])
def test_state_from_a_tree_with_swapped_sizes_is_refused(jit):
    first = {"a": jnp.full(3, 10.0), "b": jnp.full(2, 0.1)}
    second = {"a": jnp.full(2, 10.0), "b": jnp.full(3, 0.1)}
    optimizer = fromage_optax.fromage(0.1, p_bound=1.0)
    state = optimizer.init(first)
    update = jax.jit(optimizer.update) if jit else optimizer.update
    with pytest.raises(ValueError, match=r"initial_norms .* do not match.*\['a'\].*3.*2"):
        update(second, state, second)


def test_a_fitting_state_survives_jit_and_tree_maps():
    params = {"a": jnp.full(3, 10.0), "b": jnp.full(2, 0.1)}
    optimizer = fromage_optax.fromage(0.1, p_bound=1.0)
    state = jax.jit(optimizer.init)(params)
    state = jax.tree.map(lambda x: x, state)
    updates, state = jax.jit(optimizer.update)(params, state, params)
    np.testing.assert_allclose(np.asarray(state.initial_norms), [np.sqrt(300), np.sqrt(0.02)])
    # States of the same params match (shard_map out_specs, checkpoint targets, eval_shape);
    # the layout is compared by value, so a state of other params is another tree (and a
    # jitted update traces it again, which refuses it).
    assert jax.tree.structure(jax.eval_shape(optimizer.init, params)) == jax.tree.structure(state)
    other = optimizer.init({"a": jnp.ones(2), "b": jnp.ones(3)})
    assert jax.tree.structure(other) != jax.tree.structure(state)


# 3. The diagnostics never hide NaN.


def test_nan_update_of_a_zero_tensor_is_nan_not_zero():
    updates = {"w": jnp.full(2, 0.01), "b": jnp.array([jnp.nan, 0.0])}
    params = {"w": jnp.ones(2), "b": jnp.zeros(2)}
    assert np.isnan(fromage_optax.deep_relative_trust(updates, params))
    assert np.isnan(fromage_optax.relative_update_norms(updates, params)["b"])
    assert np.isnan(fromage_optax.log_deep_relative_trust(updates, params))


def test_nan_param_gives_a_nan_ratio_not_inf():
    ratios = fromage_optax.relative_update_norms(
        {"w": jnp.full(2, 0.01)}, {"w": jnp.array([jnp.nan, 1.0])}
    )
    assert np.isnan(ratios["w"])
    monitor = fromage_optax.monitor_relative_trust()
    params = {"w": jnp.array([jnp.nan, 1.0])}
    _, state = monitor.update({"w": jnp.zeros(2)}, monitor.init(params), params)
    assert np.isnan(fromage_optax.relative_trust_metrics(state)["max_relative_update_norm"])


# 4. Complex updates of real params are refused.


@pytest.mark.parametrize(
    "transform",
    [fromage_optax.fromage(0.1), fromage_optax.scale_by_fromage()],
    ids=["fromage", "scale_by_fromage"],
)
def test_complex_updates_are_refused(transform):
    params = {"w": jnp.array([3.0, 4.0])}
    with pytest.raises(TypeError, match=r"\['w'\].*complex.*jnp.real"):
        transform.update({"w": jnp.array([1j, 0.0])}, transform.init(params), params)


def test_complex_updates_are_refused_by_the_diagnostics():
    with pytest.raises(TypeError, match=r"\['w'\].*complex"):
        fromage_optax.relative_update_norms({"w": jnp.array([1j, 0.0])}, {"w": jnp.ones(2)})


# 5. Vector-valued hyperparameters are refused, not broadcast per group.


def test_vector_valued_schedule_is_refused():
    params = {"w": jnp.ones(2)}
    for transform in [
        fromage_optax.fromage(lambda count: jnp.array([0.1, 0.2])),
        fromage_optax.control_weight_norm(lambda count: jnp.array([0.1, 0.2])),
    ]:
        with pytest.raises(ValueError, match=r"learning_rate must be a scalar.*shape \(2,\)"):
            transform.update(params, transform.init(params), params)


@pytest.mark.parametrize("name", ["learning_rate", "p_bound"])
def test_vector_injected_under_jit_is_refused(name):
    params = {"w": jnp.ones(2)}
    optimizer = optax.inject_hyperparams(fromage_optax.fromage)(learning_rate=0.1, p_bound=2.0)
    state = optimizer.init(params)
    state.hyperparams[name] = jnp.array([0.1, 0.2])
    with pytest.raises(ValueError, match=f"{name} must be a scalar"):
        jax.jit(optimizer.update)(params, state, params)


# 6. Invalid hyperparameters at run time give a NaN step, which apply_if_finite skips.


INVALID_AT_RUN_TIME = [
    ("learning_rate", np.nan),
    ("learning_rate", np.inf),
    ("p_bound", np.nan),
    ("p_bound", -1.0),
    ("p_bound", 0.0),
]


@pytest.mark.parametrize(("name", "value"), INVALID_AT_RUN_TIME)
def test_invalid_injected_hyperparameter_makes_the_step_nan(name, value):
    params = {"w": jnp.array([3.0, 4.0]), "b": jnp.zeros(2)}
    grads = {"w": jnp.array([1.0, 0.0]), "b": jnp.ones(2)}
    inner = optax.inject_hyperparams(fromage_optax.fromage)(learning_rate=0.1, p_bound=2.0)
    state = inner.init(params)
    state.hyperparams[name] = jnp.asarray(value, jnp.float32)
    updates, _ = jax.jit(inner.update)(grads, state, params)
    assert all(np.isnan(np.asarray(u)).all() for u in jax.tree.leaves(updates))
    # So optax.apply_if_finite chained after it skips the step: the params stay as they were.
    guarded = optax.chain(
        optax.inject_hyperparams(fromage_optax.fromage)(learning_rate=0.1, p_bound=2.0),
        optax.apply_if_finite(optax.identity(), 3),
    )
    guarded_state = guarded.init(params)
    guarded_state[0].hyperparams[name] = jnp.asarray(value, jnp.float32)
    updates, guarded_state = jax.jit(guarded.update)(grads, guarded_state, params)
    assert all((np.asarray(u) == 0).all() for u in jax.tree.leaves(updates))
    assert int(guarded_state[1].notfinite_count) == 1


@pytest.mark.parametrize(
    ("factory", "value"),
    [
        (lambda v: fromage_optax.control_weight_norm(lambda count: v), np.nan),
        (lambda v: fromage_optax.control_weight_norm(lambda count: v), np.inf),
        (fromage_optax.bound_weight_norm, -1.0),
        (fromage_optax.bound_weight_norm, np.nan),
    ],
)
def test_building_blocks_give_nan_for_invalid_run_time_values(factory, value):
    params = {"w": jnp.array([3.0, 4.0])}
    state = factory(2.0).init(params)
    # Built under jit from a traced value, as optax.inject_hyperparams does.
    update = jax.jit(lambda value, state: factory(value).update(params, state, params))
    updates, _ = update(jnp.asarray(value, jnp.float32), state)
    assert np.isnan(np.asarray(updates["w"])).all()


def test_zero_learning_rate_leaves_the_params_unchanged():
    params = {"w": jnp.array([3.0, 4.0]), "b": jnp.zeros(2)}
    grads = {"w": jnp.array([1.0, 0.0]), "b": jnp.ones(2)}
    for p_bound in [None, 1.0]:
        optimizer = fromage_optax.fromage(optax.linear_schedule(0.0, 0.1, 10), p_bound)
        new = _step(optimizer, grads, params, jit=True)
        for k in params:
            np.testing.assert_array_equal(new[k], params[k])


# 7. A mask that leaves out a non-float leaf lets the diagnostics take the tree.


def test_mask_may_leave_out_integer_leaves():
    params = {"w": jnp.array([3.0, 4.0]), "n": jnp.array(3)}
    updates = {"w": jnp.array([0.3, 0.4]), "n": jnp.array(1)}
    mask = {"w": True, "n": False}
    trust = fromage_optax.deep_relative_trust(updates, params, mask=mask)
    np.testing.assert_allclose(trust, 0.1, rtol=1e-6)
    np.testing.assert_allclose(
        fromage_optax.log_deep_relative_trust(updates, params, mask=mask), np.log1p(0.1), rtol=1e-6
    )
    monitor = fromage_optax.monitor_relative_trust(mask=mask)
    state = monitor.init(params)
    assert np.isnan(state.relative_update_norms["n"])
    out, state = jax.jit(monitor.update)(updates, state, params)
    assert out is not None
    np.testing.assert_allclose(state.max_relative_update_norm, 0.1, rtol=1e-6)
    assert np.isnan(state.relative_update_norms["n"])
    # A mask that selects the int leaf still names it.
    with pytest.raises(TypeError, match=r"\['n'\].*int32.*mask"):
        fromage_optax.monitor_relative_trust(mask={"w": True, "n": True}).init(params)
    with pytest.raises(TypeError, match=r"\['n'\].*int32"):
        fromage_optax.relative_update_norms(updates, params)


# 8. An axis_name that is not a mesh axis is named, with the leaf.


@pytest.mark.parametrize("p_bound", [None, 1.0])
def test_unknown_axis_name_inside_shard_map_names_the_leaf_and_axis(p_bound):
    mesh = jax.make_mesh((1,), ("data",))
    optimizer = fromage_optax.fromage(0.1, p_bound, axis_name={"w": "dat", "v": None})

    def step(params):
        return optimizer.update(params, optimizer.init(params), params)[0]

    mapped = jax.shard_map(step, mesh=mesh, in_specs=P(), out_specs=P())
    with pytest.raises(ValueError, match=r"'dat'.*\['w'\].*not a mesh axis"):
        mapped({"w": jnp.ones(4), "v": jnp.ones(2)})


def test_axis_name_outside_shard_map_is_a_clear_error():
    with pytest.raises(ValueError, match=r"'data'.*not a mesh axis.*axis_name=None"):
        fromage_optax.relative_update_norms(
            {"w": jnp.ones(2)}, {"w": jnp.ones(2)}, axis_name="data"
        )


# Issue #13's edges: size 0, Python floats, jax.grad, learning rates whose η² overflows.


SIZE_ZERO = {"empty": jnp.zeros((0, 3)), "w": jnp.array([3.0, 4.0]), "b": jnp.zeros(2)}
GRADS = {"empty": jnp.zeros((0, 3)), "w": jnp.array([1.0, 0.0]), "b": jnp.ones(2)}


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("p_bound", [None, 2.0])
def test_size_zero_leaves_work_like_zero_tensors(p_bound, jit):
    for optimizer in [fromage_optax.fromage(0.1, p_bound), _chain(0.1, p_bound)]:
        new = _step(optimizer, GRADS, SIZE_ZERO, jit=jit)
        assert new["empty"].shape == (0, 3)
        for k in ["w", "b"]:
            expected = reference_step(SIZE_ZERO[k], GRADS[k], 0.1, p_bound, SIZE_ZERO[k])
            if p_bound is None or k == "w":
                assert relative_error(new[k], expected) <= F32_TOLERANCE, k
    ratios = fromage_optax.relative_update_norms(GRADS, SIZE_ZERO)
    assert float(ratios["empty"]) == 0.0
    bound = fromage_optax.bound_weight_norm(2.0)
    np.testing.assert_array_equal(np.asarray(bound.init(SIZE_ZERO).initial_norms["empty"]), 0)


def test_python_float_leaves_work_like_optax():
    params, grads = {"w": 3.0, "v": jnp.array([3.0, 4.0])}, {"w": 1.0, "v": jnp.ones(2)}
    for optimizer in [
        fromage_optax.fromage(0.1),
        fromage_optax.fromage(0.1, 2.0),
        _chain(0.1, 2.0),
    ]:
        new = _step(optimizer, grads, params)
        expected = reference_step(np.array(3.0), np.array(1.0), 0.1)
        assert relative_error(new["w"], expected) <= F32_TOLERANCE


@pytest.mark.parametrize("p_bound", [None, 2.0])
def test_grad_through_update_is_finite_at_zero_norm_tensors(p_bound):
    """d(new params)/d(params) where a bias is zero: the plain step's derivative there."""
    optimizer = fromage_optax.fromage(0.1, p_bound)
    initial = {"w": jnp.array([3.0, 4.0]), "b": jnp.ones(2)}
    state = optimizer.init(initial)

    def total(params, grads):
        updates, _ = optimizer.update(grads, state, params)
        return sum(jnp.sum(x) for x in jax.tree.leaves(optax.apply_updates(params, updates)))

    params = {"w": jnp.array([3.0, 4.0]), "b": jnp.zeros(2)}
    grads = {"w": jnp.array([1.0, 0.0]), "b": jnp.zeros(2)}
    by_params, by_grads = jax.grad(total, argnums=(0, 1))(params, grads)
    for tree in (by_params, by_grads):
        assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(tree))
    # With g_b = 0 the bias takes the plain step W − ηg; its derivatives are 1/√(1+η²)
    # in W and −η/√(1+η²) in g.
    shrink = 1 / np.sqrt(1 + 0.1**2)
    np.testing.assert_allclose(by_params["b"], shrink, rtol=1e-6)
    np.testing.assert_allclose(by_grads["b"], -0.1 * shrink, rtol=1e-6)


def test_grad_is_finite_where_the_step_lands_exactly_on_zero():
    """η = 1 and g along W give W' = 0, where ‖W'‖ = √0 had an infinite derivative."""
    params = {"w": jnp.array([3.0, 4.0])}
    optimizer = fromage_optax.fromage(1.0, p_bound=1.0)
    state = optimizer.init(params)

    def total(params):
        updates, _ = optimizer.update(params, state, params)
        return jnp.sum(optax.apply_updates(params, updates)["w"])

    assert np.isfinite(np.asarray(jax.grad(total)(params)["w"])).all()


@pytest.mark.parametrize("p_bound", [None, 2.0])
@pytest.mark.parametrize(("eta", "w_scale"), [(1e9, 1e30), (1e30, 1.0), (3e38, 1e-30)])
def test_any_finite_learning_rate_gives_the_exact_step(eta, w_scale, p_bound):
    # The step never forms η² or η‖W‖: η/√(1+η²) ≤ 1 comes first.
    rng = np.random.default_rng(5)
    w = (w_scale * rng.normal(size=50)).astype(np.float32)
    g = rng.normal(size=50).astype(np.float32)
    new = _step(fromage_optax.fromage(eta, p_bound), {"w": g}, {"w": w}, jit=True)
    expected = reference_step(w, g, eta, p_bound, w)
    assert relative_error(new["w"], expected) <= F32_TOLERANCE


@pytest.mark.parametrize("transform", ["fromage", "fromage_p_bound", "scale_by_fromage"])
@pytest.mark.parametrize("overflowing", ["grads", "params"])
def test_a_norm_past_float32s_maximum_gives_a_nan_step_not_a_silent_one(transform, overflowing):
    # Finite elements whose norm exceeds 3.4e38: the ratio would round to 0 or inf and drop
    # g or W without a trace; a NaN step is what optax.apply_if_finite skips.
    small, huge = jnp.ones((4, 4)), jnp.full((4, 4), 3e38)
    params, grads = (small, huge) if overflowing == "grads" else (huge, small)
    make = {
        "fromage": lambda: fromage_optax.fromage(0.01),
        "fromage_p_bound": lambda: fromage_optax.fromage(0.01, p_bound=2.0),
        "scale_by_fromage": fromage_optax.scale_by_fromage,
    }[transform]
    opt = make()
    updates, _ = jax.jit(opt.update)({"w": grads}, opt.init({"w": params}), {"w": params})
    assert np.isnan(np.asarray(updates["w"])).all()
    # The gradient is finite, so apply_if_finite goes after the step, where it sees the NaN.
    guarded = optax.chain(make(), optax.apply_if_finite(optax.identity(), 1))
    updates, _ = guarded.update({"w": grads}, guarded.init({"w": params}), {"w": params})
    assert np.all(np.asarray(updates["w"]) == 0)


def test_relative_update_norms_are_exact_when_both_norms_overflow():
    huge = {"w": jnp.full((4, 4), 3e38), "v": jnp.ones(3)}
    update = {"w": jnp.full((4, 4), 1e38), "v": jnp.full(3, 2.0)}
    for fn in (fromage_optax.relative_update_norms, jax.jit(fromage_optax.relative_update_norms)):
        ratios = fn(update, huge)
        np.testing.assert_allclose(ratios["w"], 1 / 3, rtol=1e-6)
        np.testing.assert_allclose(ratios["v"], 2.0, rtol=1e-6)
    np.testing.assert_allclose(fromage_optax.deep_relative_trust(huge, huge), 3.0, rtol=1e-6)


@pytest.mark.parametrize("jit", [False, True])
def test_a_jitted_update_refuses_a_state_of_another_layout_after_its_first_trace(jit):
    # Same tensor count and vector length: only the layout tells the states apart, so it
    # must be part of the jit cache's key, not equal to every other layout.
    first = {"a": jnp.full(10, 1.0), "b": jnp.full(20, 1.0)}
    second = {"a": jnp.full(20, 1.0), "b": jnp.full(10, 1.0)}
    optimizer = fromage_optax.fromage(0.1, p_bound=2.0)
    update = jax.jit(optimizer.update) if jit else optimizer.update
    update(second, optimizer.init(second), second)  # traced once with a fitting state
    with pytest.raises(ValueError, match=r"initial_norms .* do not match.*\['a'\].*10.*20"):
        update(second, optimizer.init(first), second)


def test_control_weight_norm_checks_its_state_and_leaves():
    control = fromage_optax.control_weight_norm(0.1)
    params = {"a": jnp.ones(3)}
    with pytest.raises(TypeError, match="ControlWeightNormState"):
        control.update(params, None, params)
    ints = {"a": jnp.ones(3, jnp.int32)}
    with pytest.raises(TypeError, match=r"\['a'\] has dtype int32"):
        control.update(ints, control.init(ints), ints)


def test_bound_weight_norm_refuses_a_state_made_for_other_params():
    bound = fromage_optax.bound_weight_norm(2.0)
    state = bound.init({"a": jnp.ones((2, 3))})
    flat = {"a": jnp.ones(6)}
    with pytest.raises(ValueError, match=r"\['a'\].*shape \(1, 1\).*\(6,\) needs \(1,\)"):
        bound.update(flat, state, flat)
    other = {"b": jnp.ones((2, 3))}
    with pytest.raises(ValueError, match="another structure"):
        bound.update(other, state, other)
    with pytest.raises(TypeError, match="BoundWeightNormState"):
        bound.update(flat, None, flat)
    with pytest.raises(TypeError, match="complex64"):
        params = {"a": jnp.ones((2, 3))}
        bound.update({"a": jnp.ones((2, 3), jnp.complex64)}, state, params)


# Found while trying to break the API (see the closing note of #12).


def test_array_hyperparameters_must_be_scalars():
    with pytest.raises(ValueError, match=r"learning_rate must be a scalar.*\(1,\)"):
        fromage_optax.fromage(jnp.array([0.1]))
    with pytest.raises(ValueError, match=r"p_bound must be a scalar.*\(2,\)"):
        fromage_optax.fromage(0.1, p_bound=np.array([1.0, 2.0]))


def test_a_state_of_another_kind_is_named():
    params = {"w": jnp.ones(3)}
    optimizer = fromage_optax.fromage(0.1, p_bound=2.0)
    with pytest.raises(TypeError, match="FromageState.*got EmptyState"):
        optimizer.update(params, optax.EmptyState(), params)
    unbounded_state = fromage_optax.fromage(0.1).init(params)
    with pytest.raises(ValueError, match="no initial_norms.*without p_bound"):
        optimizer.update(params, unbounded_state, params)


@pytest.mark.parametrize("p_bound", [None, 2.0])
def test_vmap_over_a_batch_of_models_gives_each_its_own_norms(p_bound):
    rng = np.random.default_rng(3)
    params = {"w": jnp.asarray(rng.normal(size=(4, 6)), jnp.float32)}
    grads = {"w": jnp.asarray(rng.normal(size=(4, 6)), jnp.float32)}
    optimizer = fromage_optax.fromage(0.1, p_bound)
    batched = jax.vmap(lambda g, p: _step(optimizer, g, p))(grads, params)
    for i in range(4):
        expected = reference_step(params["w"][i], grads["w"][i], 0.1, p_bound, params["w"][i])
        assert relative_error(batched["w"][i], expected) <= F32_TOLERANCE


def test_gradient_elements_above_two_to_the_127_keep_the_exact_step():
    """The power-of-two prescale of such a tensor used to be subnormal (flushed to 0 on CPU),
    so the step silently became the plain W − ηg."""
    rng = np.random.default_rng(4)
    w = rng.normal(size=100).astype(np.float32)
    g = rng.normal(size=100).astype(np.float32)
    g[0] = np.float32(2.0**127.5)
    for p_bound in [None, 1.5]:
        new = _step(fromage_optax.fromage(0.01, p_bound), {"w": g}, {"w": w}, jit=True)
        expected = reference_step(w, g, 0.01, p_bound, w)
        assert relative_error(new["w"], expected) <= F32_TOLERANCE
    ratios = fromage_optax.relative_update_norms({"w": g}, {"w": w})
    np.testing.assert_allclose(
        ratios["w"], np.linalg.norm(g.astype(np.float64)) / np.linalg.norm(w), rtol=1e-6
    )


@pytest.mark.parametrize(("w_scale", "g_scale"), [(1e-5, 1e31), (1e-30, 1e30), (1e30, 1e-30)])
def test_scale_by_fromage_forms_its_product_without_under_or_overflow(w_scale, g_scale):
    rng = np.random.default_rng(5)
    w = (rng.normal(size=200) * w_scale).astype(np.float32)
    g = (rng.normal(size=200) * g_scale).astype(np.float32)
    transform = fromage_optax.scale_by_fromage()
    scaled, _ = jax.jit(transform.update)({"w": g}, transform.init(None), {"w": w})
    w64, g64 = w.astype(np.float64), g.astype(np.float64)
    expected = g64 * np.linalg.norm(w64) / np.linalg.norm(g64)
    assert relative_error(scaled["w"], expected) <= F32_TOLERANCE


def test_p_bound_state_round_trips_through_flax_serialization():
    """msgpack checkpoints (flax.serialization, TrainState.to_bytes) keep working."""
    serialization = pytest.importorskip("flax.serialization")
    params = {"w": jnp.arange(6.0).reshape(3, 2), "b": jnp.zeros(2)}
    optimizer = fromage_optax.fromage(0.1, p_bound=2.0)
    state = jax.jit(optimizer.update)(params, optimizer.init(params), params)[1]
    restored = serialization.from_bytes(optimizer.init(params), serialization.to_bytes(state))
    np.testing.assert_array_equal(
        np.asarray(restored.initial_norms), np.asarray(state.initial_norms)
    )
    assert int(restored.count) == 1
    first, _ = optimizer.update(params, state, params)
    again, _ = optimizer.update(params, restored, params)
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(again)):
        np.testing.assert_array_equal(a, b)
