"""Bad input fails early, with a message that names the problem and the fix."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fromage_optax

ALL_NEEDING_PARAMS = [
    fromage_optax.fromage(0.1),
    fromage_optax.scale_by_fromage(),
    fromage_optax.control_weight_norm(0.1),
    fromage_optax.bound_weight_norm(2.0),
]


@pytest.mark.parametrize("opt", ALL_NEEDING_PARAMS)
def test_update_without_params(opt):
    params = {"w": jnp.ones(3)}
    with pytest.raises(ValueError, match="needs the current parameters"):
        opt.update(params, opt.init(params))


@pytest.mark.parametrize("opt", ALL_NEEDING_PARAMS)
def test_mismatched_trees_name_the_path(opt):
    params = {"encoder": {"w": jnp.ones(3)}, "decoder": {"w": jnp.ones(3)}}
    grads = {"encoder": {"w": jnp.ones(3)}, "decodr": {"w": jnp.ones(3)}}
    with pytest.raises(ValueError, match=r"\['decoder'\]\['w'\].*same keys"):
        opt.update(grads, opt.init(params), params)


def test_mismatched_shapes_name_the_path():
    opt = fromage_optax.fromage(0.1)
    params = {"w": jnp.ones((3, 2))}
    with pytest.raises(ValueError, match=r"\['w'\].*shape \(2, 3\).*\(3, 2\)"):
        opt.update({"w": jnp.ones((2, 3))}, opt.init(params), params)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), -float("inf"), 1e39])
@pytest.mark.parametrize("factory", [fromage_optax.fromage, fromage_optax.control_weight_norm])
def test_bad_constant_learning_rate(factory, bad):
    with pytest.raises(ValueError, match="learning_rate"):
        factory(bad)


@pytest.mark.parametrize("p_bound", [None, 0.5, 2.0])
def test_a_learning_rate_of_zero_leaves_the_params_unchanged_except_for_the_bound(p_bound):
    # η = 0 is a valid rate: a warm-up schedule starts there, and optax.inject_hyperparams
    # rebuilds the transform with the schedule's current value. Only the bound acts then:
    # with p < 1 a tensor above p·‖W₀‖ is scaled back to it.
    params = {"w": jnp.array([3.0, 4.0]), "b": jnp.zeros(2)}
    grads = {"w": jnp.array([1.0, -2.0]), "b": jnp.ones(2)}
    opt = fromage_optax.fromage(0.0, p_bound)
    new = optax.apply_updates(params, opt.update(grads, opt.init(params), params)[0])
    scale = min(1.0, p_bound or 1.0)
    np.testing.assert_allclose(new["w"], scale * params["w"], rtol=1e-6)
    np.testing.assert_array_equal(new["b"], params["b"])
    control = fromage_optax.control_weight_norm(0.0)  # (W + u)/√(1 + 0) − W = u
    u, _ = control.update(grads, control.init(params), params)
    jax.tree.map(np.testing.assert_array_equal, u, grads)


@pytest.mark.parametrize("make", [fromage_optax.fromage, fromage_optax.control_weight_norm])
def test_inject_hyperparams_with_a_schedule_through_zero(make):
    params = {"w": jnp.array([3.0, 4.0])}
    grads = {"w": jnp.array([1.0, -2.0])}
    schedule = optax.linear_schedule(0.0, 0.01, 100)
    for jit in (False, True):
        opt = optax.inject_hyperparams(make)(learning_rate=schedule)
        update = jax.jit(opt.update) if jit else opt.update
        # η = schedule(0) = 0: fromage leaves W alone, control_weight_norm passes u on.
        unchanged = grads if make is fromage_optax.control_weight_norm else {"w": jnp.zeros(2)}
        updates, state = update(grads, opt.init(params), params)
        np.testing.assert_array_equal(updates["w"], unchanged["w"])
        assert float(state.hyperparams["learning_rate"]) == 0.0
        updates, state = update(grads, state, params)
        assert float(state.hyperparams["learning_rate"]) > 0.0
        if make is fromage_optax.fromage:
            assert np.all(np.asarray(updates["w"]) != 0)


def test_a_non_array_leaf_names_its_path():
    params = {"w": jnp.ones(3), "name": "dense"}
    for opt in (fromage_optax.fromage(0.1), fromage_optax.fromage(0.1, p_bound=2.0)):
        with pytest.raises(TypeError, match=r"\['name'\] is a str"):
            opt.init(params)
    opt = fromage_optax.fromage(0.1)
    with pytest.raises(TypeError, match=r"\['name'\] is a str"):
        opt.update(params, opt.init({"w": jnp.ones(3)}), params)


def test_a_list_of_axis_names_is_refused_at_construction():
    with pytest.raises(TypeError, match=r"axis_name=\('data',\)"):
        fromage_optax.fromage(0.1, axis_name=["data"])


def test_learning_rate_of_wrong_type():
    with pytest.raises(TypeError, match="learning_rate"):
        fromage_optax.fromage("0.1")
    with pytest.raises(TypeError, match="bool"):
        fromage_optax.fromage(True)
    with pytest.raises(ValueError, match="None"):
        fromage_optax.fromage(None)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_p_bound(bad):
    with pytest.raises(ValueError, match="p_bound must be None or a finite number > 0"):
        fromage_optax.fromage(0.1, p_bound=bad)
    with pytest.raises(ValueError, match="p_bound"):
        fromage_optax.bound_weight_norm(bad)


def test_bound_weight_norm_needs_a_bound():
    with pytest.raises(ValueError, match="p_bound is None"):
        fromage_optax.bound_weight_norm(None)


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.bool_])
def test_integer_or_bool_params_name_the_leaf_and_suggest_masked(dtype):
    params = {"layer": {"w": jnp.ones(3), "step": jnp.zeros((), dtype)}}
    for opt in [fromage_optax.fromage(0.1), fromage_optax.fromage(0.1, p_bound=1.0)]:
        with pytest.raises(TypeError, match=r"\['layer'\]\['step'\].*optax.masked"):
            opt.init(params)
    opt = fromage_optax.scale_by_fromage()
    with pytest.raises(TypeError, match=r"\['layer'\]\['step'\]"):
        opt.update(params, opt.init(params), params)


def test_layer_axes_out_of_range():
    params = {"w": jnp.ones((2, 3))}
    opt = fromage_optax.fromage(0.1, layer_axes={"w": 2})
    with pytest.raises(ValueError, match=r"axis 2 is out of range.*\['w'\].*\(2, 3\)"):
        opt.update(params, opt.init(params), params)


def test_layer_axes_prefix_must_match_the_params():
    params = {"w": jnp.ones((2, 3))}
    opt = fromage_optax.fromage(0.1, layer_axes={"v": 0})
    with pytest.raises(ValueError, match="pytree prefix of the params"):
        opt.update(params, opt.init(params), params)


def test_axis_name_of_wrong_type():
    with pytest.raises(TypeError, match="axis_name"):
        fromage_optax.fromage(0.1, axis_name=3)


def test_schedules_and_traced_values_are_accepted():
    fromage_optax.fromage(optax.linear_schedule(0.1, 0.0, 10))
    fromage_optax.fromage(np.float32(0.1), p_bound=np.float64(2.0))
    fromage_optax.fromage(jnp.asarray(0.1), p_bound=jnp.asarray(2.0))
