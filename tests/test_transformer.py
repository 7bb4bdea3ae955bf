"""Tests for benchmarks/transformer/: the quick preset end to end, resume, grids, masks."""

import dataclasses
import json
import math

import jax
import numpy as np
import optax
import optax.contrib
import pytest
from _reference import reference_step, relative_error

import fromage_optax
from benchmarks.models import gpt
from benchmarks.transformer import __main__ as transformer_cli
from benchmarks.transformer import configs, report

_NEEDS_MUON = pytest.mark.skipif(
    not hasattr(optax.contrib, "MuonDimensionNumbers"),
    reason="this optax has no optax.contrib.MuonDimensionNumbers (the version floor's may not)",
)


RUN_FIELDS = {
    "best_validation_loss",
    "best_validation_perplexity",
    "final_validation_loss",
    "final_train_loss",
    "final_validation_perplexity",
    "final_train_perplexity",
    "wall_time_s",
    "tokens_per_s",
    "history",
}


@pytest.mark.slow
def test_quick_preset_end_to_end(tmp_path, capsys):
    summary = transformer_cli.main(["--preset", "quick", "--out", str(tmp_path), "--no-progress"])
    results = json.loads((tmp_path / "transformer.json").read_text())
    assert (tmp_path / "transformer.png").stat().st_size > 1000
    markdown = (tmp_path / "transformer.md").read_text()
    assert "## Every run" in markdown and "best fromage_adamw − best adamw" in markdown
    preset = configs.PRESETS["quick"]
    assert len(results["runs"]) == len(configs.grid(preset, configs.OPTIMIZER_NAMES))
    assert {r["optimizer"] for r in results["runs"]} == set(configs.OPTIMIZER_NAMES)
    assert results["parameters"] == gpt.gpt_parameter_count(gpt.gpt_config(preset.model))
    assert results["data"]["name"] == "pydoc_data.topics"
    initial_loss = math.log(256)
    for run in results["runs"]:
        assert RUN_FIELDS <= set(run)
        history = run["history"]
        assert history["step"] == [0, 6, 12]
        assert len(history["validation_loss"]) == len(history["train_loss"]) == 3
        # At init the model predicts nearly uniform bytes; every optimiser then lowers the loss.
        assert abs(history["validation_loss"][0] - initial_loss) < 0.25
        assert run["final_train_loss"] < history["train_loss"][0]
        assert run["best_validation_loss"] == min(history["validation_loss"])
        assert run["best_validation_perplexity"] == pytest.approx(
            math.exp(run["best_validation_loss"])
        )
        assert run["tokens_per_s"] > 0 and run["wall_time_s"] > 0
        assert history["max_relative_update_norm"][0] is None
        assert all(x > 0 for x in history["max_relative_update_norm"][1:])
        # The scales each optimiser reached, recorded at the end.
        ratios = history["final_weight_norm_ratios"]
        assert set(ratios) == set(history["final_weight_norms"])
        assert any("kernel" in path for path in ratios) and all(r > 0 for r in ratios.values())
        assert history["final_logit_rms"] > 0
        if run["optimizer"] == "fromage":
            # Fromage moves every weight matrix by about η = lr relative to its norm.
            assert history["max_relative_update_norm"][-1] == pytest.approx(
                run["learning_rate"], rel=0.05
            )
    assert [r["optimizer"] for r in results["best"]] == list(configs.OPTIMIZER_NAMES)
    assert summary["fromage_minus_adamw_best_validation_loss"] == pytest.approx(
        results["best"][0]["best_validation_loss"] - results["best"][1]["best_validation_loss"]
    )
    printed = capsys.readouterr().out
    assert "| optimizer |" in printed and "fromage_optax.fromage" in printed


