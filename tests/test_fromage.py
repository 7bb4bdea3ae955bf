"""`fromage` and the equivalent chain of building blocks against the float64 NumPy reference."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _reference import reference_step, relative_error
from hypothesis import given, settings
from hypothesis import strategies as st

import fromage_optax

SHAPES = {
    "scalar": (),
    "vector": (7,),
    "matrix": (12, 5),
    "conv": (3, 3, 4, 6),
    "cube": (4, 3, 5),
    "zero_param": (6, 4),  # W = 0, like a freshly initialised bias
    "zero_grad": (9,),  # g = 0
    "both_zero": (2, 2),
}


def random_problem(seed, dtype=np.float32, scale=1.0):
    """A params/grads dict covering scalars, 1-D to 4-D tensors and zero tensors."""
    rng = np.random.default_rng(seed)
    params, grads = {}, {}
    for name, shape in SHAPES.items():
        params[name] = rng.normal(size=shape) * rng.uniform(0.1, 3.0)
        grads[name] = rng.normal(size=shape) * rng.uniform(1e-3, 10.0) * scale
    params["zero_param"][...] = 0.0
    params["both_zero"][...] = 0.0
    grads["zero_grad"][...] = 0.0
    grads["both_zero"][...] = 0.0
    cast = lambda tree: {k: np.asarray(v, dtype) for k, v in tree.items()}
    return cast(params), cast(grads)


def fromage_chain(learning_rate, p_bound):
    blocks = [
        fromage_optax.scale_by_fromage(),
        optax.scale_by_learning_rate(learning_rate),
        fromage_optax.control_weight_norm(learning_rate),
    ]
    if p_bound is not None:
        blocks.append(fromage_optax.bound_weight_norm(p_bound))
    return optax.chain(*blocks)


def run_and_compare(optimizer, params, grads_per_step, learning_rates, p_bound, tolerance, jit):
    """Runs the optimiser; each step is compared with the reference from the same W."""
    initial = {k: np.asarray(v) for k, v in params.items()}
    state = optimizer.init(params)
    update = jax.jit(optimizer.update) if jit else optimizer.update
    worst = 0.0
    for grads, eta in zip(grads_per_step, learning_rates):
        updates, state = update(grads, state, params)
        new_params = optax.apply_updates(params, updates)
        for k in params:
            expected = reference_step(params[k], grads[k], eta, p_bound, initial[k])
            error = relative_error(new_params[k], expected)
            worst = max(worst, error)
            assert error <= tolerance, f"{k}: relative error {error:.3g} > {tolerance:.1g}"
            assert new_params[k].dtype == params[k].dtype
        params = new_params
    return worst


def make_grads(seed, params, steps, scale=1.0):
    rng = np.random.default_rng(seed + 1000)
    return [
        {
            k: (
                rng.normal(size=np.shape(v)) * scale * (0 if k in ("zero_grad", "both_zero") else 1)
            ).astype(np.asarray(v).dtype)
            for k, v in params.items()
        }
        for _ in range(steps)
    ]


@pytest.mark.parametrize(
    "p_bound, learning_rate, jit",
    [(None, 0.01, True), (None, 0.3, True), (1.0, 0.01, True), (1.5, 0.3, True), (1.0, 0.3, False)],
)
@pytest.mark.parametrize("build", ["fused", "chain"])
def test_matches_reference_float32(p_bound, learning_rate, build, jit):
    params, _ = random_problem(seed=0)
    grads = make_grads(0, params, steps=3)
    optimizer = (
        fromage_optax.fromage(learning_rate, p_bound)
        if build == "fused"
        else fromage_chain(learning_rate, p_bound)
    )
    run_and_compare(optimizer, params, grads, [learning_rate] * 3, p_bound, 1e-6, jit)


@pytest.mark.parametrize("p_bound", [None, 1.2])
@pytest.mark.parametrize("build", ["fused", "chain"])
def test_matches_reference_with_schedule(p_bound, build):
    schedule = optax.exponential_decay(0.2, transition_steps=1, decay_rate=0.5)
    params, _ = random_problem(seed=1)
    grads = make_grads(1, params, steps=4)
    optimizer = (
        fromage_optax.fromage(schedule, p_bound)
        if build == "fused"
        else fromage_chain(schedule, p_bound)
    )
    rates = [float(schedule(i)) for i in range(4)]
    run_and_compare(optimizer, params, grads, rates, p_bound, 1e-6, jit=True)


@pytest.mark.parametrize("p_bound", [None, 1.3])
@pytest.mark.parametrize("build", ["fused", "chain"])
def test_matches_reference_float64(enable_x64, p_bound, build):
    params, _ = random_problem(seed=2, dtype=np.float64)
    grads = make_grads(2, params, steps=3)
    optimizer = (
        fromage_optax.fromage(0.05, p_bound) if build == "fused" else fromage_chain(0.05, p_bound)
    )
    params = jax.tree.map(jnp.asarray, params)
    assert params["matrix"].dtype == jnp.float64
    run_and_compare(optimizer, params, grads, [0.05] * 3, p_bound, 1e-12, jit=True)


@pytest.mark.parametrize("p_bound", [None, 1.0])
def test_fused_equals_chain_over_many_steps(p_bound):
    schedule = optax.cosine_decay_schedule(0.1, decay_steps=10)
    params, _ = random_problem(seed=3)
    fused, chain = fromage_optax.fromage(schedule, p_bound), fromage_chain(schedule, p_bound)
    fused_params, chain_params = params, params
    fused_state, chain_state = fused.init(params), chain.init(params)
    for grads in make_grads(3, params, steps=10):
        u, fused_state = jax.jit(fused.update)(grads, fused_state, fused_params)
        fused_params = optax.apply_updates(fused_params, u)
        u, chain_state = jax.jit(chain.update)(grads, chain_state, chain_params)
        chain_params = optax.apply_updates(chain_params, u)
    for k in params:
        assert relative_error(fused_params[k], chain_params[k]) < 1e-5, k


def test_zero_initialised_tensor_takes_a_full_step_unlike_optax_fromage():
    """A zero bias moves by η·g/√(1+η²); optax.fromage's 1e-6 clamp barely moves it."""
    params = {"kernel": jnp.ones((4, 4)), "bias": jnp.zeros(4)}
    grads = {"kernel": jnp.full((4, 4), 0.5), "bias": jnp.array([1.0, -2.0, 0.5, 3.0])}
    eta = 0.01
    ours, _ = fromage_optax.fromage(eta).update(
        grads, fromage_optax.fromage(eta).init(params), params
    )
    theirs_opt = optax.fromage(eta)
    theirs, _ = theirs_opt.update(grads, theirs_opt.init(params), params)
    expected_bias = -eta * np.asarray(grads["bias"]) / np.sqrt(1 + eta**2)
    np.testing.assert_allclose(ours["bias"], expected_bias, rtol=1e-6)
    assert np.max(np.abs(theirs["bias"])) < 1e-6 * np.max(np.abs(expected_bias))


