"""benchmarks/step_speed/ runs end to end on its quick preset and writes complete results."""

import dataclasses
import json

import jax
import numpy as np
import optax
import pytest

from benchmarks.step_speed import __main__ as step_speed_cli
from benchmarks.step_speed import compile_time, configs, report, timing


def test_parameter_trees_have_the_advertised_sizes():
    few_large = configs.PRESETS["cpu"].trees["few_large"]
    many_small = configs.PRESETS["cpu"].trees["many_small"]
    sizes = lambda spec: [int(np.prod(s)) for s in _shapes(spec)]
    assert sum(sizes(few_large)) == 50_000_000 and len(sizes(few_large)) == 100
    assert sum(sizes(many_small)) == 2_000_000 and len(sizes(many_small)) == 2000
    tree = timing.parameter_tree({"pairs": 3, "kernel": (4, 5)}, "bfloat16", seed=0)
    assert len(tree) == 3 and tree["layer_0000"]["kernel"].shape == (4, 5)
    assert tree["layer_0002"]["bias"].dtype == jax.numpy.bfloat16


@pytest.mark.skipif(timing._threads_running() is None, reason="needs /proc/self/task")
def test_steps_are_timed_only_once_the_runtime_threads_are_idle():
    # An XLA computation dispatched but not finished keeps a runtime thread running:
    # the wait must outlast it (JAX dispatches asynchronously, so the call returns first).
    @jax.jit
    def busy(x):
        return jax.lax.fori_loop(0, 400, lambda _, y: jax.numpy.tanh(y @ x), x)

    x = jax.numpy.full((300, 300), 1e-3)
    busy(x).block_until_ready()  # compiled, so that the wait below is for running only
    timing.wait_until_idle()
    result = busy(x)
    timing.wait_until_idle(limit_s=60.0)
    assert result.is_ready()


def _shapes(spec):
    if "pairs" in spec:
        return [spec["kernel"][:1], spec["kernel"]] * spec["pairs"]
    return [spec["shape"]] * spec["leaves"]


def test_quick_preset_writes_table_json_and_plot(tmp_path, capsys):
    step_speed_cli.run(
        dataclasses.replace(
            configs.PRESETS["quick"],
            out=str(tmp_path),
            repeats=2,
            optimizers=(
                "fromage",
                "fromage p_bound=2",
                "fromage p_bound=2, at the bound",
                "optax.fromage",
                "optax.adam",
            ),
            tree_names=("many_small", "gpt"),
        )
    )
    results = json.loads((tmp_path / "step_speed.json").read_text())
    assert (tmp_path / "step_speed.png").stat().st_size > 0
    assert "optimizer" in capsys.readouterr().out
    rows = results["optimizer_steps"]
    assert {r["tree"] for r in rows} == {"many_small", "gpt"}
    for row in rows:
        assert set(row) >= {"ms", "x_sgd", "state_bytes", "compile_s", "params", "leaves"}
        assert row["ms"] > 0 and row["compile_s"] > 0 and len(row["times_ms"]) == 2
        assert row["busy_after_ms"] >= 0
        assert row["floor_bytes"] >= 3 * row["param_bytes"]
    sgd = [r for r in rows if r["optimizer"] == "optax.sgd"]
    assert all(r["x_sgd"] == 1.0 for r in sgd)
    for row in rows:
        if row["optimizer"] == "fromage":
            assert row["state_bytes"] == 4  # the step count
        if row["optimizer"].startswith("fromage p_bound=2"):
            assert row["state_bytes"] <= 4 + 16 * row["leaves"]
        if row["optimizer"] == "optax.adam":
            assert row["state_bytes"] >= 8 * row["params"]
    models = {(r["model"], r["optimizer"]) for r in results["train_steps"]}
    assert models == {
        (m, o) for m in ("mlp", "gpt") for o in ("optax.sgd", "optax.adam", "fromage")
    }
    assert results["machine"]["devices"]


def test_fresh_compile_times_each_contender_in_a_process_of_its_own(tmp_path):
    """The compile column of `fresh_compile_trees`: measured again in a new process."""
    spec = configs.PRESETS["quick"].trees["many_small"]
    rows = timing.time_optimizer_steps(
        "many_small", spec, "float32", 1, ["optax.sgd"], fresh_compile=True
    )
    for row in rows:
        assert row["compile_where"] == "fresh process"
        assert len(row["compile_runs_s"]) == 1 and row["compile_s"] == row["compile_runs_s"][0]
        assert row["compile_s"] > 0 and row["compile_in_process_s"] > 0
    with pytest.raises(RuntimeError, match="in a fresh process failed"):
        compile_time.fresh_process_compile_seconds(spec, "float32", "no such optimiser")