@pytest.mark.slow
def test_resume_from_checkpoint_matches_uninterrupted_run(tmp_path):
    """--scan-layers, --data and Orbax resume: 8 steps in one go = 4 steps, stop, resume."""
    text_file = tmp_path / "text.txt"
    text_file.write_text("".join(f"{i} squared is {i * i}.\n" for i in range(400)))
    common = ["--preset", "quick", "--optimizers", "fromage", "--scan-layers", "--no-progress"]
    common += ["--data", str(text_file), "--checkpoint-every", "4"]
    straight = transformer_cli.main(common + ["--steps", "8", "--out", str(tmp_path / "straight")])
    first_part = transformer_cli.main(common + ["--steps", "4", "--out", str(tmp_path / "resumed")])
    resumed = transformer_cli.main(
        common + ["--steps", "8", "--resume", "--out", str(tmp_path / "resumed")]
    )
    assert straight["model"]["scan_layers"] and straight["data"]["name"] == str(text_file)
    expected, got = straight["runs"][0], resumed["runs"][0]
    assert got["history"]["step"] == [0, 4, 6, 8]
    assert expected["history"]["step"] == [0, 6, 8]
    np.testing.assert_allclose(got["final_validation_loss"], expected["final_validation_loss"])
    np.testing.assert_allclose(got["final_train_loss"], expected["final_train_loss"])
    assert got["final_validation_loss"] < got["history"]["validation_loss"][0]
    # The checkpoint carries the first part's wall time; the resumed run adds its own.
    assert got["wall_time_s"] > first_part["runs"][0]["wall_time_s"] > 0
    assert (tmp_path / "resumed" / "checkpoints" / "fromage_lr0.01_p1_seed0" / "8").is_dir()


def test_grid_covers_every_setting():
    preset = configs.PRESETS["cpu"]
    runs = configs.grid(preset, configs.OPTIMIZER_NAMES)
    fromage = {(r.learning_rate, r.p_bound) for r in runs if r.optimizer == "fromage"}
    assert fromage == {(lr, p) for lr in (0.01, 0.003) for p in (None, 1.0, 2.0)}
    assert sorted(r.learning_rate for r in runs if r.optimizer == "adamw") == [3e-4, 1e-3, 3e-3]
    assert len({r.name for r in runs}) == len(runs)
    with pytest.raises(ValueError, match="unknown optimizer"):
        configs.grid(preset, ["lion"])


def test_cpu_preset_is_nanogpt_cpu_training():
    preset = configs.PRESETS["cpu"]
    assert (preset.steps, preset.batch_size) == (2000, 12)
    assert gpt.gpt_config(preset.model).context_length == 64
    assert gpt.gpt_parameter_count(gpt.gpt_config(configs.PRESETS["gpu"].model)) >= 1e8


def test_matrix_mask_selects_weights_only():
    params = jax.eval_shape(
        lambda: gpt.init_gpt_params(gpt.gpt_config("quick", scan_layers=True), jax.random.key(0))
    )
    mask = configs.matrix_mask(params)
    selected = {
        jax.tree_util.keystr(path)
        for path, chosen in jax.tree_util.tree_leaves_with_path(mask)
        if chosen
    }
    assert "['token_embedding']['embedding']" in selected
    assert "['position_embedding']" in selected
    assert any("['mlp_in']['kernel']" in p for p in selected)
    assert not any("bias" in p or "scale" in p for p in selected)


def test_best_per_optimizer_skips_diverged_runs():
    def result(optimizer, loss):
        return {"optimizer": optimizer, "best_validation_loss": loss}

    results = [result("adamw", math.nan), result("adamw", 2.0), result("adamw", 1.5)]
    results += [result("fromage", 1.7)]
    best = report.best_per_optimizer(results)
    assert [(r["optimizer"], r["best_validation_loss"]) for r in best] == [
        ("fromage", 1.7),
        ("adamw", 1.5),
    ]


def test_data_and_data_dir_are_exclusive(tmp_path):
    with pytest.raises(SystemExit):
        transformer_cli.main(["--data", "a.txt", "--data-dir", str(tmp_path)])


def test_unknown_run_name_rejected(capsys):
    with pytest.raises(SystemExit):
        transformer_cli.main(["--preset", "quick", "--runs", "fromage_lr9"])
    assert "not in the grid" in capsys.readouterr().err