def test_matches_authors_rule_on_a_hand_computed_step():
    params = jnp.array([3.0, 4.0])  # ‖W‖ = 5
    grads = jnp.array([0.0, 2.0])  # ‖g‖ = 2
    opt = fromage_optax.fromage(0.75)
    updates, _ = opt.update(grads, opt.init(params), params)
    # W − 0.75·(5/2)·g = [3, 0.25]; √(1 + 0.5625) = 1.25
    np.testing.assert_allclose(params + updates, [2.4, 0.2], rtol=1e-6)


def test_state_is_small_and_counts_steps():
    params = {"a": jnp.ones((100, 100)), "b": jnp.ones(10)}
    state = fromage_optax.fromage(0.1).init(params)
    assert isinstance(state, fromage_optax.FromageState)
    assert state.initial_norms is None
    bounded = fromage_optax.fromage(0.1, p_bound=2.0).init(params)
    state_bytes = sum(x.nbytes for x in jax.tree.leaves(bounded))
    assert state_bytes <= 4 + 16 * 2  # count + one float32 per tensor
    # One array, whatever the number of tensors: ‖W₀‖ in the order of the leaves.
    assert len(jax.tree.leaves(bounded)) == 2
    np.testing.assert_allclose(bounded.initial_norms, [100.0, np.sqrt(10)], rtol=1e-6)
    _, state = fromage_optax.fromage(0.1).update(params, state, params)
    assert int(state.count) == 1