def test_fresh_compile_repeats_run_in_rounds_and_report_the_median(monkeypatch):
    """`fresh_compile_repeats` processes per contender, one round over the contenders at a
    time; ``compile_s`` is their median, and the table says so."""
    calls = []
    seconds = iter([5.0, 50.0, 1.0, 30.0, 6.0, 31.0])  # medians 5 and 31, means 4 and 37

    def fake_fresh_compile(spec, dtype, name):
        calls.append(name)
        return next(seconds)

    monkeypatch.setattr(compile_time, "fresh_process_compile_seconds", fake_fresh_compile)
    spec = configs.PRESETS["quick"].trees["few_large"]
    names = ["optax.sgd", "fromage"]
    rows = timing.time_optimizer_steps(
        "few_large", spec, "float32", 1, names, fresh_compile=True, fresh_compile_repeats=3
    )
    assert calls == names * 3
    runs = {row["optimizer"]: row["compile_runs_s"] for row in rows}
    assert runs == {"optax.sgd": [5.0, 1.0, 6.0], "fromage": [50.0, 30.0, 31.0]}
    assert [row["compile_s"] for row in rows] == [5.0, 31.0]
    text = report.markdown(
        {
            "optimizer_steps": rows,
            "train_steps": [],
            "preset": "quick",
            "repeats": 1,
            "machine": {"processor": "x86_64", "devices": ["cpu:0"], "jax": "", "optax": ""},
        }
    )
    assert "few_large: each contender compiled in a process of its own, the median of 3" in text


def test_at_the_bound_contender_starts_at_its_bound():
    params = timing.parameter_tree({"leaves": 3, "shape": (4, 5)}, "float32", seed=0)
    scale = configs.INIT_SCALE["fromage p_bound=2, at the bound"]
    state = configs.OPTIMIZERS["fromage p_bound=2, at the bound"]().init(
        jax.tree.map(lambda x: x * scale, params)
    )
    norms = [np.linalg.norm(np.asarray(w, np.float64)) for w in jax.tree.leaves(params)]
    np.testing.assert_allclose(2 * np.asarray(state.initial_norms), norms, rtol=1e-6)


def test_memory_traffic_floor():
    # SGD reads W and g and writes W'; Fromage reads both once more for the norms; Adam's
    # moments are read and written on top.
    assert timing.minimal_traffic_bytes("optax.sgd", 100, 4) == 3 * 100 + 2 * 4
    assert timing.minimal_traffic_bytes("fromage", 100, 4) == 5 * 100 + 2 * 4
    assert timing.minimal_traffic_bytes("optax.adam", 100, 204) == 3 * 100 + 2 * 204
    assert timing.device_bandwidth_gbs("NVIDIA H100 80GB HBM3") == 3350
    assert timing.device_bandwidth_gbs("NVIDIA H100 PCIe") == 2000
    assert timing.device_bandwidth_gbs("NVIDIA H200") == 4800
    assert timing.device_bandwidth_gbs("cpu") is None
    rows = timing.time_optimizer_steps(
        "tiny", {"leaves": 2, "shape": (3, 4)}, "float32", 1, ["optax.sgd"], bandwidth_gbs=1.0
    )
    assert rows[0]["floor_bytes"] == 3 * rows[0]["param_bytes"] + 2 * rows[0]["state_bytes"]
    assert rows[0]["floor_ms"] == pytest.approx(rows[0]["floor_bytes"] / 1e9 * 1e3)
    assert rows[0]["x_floor"] == pytest.approx(rows[0]["ms"] / rows[0]["floor_ms"])


@pytest.mark.parametrize("scale", [1.0, 1e-30, 1e30])
def test_design_study_steps_against_the_reference(scale):
    # The design-study contenders are Fromage steps from different norm passes: the gated
    # and three-scale ones are exact at every scale; the plain-sums one only at moderate ones.
    from _reference import reference_step, relative_error

    rng = np.random.default_rng(0)
    params = {
        "w": rng.normal(size=(30, 20)).astype(np.float32),
        "biases": [rng.normal(size=(7,)).astype(np.float32) for _ in range(3)],
        "zero": np.zeros(5, np.float32),
    }
    grads = jax.tree.map(lambda x: (rng.normal(size=x.shape) * scale).astype(np.float32), params)
    for name in configs.DESIGN_STUDY:
        optimizer = configs.OPTIMIZERS[name]()
        updates, _ = jax.jit(optimizer.update)(grads, optimizer.init(params), params)
        new = optax.apply_updates(params, updates)
        errors = [
            relative_error(n, reference_step(w, g, 0.01))
            for n, w, g in zip(*(jax.tree.leaves(t) for t in (new, params, grads)))
        ]
        if name != "plain-sums step" or scale == 1.0:
            assert max(errors) < 1e-6, (name, errors)
        else:  # a plain sum of squares over- or underflows: that step is wrong
            assert max(errors) > 1e-3, (name, errors)


def test_design_study_is_not_run_by_default():
    assert not set(configs.DESIGN_STUDY) & set(configs.PRESETS["cpu"].optimizers)
    assert set(configs.DESIGN_STUDY) <= set(configs.NORM_BASED_OPTIMIZERS)


def test_against_commit_times_an_older_library_beside_this_one(tmp_path):
    from benchmarks.step_speed import against_commit

    out = tmp_path / "ab"
    against_commit.main(
        ["--commit", "HEAD", "--preset", "quick", "--trees", "few_large", "--repeats", "2",
         "--out", str(out)]
    )  # fmt: skip
    saved = json.loads((out / "against_commit.json").read_text())
    names = [row["optimizer"] for row in saved["rows"]]
    assert names[0] == "optax.sgd" and "fromage before" in names and "fromage after" in names
    assert (out / "against_commit.png").stat().st_size > 0
    assert "× optax.sgd" in (out / "against_commit.md").read_text()