def test_cosine_fromage_runs_are_named_and_scheduled():
    preset = dataclasses.replace(configs.PRESETS["quick"], fromage_schedules=("constant", "cosine"))
    names = [r.name for r in configs.grid(preset, ["fromage"])]
    assert names == ["fromage_lr0.01_p1_seed0", "fromage_lr0.01_p1_cosine_seed0"]
    cosine = configs.RunSpec("fromage", 0.1, None, "cosine")
    optimizer = configs.make_optimizer(cosine, steps=10, warmup_steps=2)
    params = {"kernel": jax.numpy.ones((3, 3))}  # a name the monitor's mask selects
    state = optimizer.init(params)
    grads = {"kernel": jax.numpy.ones((3, 3))}
    ratios = []
    for _ in range(3):
        updates, state = optimizer.update(grads, state, params)
        ratios.append(
            float(fromage_optax.relative_trust_metrics(state)["max_relative_update_norm"])
        )
    # Warm-up: no step at count 0, then lr/2, then about lr (Fromage's relative step is ~η).
    np.testing.assert_allclose(ratios, [0.0, 0.05, 0.1], rtol=0.06, atol=1e-7)


def test_fromage_momentum_variant_is_separate():
    preset = dataclasses.replace(configs.PRESETS["quick"], fromage_momenta=(None, 0.9))
    runs = configs.grid(preset, ["fromage"])
    assert [r.setting for r in runs] == ["fromage_lr0.01_p1", "fromage_lr0.01_p1_m0.9"]
    optimizer = configs.make_optimizer(runs[1], steps=10, warmup_steps=2)
    state = optimizer.init({"kernel": jax.numpy.ones(3)})
    assert isinstance(state[0][0], optax.TraceState)

    def result(momentum, loss):
        return {"optimizer": "fromage", "momentum": momentum, "best_validation_loss": loss}

    best = report.best_per_optimizer([result(0.9, 1.0), result(None, 2.0), result(None, 1.5)])
    assert [(report.variant(r), r["best_validation_loss"]) for r in best] == [
        ("fromage", 1.5),
        ("fromage+momentum", 1.0),
    ]