@settings(max_examples=8)
@given(
    st.lists(
        st.tuples(
            st.lists(st.integers(1, 5), min_size=0, max_size=4).map(tuple),
            st.sampled_from(["random", "zero_param", "zero_grad"]),
        ),
        min_size=1,
        max_size=4,
    ),
    st.sampled_from([None, 1.0, 2.0]),
    st.floats(1e-3, 0.5),
    st.integers(0, 2**16),
)
def test_random_trees_match_reference(leaves, p_bound, learning_rate, seed):
    rng = np.random.default_rng(seed)
    params, grads = {}, {}
    for i, (shape, kind) in enumerate(leaves):
        params[f"leaf{i}"] = np.asarray(rng.normal(size=shape) * (kind != "zero_param"), np.float32)
        grads[f"leaf{i}"] = np.asarray(rng.normal(size=shape) * (kind != "zero_grad"), np.float32)
    for build in ("fused", "chain"):
        optimizer = (
            fromage_optax.fromage(learning_rate, p_bound)
            if build == "fused"
            else fromage_chain(learning_rate, p_bound)
        )
        later = make_grads(seed, params, steps=1)[0]
        later = {k: v * np.any(grads[k] != 0) for k, v in later.items()}  # zero stays zero
        steps = [grads, later]
        run_and_compare(optimizer, params, steps, [learning_rate] * 2, p_bound, 1e-6, jit=True)


def _near_the_bound(gap, p_bound, seed=7):
    """W₀, and W at `gap` × p·‖W₀‖ with gradients that grow, shrink or turn it."""
    rng = np.random.default_rng(seed)
    initial = {k: rng.normal(size=(6, 5)).astype(np.float32) for k in ("grow", "shrink", "turn")}
    params = {k: (v * (p_bound * gap)).astype(np.float32) for k, v in initial.items()}
    turn = rng.normal(size=(6, 5))
    w = params["turn"].astype(np.float64)
    turn -= w * np.sum(turn * w) / np.sum(w * w)  # orthogonal to W
    grads = {
        "grow": -3.0 * params["grow"],  # cos(W, g) = −1: the largest ‖W'‖
        "shrink": 0.5 * params["shrink"],
        "turn": turn.astype(np.float32),
    }
    return initial, params, grads


@pytest.mark.parametrize("gap", [0.5, 0.95, 0.999, 1.0, 1.001, 2.0])
@pytest.mark.parametrize("jit", [True, False])
def test_bound_matches_reference_near_its_edge(gap, jit):
    # ⟨W, g⟩ is skipped on steps where no tensor can pass its bound; just below
    # the bound a gradient along −W must still be caught.
    p_bound, eta = 1.5, 0.1
    initial, params, grads = _near_the_bound(gap, p_bound)
    optimizer = fromage_optax.fromage(eta, p_bound)
    update = jax.jit(optimizer.update) if jit else optimizer.update
    updates, _ = update(grads, optimizer.init(initial), params)
    new_params = optax.apply_updates(params, updates)
    for k in params:
        expected = reference_step(params[k], grads[k], eta, p_bound, initial[k])
        assert relative_error(new_params[k], expected) <= 1e-6, k
        assert np.linalg.norm(new_params[k]) <= p_bound * np.linalg.norm(initial[k]) * (1 + 1e-6)


def test_inner_product_is_skipped_only_far_from_the_bound(monkeypatch):
    # For large tensors (over the size threshold: a run of their own on CPUs), behind the
    # run's branch; small tensors reduce it in the same read as their norms.
    from fromage_optax import _batching

    monkeypatch.setattr(_batching, "GROUP_MAX_SIZE", 8)  # the 6x5 tensors count as large
    calls = []
    plain_cosine = _batching.plain_cosine
    monkeypatch.setattr(
        _batching, "plain_cosine", lambda *args: calls.append(1) or plain_cosine(*args)
    )
    p_bound, eta = 1.5, 0.1
    optimizer = fromage_optax.fromage(eta, p_bound)
    # Outside jit the branch is taken in Python, so the calls show which one ran.
    # Far below the bound: ‖W'‖ ≤ ‖W‖(1 + η)/√(1 + η²) < p·‖W₀‖ for every cosine.
    initial, params, grads = _near_the_bound(0.5, p_bound)
    optimizer.update(grads, optimizer.init(initial), params)
    assert not calls
    initial, params, grads = _near_the_bound(0.95, p_bound)
    optimizer.update(grads, optimizer.init(initial), params)
    assert calls