def test_recipe_grid_names_and_optimizer():
    preset = dataclasses.replace(
        configs.PRESETS["quick"],
        recipe_learning_rates=(0.03, 0.01),
        recipe_norms=("tensor", "neuron"),
        recipe_selections=("kernels", "matrices"),
        recipe_momenta=(None, 0.9),
    )
    runs = configs.grid(preset, ["fromage_adamw"])
    names = [r.setting for r in runs]
    assert len(set(names)) == len(runs) == 16
    assert names[0] == "fromage_adamw_lr0.03_alr0.003_pNone"
    assert "fromage_adamw_lr0.01_alr0.003_pNone_m0.9_neuron_matrices" in names
    adamw = configs.grid(dataclasses.replace(preset, adamw_weight_decays=(0.1, 0.0)), ["adamw"])
    assert [r.setting for r in adamw] == ["adamw_lr0.001", "adamw_lr0.001_wd0"]

    params = gpt.init_gpt_params(gpt.gpt_config("quick"), jax.random.key(0))
    kernels = configs.recipe_mask("kernels")(params)
    assert kernels["block_0"]["mlp_in"]["kernel"] and not kernels["token_embedding"]["embedding"]
    matrices = configs.recipe_mask("matrices")(params)
    assert matrices["token_embedding"]["embedding"] and not matrices["block_0"]["mlp_in"]["bias"]
    with pytest.raises(ValueError, match="unknown recipe selection"):
        configs.recipe_mask("all")

    # AdamW's weight decay in the recipe reaches the embeddings only, not LayerNorm or biases.
    decayed = dataclasses.replace(runs[0], weight_decay=0.5)
    assert decayed.name == "fromage_adamw_lr0.03_alr0.003_pNone_wd0.5_seed0"
    optimizer = configs.make_optimizer(decayed, steps=10, warmup_steps=2)
    state = optimizer.init(params)
    zeros = jax.tree.map(jax.numpy.zeros_like, params)
    update = jax.jit(optimizer.update)  # one compile, not one per operation
    for _ in range(2):  # the second step runs at half the peak learning rate
        updates, state = update(zeros, state, params)
    embedding = params["token_embedding"]["embedding"]
    # −lr·wd·W: the schedule's value and two products, each rounded once in float32.
    np.testing.assert_allclose(
        updates["token_embedding"]["embedding"],
        -0.003 / 2 * 0.5 * embedding,
        rtol=4 * np.finfo(np.float32).eps,
    )
    assert not np.any(updates["block_0"]["mlp_norm"]["scale"])

    grads = jax.tree.map(lambda w: jax.numpy.cos(w * 50.0), params)
    neuron = next(r for r in runs if r.norms == "neuron" and r.selection == "matrices")
    optimizer = configs.make_optimizer(neuron, steps=10, warmup_steps=2)
    state = optimizer.init(params)
    update = jax.jit(optimizer.update)
    for _ in range(2):  # warm-up: no step at count 0, then lr/2
        updates, state = update(grads, state, params)
    eta = neuron.learning_rate / 2
    # One norm per output unit: a Dense kernel's last axis, an embedding's rows (token vectors).
    for w, g, update, unit_axis in [
        (
            params["block_0"]["mlp_in"]["kernel"],
            grads["block_0"]["mlp_in"]["kernel"],
            updates["block_0"]["mlp_in"]["kernel"],
            1,
        ),
        (
            params["token_embedding"]["embedding"],
            grads["token_embedding"]["embedding"],
            updates["token_embedding"]["embedding"],
            0,
        ),
    ]:
        expected = reference_step(w, g, eta, layer_axes=(unit_axis,))
        # float32 rounding: sums of the n squares in each norm, and a few operations more.
        tolerance = (w.shape[1 - unit_axis] + 8) * np.finfo(np.float32).eps
        assert relative_error(np.asarray(w) + np.asarray(update), expected) < tolerance


@pytest.mark.slow
@_NEEDS_MUON
def test_seeds_intervals_paired_gaps_and_finished_runs_skipped(tmp_path, capsys):
    """--seeds runs every setting per seed; the report pairs seeds; a rerun loads finished runs."""
    args = ["--preset", "quick", "--steps", "4", "--eval-interval", "4", "--no-progress"]
    args += ["--optimizers", "adamw", "muon", "--seeds", "0", "1", "--out", str(tmp_path)]
    args += ["--max-eval-batches", "1", "--max-train-eval-batches", "1"]
    summary = transformer_cli.main(args)
    names = sorted(r["name"] for r in summary["runs"])
    assert names == sorted(
        f"{s}_seed{i}" for s in ("adamw_lr0.001", "muon_lr0.02_alr0.003") for i in (0, 1)
    )
    # Each seed has its own initial params: the step-0 losses differ across seeds.
    adamw = {r["seed"]: r for r in summary["runs"] if r["optimizer"] == "adamw"}
    assert len({r["history"]["validation_loss"][0] for r in adamw.values()}) == 2
    muon = {r["seed"]: r for r in summary["runs"] if r["optimizer"] == "muon"}
    entry = next(e for e in summary["across_seeds"] if e["optimizer"] == "muon")
    differences = [
        muon[s]["final_validation_loss"] - adamw[s]["final_validation_loss"] for s in (0, 1)
    ]
    assert entry["minus_adamw"]["values"] == pytest.approx(differences)
    assert entry["minus_adamw"]["mean"] == pytest.approx(np.mean(differences))
    half = 12.706205 * np.std(differences, ddof=1) / np.sqrt(2)  # t(0.975, 1)
    assert entry["minus_adamw"]["half_width"] == pytest.approx(half, rel=1e-5)
    markdown = (tmp_path / "transformer.md").read_text()
    assert "over seeds" in markdown and "seeds 0, 1;" in markdown
    assert f"{entry['minus_adamw']['mean']:+.4f}" in markdown
    assert markdown == report.markdown(json.loads((tmp_path / "transformer.json").read_text()))
    # Every finished run is on disk; a rerun trains nothing and reports the same numbers.
    assert len(list((tmp_path / "runs").glob("*.json"))) == 4
    capsys.readouterr()
    again = transformer_cli.main(args + ["--runs", "muon_lr0.02_alr0.003", "adamw_lr0.001_seed1"])
    assert capsys.readouterr().out.count("finished before") == 3
    before = {r["name"]: r["final_validation_loss"] for r in summary["runs"]}
    assert {r["name"]: r["final_validation_loss"] for r in again["runs"]} == {
        name: before[name]
        for name in (
            "adamw_lr0.001_seed1",
            "muon_lr0.02_alr0.003_seed0",
            "muon_lr0.02_alr0.003_seed1",
        )
    }
    # Another protocol (more steps) does not count as finished: it would train again.
    config = dataclasses.replace(
        configs.PRESETS["quick"], steps=4, eval_interval=4, max_eval_batches=1,
        max_train_eval_batches=1,
    )  # fmt: skip
    path = tmp_path / "runs" / "adamw_lr0.001_seed0.json"
    assert report.load_finished(path, config.protocol()) is not None
    assert report.load_finished(path, dataclasses.replace(config, steps=6).protocol()) is None


def test_recipe_preset_holds_the_tuned_settings_and_three_seeds():
    preset = configs.PRESETS["recipe"]
    runs = configs.grid(preset, preset.optimizers)
    settings = {r.setting for r in runs}
    assert "adamw_lr0.003_wd0.3" in settings
    assert "fromage_adamw_lr0.02_alr0.01_pNone_wd0.3" in settings
    assert preset.init == "lecun" and preset.seeds == (0, 1, 2)
    assert {r.optimizer for r in runs} == {"adamw", "fromage_adamw", "fromage", "muon"}
    # Validation on ≥ 200k bytes where the split holds that many.
    context = gpt.gpt_config(preset.model).context_length
    assert preset.max_eval_batches * preset.eval_batch_size * context >= 200_000


@_NEEDS_MUON
def test_muon_orthogonalises_kernels_and_leaves_the_rest_to_adamw():
    model = gpt.gpt_config("tiny", init="lecun")
    params = gpt.init_gpt_params(model, jax.random.key(0))
    grads = jax.tree.map(lambda x: jax.random.normal(jax.random.key(x.size), x.shape), params)
    run = configs.RunSpec("muon", 0.02, schedule="constant", adamw_learning_rate=1e-3)
    updates, _ = configs.make_optimizer(run, steps=10, warmup_steps=0).update(
        grads, configs.make_optimizer(run, steps=10, warmup_steps=0).init(params), params
    )
    kernel = updates["block_0"]["mlp_in"]["kernel"]
    singular = np.linalg.svd(np.asarray(kernel), compute_uv=False)
    # Newton–Schulz maps every singular value of the momentum into about [0.7, 1.2].
    assert singular.max() / singular.min() < 2
    adam = optax.adam(1e-3, b2=0.99, eps=1e-8, nesterov=True)  # muon's AdamW is Nesterov's
    expected, _ = adam.update(grads, adam.init(params), params)
    for path in (("token_embedding", "embedding"), ("block_0", "mlp_in", "bias")):
        got, want = updates, expected
        for key in path:
            got, want = got[key], want[key]
        np.testing.assert_allclose(got, want, rtol=1e-6)
    with pytest.raises(ValueError, match="Muon needs matrices"):
        from benchmarks import optimizers

        optimizers.create(
            "muon",
            0.02,
            adam_learning_rate=1e-3,
            muon_mask=lambda p: jax.tree.map(lambda _: True, p),
        ).init({"w": np.ones((2, 2, 2, 2))})