def _force_layout(monkeypatch, per_large_tensor):
    """Makes `lax.platform_dependent`'s choice of layout here: the CPU one or the others'."""
    from fromage_optax import _norms

    monkeypatch.setattr(
        _norms, "_choose", lambda cpu, default: cpu() if per_large_tensor else default()
    )


@pytest.mark.parametrize("p_bound", [None, 1.5])
@pytest.mark.parametrize("per_large_tensor", [False, True])
def test_one_conditional_for_the_small_tensors_and_one_per_large_tensor(
    p_bound, per_large_tensor, monkeypatch
):
    # The overflow fallback (and p_bound's lazy inner product) sit behind one branch
    # for all the small tensors, however many groups they form, and on CPUs one more
    # for each large tensor (elsewhere the whole tree shares one). A branch-free design
    # measured slower on CPUs: see `benchmarks/step_speed/norm_variants.py`.
    _force_layout(monkeypatch, per_large_tensor)
    params = {
        "big": [jnp.ones((300, 300)), jnp.ones((70_000,))],
        "kernels": [jnp.ones((4, 5)) for _ in range(70)],
        "biases": [jnp.zeros(5) for _ in range(70)],
        "scalar": jnp.ones(()),
    }
    optimizer = fromage_optax.fromage(0.1, p_bound)
    state = optimizer.init(params)
    hlo = jax.jit(optimizer.update).lower(params, state, params).compile().as_text()
    assert hlo.count(" conditional(") == (3 if per_large_tensor else 1)


def _named_calls(jaxpr, name):
    """The `jax.jit` calls named `name` in `jaxpr` and every jaxpr nested in it."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "jit" and eqn.params.get("name") == name:
            found.append(eqn)
        for sub in jax.core.jaxprs_in_params(eqn.params):
            found.extend(_named_calls(sub, name))
    return found


def test_the_per_group_scalar_math_is_traced_once_per_signature():
    # A large tensor is a group of its own, and each platform's layout is traced: the
    # scalar math per group is a nested jit, so 6 tensors of one shape trace it once (traced
    # at every group, 100 tensors of 500x1000 with p_bound took 5.1 s to trace and lower
    # instead of 1.6 s). Every call shares that one trace.
    params = {f"w{i}": jnp.ones((300, 300)) for i in range(6)}
    optimizer = fromage_optax.fromage(0.1, 1.5)
    state = optimizer.init(params)
    jaxpr = jax.make_jaxpr(optimizer.update)(params, state, params).jaxpr
    for name in ("step_coefficients", "could_pass_bound", "_rescaled_norms"):
        calls = _named_calls(jaxpr, name)
        assert len(calls) >= 6, name
        assert len({id(call.params["jaxpr"]) for call in calls}) == 1, name


@pytest.mark.parametrize("p_bound", [None, 1.5])
@pytest.mark.parametrize("per_large_tensor", [False, True])
def test_both_branch_layouts_match_the_reference_at_mixed_scales(
    p_bound, per_large_tensor, monkeypatch
):
    # One branch for the tree (off CPUs) or one per large tensor (CPUs): the same steps,
    # with some runs taking the fallback (huge or tiny gradients) and others not.
    _force_layout(monkeypatch, per_large_tensor)
    rng = np.random.default_rng(1)
    shapes = {"a": (300, 300), "b": (70_000,), "c": (300, 300), "k0": (4, 5), "k1": (4, 5)}
    scales = {"a": 1.0, "b": 1e30, "c": 1.0, "k0": 1e-30, "k1": 1.0}
    params = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    grads = {k: (rng.normal(size=s) * scales[k]).astype(np.float32) for k, s in shapes.items()}
    initial = {k: 0.9 * v for k, v in params.items()}  # near the bound for p_bound=1.5
    optimizer = fromage_optax.fromage(0.1, p_bound)
    state = optimizer.init(initial)
    updates, _ = jax.jit(optimizer.update)(grads, state, params)
    new = optax.apply_updates(params, updates)
    for k in params:
        expected = reference_step(params[k], grads[k], 0.1, p_bound, initial[k])
        assert relative_error(new[k], expected) <= 1e-6, k


def test_a_large_tensor_with_a_nan_leaves_the_next_ones_exact(monkeypatch):
    # Each run's reductions wait for the previous run's norms (through an optimization
    # barrier): a NaN there must not reach the next runs, which
    # keep their plain sums (outside jit the branch is taken in Python, so the calls of
    # the fallback show which runs took it).
    from fromage_optax import _batching

    _force_layout(monkeypatch, True)
    calls = []
    rescaled_norms = _batching.rescaled_norms
    monkeypatch.setattr(
        _batching, "rescaled_norms", lambda *args: calls.append(1) or rescaled_norms(*args)
    )
    rng = np.random.default_rng(0)
    params = [rng.normal(size=(300, 300)).astype(np.float32) for _ in range(3)]
    grads = [rng.normal(size=(300, 300)).astype(np.float32) for _ in range(3)]
    params[0][0, 0] = np.nan  # its norm, which the next run waits for, is NaN
    optimizer = fromage_optax.fromage(0.01)
    for update in (optimizer.update, jax.jit(optimizer.update)):
        updates, _ = update(grads, optimizer.init(params), params)
        new = optax.apply_updates(params, updates)
        assert not np.isfinite(np.asarray(new[0])).all()  # as documented: non-finite
        for w, g, n in zip(params[1:], grads[1:], new[1:]):
            assert relative_error(n, reference_step(w, g, 0.01)) <= 1e-6
        if update is optimizer.update:
            assert len(calls) == 1  # the first run only


def test_branches_take_the_groups_inputs_in_their_own_dtype():
    # The fallback branches read each group's stacked inputs (a few operands per
    # group, not one per leaf), in the params' own dtype: a float32 copy of a bfloat16
    # tensor handed to a branch is written out by XLA:CPU every step (8-11x SGD).
    params = {
        "big": jnp.ones((300, 300), jnp.bfloat16),
        "small": [jnp.ones((4, 5), jnp.float32) for _ in range(100)],
    }
    optimizer = fromage_optax.fromage(0.1)
    hlo = jax.jit(optimizer.update).lower(params, optimizer.init(params), params)
    text = hlo.compile().as_text()
    lines = [line for line in text.splitlines() if " conditional(" in line]
    assert lines
    branches = [
        branch
        for line in lines
        for branch in re.search(r"branch_computations=\{([^}]*)\}", line).group(1).split(", ")
    ]
    for branch in branches:
        (header,) = [h for h in text.splitlines() if h.startswith(branch + " (")]
        parameters = header.split(") -> ")[0]
        assert "f32[300,300]" not in parameters and "f32[100,4,5]" not in parameters
        assert parameters.count("[4,5]") <= 4, parameters[:300]  # stacked, not 100 leaves


def test_initial_norms_per_layer_slice_and_a_state_that_does_not_fit():
    params = {"blocks": jnp.arange(24.0).reshape(2, 3, 4), "head": jnp.ones(5)}
    optimizer = fromage_optax.fromage(0.1, p_bound=1.0, layer_axes={"blocks": 0, "head": None})
    state = optimizer.init(params)
    blocks = np.arange(24.0).reshape(2, 12)
    expected = [*np.linalg.norm(blocks, axis=1), np.sqrt(5)]
    np.testing.assert_allclose(state.initial_norms, expected, rtol=1e-6)
    # The state of other params (here: without the per-layer split) is refused.
    other = fromage_optax.fromage(0.1, p_bound=1.0).init(params)
    with pytest.raises(ValueError, match="initial_norms .* do not match the params"):
        optimizer.update(params, other, params)
