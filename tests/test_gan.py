"""Tests of benchmarks/gan/ and benchmarks/models/gan.py: the quick preset end to end, the
gpu preset's MNIST path, the optimisers of the protocol, the train step, the held-out score,
the intervals and verdicts, and resuming an interrupted piece."""

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from benchmarks import data, docs_tables, frechet, optimizers
from benchmarks.gan import __main__ as gan_cli
from benchmarks.gan import configs, report
from benchmarks.gan import runs as gan_runs
from benchmarks.gan import step as gan_step
from benchmarks.gan import train as gan_train
from benchmarks.models import gan as gan_models


def test_quick_preset_writes_runs_summary_and_plots(tmp_path, capsys):
    out = tmp_path / "quick"
    result = gan_cli.main(
        ["--preset", "quick", "--optimizers", "fromage,adam", "--lr-decay-at", "0.5"]
        + ["--out", str(out)]
    )
    payload = json.loads((out / "gan.json").read_text())
    assert payload["finished"] is True and payload["config"]["dataset"] == "digits"
    assert payload["lr_decay_step"] == 10
    assert payload["classifier"]["test_accuracy"] > 0.8
    runs = payload["runs"]
    # 2 optimisers x (2 grid learning rates + 2 seeds at the best one).
    assert len(runs) == 8
    for name, grid_lrs in (("fromage", [0.01, 0.03]), ("adam", [1e-4, 3e-4])):
        grid = [r for r in runs if r["optimizer"] == name and r["phase"] == "grid"]
        seeded = [r for r in runs if r["optimizer"] == name and r["phase"] == "seeds"]
        assert sorted(r["learning_rate"] for r in grid) == pytest.approx(grid_lrs)
        assert [r["seed"] for r in grid] == [0, 0] and [r["seed"] for r in seeded] == [0, 1]
        best = min(grid, key=lambda r: r["frechet_distance"])
        assert {r["learning_rate"] for r in seeded} == {best["learning_rate"]}
        # The seeds phase retrains seed 0 at the best rate: the grid's run, reproduced.
        np.testing.assert_allclose(
            seeded[0]["frechet_distance_per_eval"], best["frechet_distance_per_eval"], rtol=1e-3
        )
        summary = next(s for s in payload["summary"] if s["optimizer"] == name)
        distances = [r["frechet_distance"] for r in seeded]
        assert summary["frechet_distance_mean"] == pytest.approx(np.mean(distances))
        assert summary["frechet_distance_std"] == pytest.approx(np.std(distances, ddof=1))
        assert len(summary["accuracy_per_class_mean"]) == 10
    for run in runs:
        assert run["steps"] == [0, 10, 20]
        assert len(run["frechet_distance_per_eval"]) == 3
        assert all(np.isfinite(d) and d >= 0 for d in run["frechet_distance_per_eval"])
        assert 0.0 <= run["generated_accuracy"] <= 1.0 and len(run["accuracy_per_class"]) == 10
        assert len(run["discriminator_loss_per_chunk"]) == 2
        # lr/10 from step 10 (half of 20) on.
        np.testing.assert_allclose(
            run["learning_rate_per_chunk"], [run["learning_rate"], run["learning_rate"] / 10]
        )
        assert run["frechet_distance"] == run["frechet_distance_per_eval"][-1]
    # 20 steps already move the generator away from its initial (far worse) samples.
    for run in runs:
        if run["optimizer"] == "fromage":
            assert run["frechet_distance"] < run["frechet_distance_per_eval"][0]
    comparison = payload["fromage_versus_adam"]
    difference = comparison["difference"]
    fromage, adam = (
        {r["seed"]: r["frechet_distance"] for r in runs if r["optimizer"] == name}
        for name in ("fromage", "adam")
    )
    assert difference["values"] == pytest.approx([fromage[s] - adam[s] for s in (0, 1)])
    assert comparison["competitive"] == (difference["low"] <= 0)
    assert comparison["sentence"] in (out / "gan.md").read_text()
    # Scored against held-out images; the floor is training images against the same ones.
    floor = payload["held_out_floor"]
    assert floor["train_images"] == 160 and floor["held_out_images"] == 359
    assert 0 < floor["frechet_distance"] < min(r["frechet_distance"] for r in runs)
    assert all(len(r["train_frechet_distance_per_eval"]) == 3 for r in runs)
    assert {p.name for p in (out / "runs").glob("*.json")} == {
        f"{r['optimizer']}_lr{r['learning_rate']:g}_s{r['seed']}.json" for r in runs
    }
    assert not (out / "checkpoints").exists()
    assert docs_tables._gan_row(tmp_path, "quick/gan.json")["measured"].startswith("Fromage − Adam")
    for name in ("gan.png", "gan_accuracy.png", "samples_fromage.png", "samples_adam.png"):
        assert (out / name).stat().st_size > 1000
    assert len(list(out.glob("classifier_digits_*.msgpack"))) == 1
    assert "Fréchet distance" in (out / "gan.md").read_text()
    assert "authors' FID" in (out / "gan.md").read_text()
    assert "fromage_optax.fromage" in capsys.readouterr().out
    assert [row["optimizer"] for row in result["rows"]] == [
        "fromage_optax.fromage",
        "Adam (0, 0.999)",
    ]


def _write_fake_mnist(folder, *, num_train, num_test):
    rng = np.random.default_rng(0)
    data.write_mnist_idx(
        folder,
        {
            "train_images": rng.integers(0, 256, (num_train, 28, 28), dtype=np.uint8),
            "train_labels": np.arange(num_train, dtype=np.uint8) % 10,
            "test_images": rng.integers(0, 256, (num_test, 28, 28), dtype=np.uint8),
            "test_labels": np.arange(num_test, dtype=np.uint8) % 10,
        },
    )


def test_gpu_preset_trains_on_mnist_idx_files(tmp_path):
    _write_fake_mnist(tmp_path, num_train=40, num_test=20)
    config = gan_cli.parse_args(["--preset", "gpu", "--data-dir", str(tmp_path)])
    assert config.dataset == "mnist" and config.batch_size == 256
    assert config.steps == 30_000 and config.seeds == (1, 2, 3, 4, 5) and config.vmap_models
    assert tuple(config.optimizers) == ("fromage", "adam", "sgd", "optax_fromage")
    out = tmp_path / "out"
    gan_cli.main(
        [
            "--preset", "gpu", "--data-dir", str(tmp_path), "--out", str(out),
            "--optimizers", "sgd", "--seeds", "0", "--lr-factors", "1", "--steps", "2",
            "--eval-every", "1", "--batch-size", "8", "--classifier-epochs", "1",
            "--eval-samples-per-class", "2",
            # The MLPs: the 28x28 convolutional path is the cpu preset's, which test_docs runs
            # at smoke size; this test is about the IDX files and the preset's settings.
            "--model", "mlp", "--generator-hidden", "16", "--discriminator-hidden", "16",
        ]
    )  # fmt: skip
    payload = json.loads((out / "gan.json").read_text())
    assert payload["config"]["dataset"] == "mnist" and payload["config"]["latent_size"] == 64
    assert [(r["phase"], r["learning_rate"]) for r in payload["runs"]] == [
        ("grid", 0.01),
        ("seeds", 0.01),
    ]
    assert payload["runs"][0]["steps"] == [0, 1, 2]
    assert (out / "samples_sgd.png").stat().st_size > 1000


def test_gpu_preset_without_files_names_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        gan_cli.main(["--preset", "gpu", "--data-dir", str(tmp_path), "--out", str(tmp_path)])


def test_optimizers_and_presets_follow_the_protocol():
    params = {"w": jnp.arange(6.0).reshape(2, 3) - 2.0, "b": jnp.ones(3)}
    grads = jax.tree.map(lambda p: jnp.cos(p) + 0.5, params)
    expected = {
        "adam": optax.adam(1e-4, b1=0.0, b2=0.999),
        "sgd": optax.sgd(0.01),
        "optax_fromage": optax.fromage(0.01),
    }
    for name, reference in expected.items():
        lr = configs.PAPER_BEST_LEARNING_RATES[name]
        for optimizer in (configs.base_optimizer(name, lr), configs.make_optimizer(name, lr)):
            updates, _ = optimizer.update(grads, optimizer.init(params), params)
            reference_updates, _ = reference.update(grads, reference.init(params), params)
            # make_optimizer holds the learning rate in float32 (optax.fromage's weight
            # decay 1/√(1 + lr²) − 1 then differs in its 4th digit).
            jax.tree.map(
                lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4), updates, reference_updates
            )
    assert configs.learning_rate_grid("adam", (1 / 3, 1, 3)) == [3.33e-5, 1e-4, 3e-4]
    assert configs.learning_rate_grid("fromage", (1 / 3, 1, 3)) == [0.00333, 0.01, 0.03]
    cpu = gan_cli.parse_args(["--preset", "cpu"])
    assert cpu.dataset == "mnist_subset" and cpu.model == "conv" and cpu.seeds == (1, 2, 3, 4, 5)
    # The authors' four rates for every optimiser; lr/10 for the last sixth (epoch 100 of 120).
    assert cpu.learning_rates_of("adam") == (1e-4, 1e-3, 1e-2, 0.1) and not cpu.lr_factors
    assert cpu.lr_decay_at == pytest.approx(5 / 6) and cpu.grid_seed == 0
    assert configs.learning_rate_decay_step(cpu) == 1250  # 5/6 x 1,500, a multiple of 250
    assert set(cpu.variants) == {"fromage_p_bound", "fromage_chain"} and not cpu.vmap_models
    names = [p.name for p in gan_runs.plan(cpu)]
    assert names == ["fromage_grid", "adam_grid", "sgd_grid", "optax_fromage_grid"]
    with pytest.raises(SystemExit):
        gan_cli.parse_args(["--optimizers", "rmsprop"])
    with pytest.raises(SystemExit):
        gan_cli.parse_args(["--steps", "15", "--eval-every", "10"])


def _tiny_gan():
    generator = gan_models.Generator((16,), num_pixels=12, num_classes=3, embedding_size=4)
    discriminator = gan_models.Discriminator((8,), num_classes=3)
    rng = np.random.default_rng(0)
    batch = {
        "image": jnp.asarray(rng.uniform(-1, 1, (6, 12)), jnp.float32),
        "label": jnp.arange(6, dtype=jnp.int32) % 3,
    }
    return generator, discriminator, batch


def test_networks_condition_on_labels():
    generator, discriminator, batch = _tiny_gan()
    latents = jnp.ones((3, 5))
    params = generator.init(jax.random.key(0), latents, jnp.zeros(3, jnp.int32))["params"]
    images = generator.apply({"params": params}, latents, jnp.arange(3))
    assert images.shape == (3, 12) and float(jnp.max(jnp.abs(images))) <= 1.0
    # Same latent, different labels: different images.
    assert float(jnp.max(jnp.abs(images[0] - images[1]))) > 1e-4
    d_params = discriminator.init(jax.random.key(1), batch["image"], batch["label"])["params"]
    scores = discriminator.apply({"params": d_params}, batch["image"], batch["label"])
    other = discriminator.apply({"params": d_params}, batch["image"], (batch["label"] + 1) % 3)
    assert scores.shape == (6,) and float(jnp.max(jnp.abs(scores - other))) > 1e-4
    # The label enters only through the projection: zero embeddings remove it.
    d_params = {
        **d_params,
        "Embed_0": {"embedding": jnp.zeros_like(d_params["Embed_0"]["embedding"])},
    }
    scores = discriminator.apply({"params": d_params}, batch["image"], batch["label"])
    other = discriminator.apply({"params": d_params}, batch["image"], (batch["label"] + 1) % 3)
    np.testing.assert_allclose(scores, other)


def test_hinge_losses():
    real, fake = jnp.array([2.0, 0.5, -1.0]), jnp.array([-2.0, 0.0, 1.0])
    # relu(1 - real) = (0, 0.5, 2); relu(1 + fake) = (0, 1, 2).
    assert float(gan_step.discriminator_hinge_loss(real, fake)) == pytest.approx(2.5 / 3 + 1.0)
    assert float(gan_step.generator_hinge_loss(fake)) == pytest.approx(1.0 / 3)


@pytest.mark.parametrize("name", ["fromage", "adam", "sgd"])
def test_train_step_is_pure_and_uses_the_learning_rate_in_its_state(name):
    generator, discriminator, batch = _tiny_gan()
    lr = configs.PAPER_BEST_LEARNING_RATES[name]
    optimizer = configs.make_optimizer(name, lr)
    moving = gan_step.init_gan_state(
        generator, discriminator, optimizer, jax.random.key(0), latent_size=5
    )
    state = moving._replace(
        generator_opt_state=optimizers.with_learning_rate(moving.generator_opt_state, 0.0),
        discriminator_opt_state=optimizers.with_learning_rate(moving.discriminator_opt_state, 0.0),
    )
    step = jax.jit(gan_step.make_train_step(generator, discriminator, optimizer, latent_size=5))
    frozen, metrics = step(state, batch)
    # Learning rate 0: nothing moves but the key and the step count.
    jax.tree.map(np.testing.assert_array_equal, frozen.generator_params, state.generator_params)
    assert int(frozen.step) == 1 and set(metrics) == {
        "discriminator_loss",
        "generator_loss",
        "real_score",
        "fake_score",
    }
    first, first_metrics = step(moving, batch)
    again, _ = step(moving, batch)
    key_data = lambda s: s._replace(key=jax.random.key_data(s.key))
    jax.tree.map(np.testing.assert_array_equal, key_data(first), key_data(again))
    for before, after in zip(
        jax.tree.leaves(state.generator_params), jax.tree.leaves(first.generator_params)
    ):
        assert float(jnp.max(jnp.abs(before - after))) > 0
    # The metrics are the losses before the step.
    np.testing.assert_allclose(first_metrics["discriminator_loss"], metrics["discriminator_loss"])


def _fake_run(optimizer, phase, lr, seed, distance, accuracy=0.5):
    return {
        "optimizer": optimizer,
        "phase": phase,
        "learning_rate": lr,
        "seed": seed,
        "frechet_distance": distance,
        "generated_accuracy": accuracy,
        "accuracy_per_class": [accuracy] * 10,
    }


def test_best_learning_rate_summary_and_comparison():
    runs = [
        _fake_run("fromage", "grid", 0.1, 0, float("nan")),
        _fake_run("fromage", "grid", 0.01, 0, 3.0),
        _fake_run("fromage", "grid", 0.001, 0, 5.0),
        _fake_run("fromage", "seeds", 0.01, 0, 3.0, 0.9),
        _fake_run("fromage", "seeds", 0.01, 1, 5.0, 0.7),
        _fake_run("adam", "grid", 1e-4, 0, 2.0),
        _fake_run("adam", "seeds", 1e-4, 0, 2.0),
        _fake_run("adam", "seeds", 1e-4, 1, 4.0),
    ]
    assert report.best_learning_rate(runs[:3]) == 0.01
    summaries = report.summarize(runs, ["fromage", "adam", "sgd"])
    assert [s["optimizer"] for s in summaries] == ["fromage", "adam"]
    fromage = summaries[0]
    assert fromage["frechet_distance_mean"] == pytest.approx(4.0)
    assert fromage["frechet_distance_std"] == pytest.approx(np.sqrt(2.0))
    assert fromage["generated_accuracy_mean"] == pytest.approx(0.8)
    assert fromage["grid_frechet_distance"]["0.01"] == 3.0
    comparison = report.fromage_versus_adam(summaries)
    # Fromage 4 ± 1.41 vs Adam 3 ± 1.41, but paired (same seeds) 1 above Adam both times.
    assert comparison["difference"]["mean"] == pytest.approx(1.0)
    assert comparison["verdict"] == "worse" and comparison["competitive"] is False
    runs[3]["frechet_distance"] = 1.0  # differences -1 and 1: the interval contains 0
    comparison = report.fromage_versus_adam(report.summarize(runs, ["fromage", "adam"]))
    assert comparison["verdict"] == "competitive" and comparison["competitive"] is True
    assert report.fromage_versus_adam(summaries[1:]) is None


def test_grid_sits_beside_the_authors_fid_with_each_columns_best_in_bold():
    runs = [
        _fake_run("fromage", "grid", 0.01, 0, 3.0),
        _fake_run("fromage", "grid", 0.1, 0, float("nan")),
        _fake_run("fromage", "seeds", 0.01, 1, 1.0),  # not the grid: left out
        _fake_run("optax_fromage", "grid", 0.01, 0, 4.0),
    ]
    rows = report.grid_beside_paper(runs, ["fromage", "optax_fromage"])
    by_lr = {row["lr"]: row for row in rows}
    assert list(by_lr) == ["0.0001", "0.001", "0.01", "0.1"]  # the authors' rates fill in
    assert by_lr["0.01"]["fromage_optax.fromage, ours"] == "**3**"
    assert by_lr["0.1"]["fromage_optax.fromage, ours"] == "nan"  # a diverged run stays visible
    assert by_lr["0.001"]["fromage_optax.fromage, ours"] == "-"
    assert by_lr["0.01"]["fromage_optax.fromage, authors' FID"] == "**29.9**"
    assert by_lr["0.0001"]["fromage_optax.fromage, authors' FID"] == "77"
    # optax.fromage has no column of the authors' (they did not run it).
    assert set(rows[0]) == {
        "lr",
        "fromage_optax.fromage, ours",
        "fromage_optax.fromage, authors' FID",
        "optax.fromage, ours",
    }


@pytest.mark.parametrize(
    "differences, outcome",
    [
        ([-1.0, -1.2, -0.9, -1.1, -1.0], "better"),
        ([-1.0, 1.0, -0.5, 0.5, 0.2], "competitive"),
        ([1.0, 1.2, 0.9, 1.1, 1.0], "worse"),
        ([1.0], "undecided"),
        ([1.0, math.nan], "undecided"),
    ],
)
def test_the_verdict_is_read_off_the_paired_interval(differences, outcome):
    difference = report._interval(differences)
    verdict, sentence = report.verdict(difference)
    assert verdict == outcome
    assert ("competitive with Adam" in sentence) == (outcome in ("competitive", "worse"))
    assert ("better than Adam" in sentence) == (outcome == "better")


def test_robustness_compares_the_variants_with_fromages_seed_interval():
    def summary(name, values):
        seeds = [1, 2, 3][: len(values)]
        return {"optimizer": name, "seeds": seeds, "frechet_distance": report._interval(values)}

    fromage = summary("fromage", [1.0, 2.0, 3.0])  # mean 2, 95 % interval 2 ± 2.48
    inside = report.robustness(
        [fromage, summary("fromage_chain", [1.5, 2.5, 3.5]), summary("fromage_p_bound", [2, 2, 2])]
    )
    assert inside["inside_seed_interval"] and inside["spread_of_means"] == pytest.approx(0.5)
    assert inside["variants"]["fromage_chain"]["minus_fromage"]["mean"] == pytest.approx(0.5)
    assert "sits inside" in inside["sentence"]
    outside = report.robustness([fromage, summary("fromage_chain", [6.0, 7.0, 5.0])])
    assert not outside["inside_seed_interval"] and "does not sit" in outside["sentence"]
    assert report.robustness([fromage]) is None
    one_seed = report.robustness([summary("fromage", [1.0]), summary("fromage_chain", [1.5])])
    assert one_seed["inside_seed_interval"] is None and "No seed interval" in one_seed["sentence"]


def test_held_out_split_is_disjoint_from_training_and_the_classifier_sees_training_only(
    monkeypatch, tmp_path
):
    images = np.arange(50)[:, None] * np.ones((1, 4))
    train, _, test, _ = data.split_train_test(images, np.arange(50) % 10, 0.2, seed=0)
    assert len(test) == 10 and not set(train[:, 0]) & set(test[:, 0])
    assert set(train[:, 0]) | set(test[:, 0]) == set(range(50))
    subset = data.load_mnist_subset()
    train_rows = {row.tobytes() for row in subset.train_images}
    assert len(subset.test_images) == 1000 and len(subset.train_images) == 4000
    assert not any(row.tobytes() in train_rows for row in subset.test_images)
    # The Scorer trains its classifier on the training split only.
    seen = {}
    real_train = frechet.train_feature_classifier

    def spy(name, train_images, *args, **kwargs):
        seen["train_images"] = train_images
        return real_train(name, train_images, *args, **kwargs)

    monkeypatch.setattr(frechet, "train_feature_classifier", spy)
    config = dataclasses.replace(configs.PRESETS["quick"], out=str(tmp_path), classifier_epochs=1)
    digits = data.load_digits()
    generator, _ = gan_train.make_networks(config, 64, 10)
    scorer = gan_train.Scorer(config, digits, generator)
    train_images, _ = gan_train.unit_range_images(digits)
    np.testing.assert_array_equal(seen["train_images"], train_images)
    indices = gan_train.balanced_subset(digits.train_labels, 16, 10)
    assert len(indices) == 160 and np.bincount(digits.train_labels[indices]).tolist() == [16] * 10
    assert scorer.floor["train_images"] == 160 and scorer.floor["held_out_images"] == 359


def _piece_runner(tmp_path, **changes):
    config = dataclasses.replace(
        configs.PRESETS["quick"], out=str(tmp_path), steps=30, classifier_epochs=1, **changes
    )
    dataset = data.load_digits()
    trainer = gan_train.Trainer(config, dataset)
    scorer = gan_train.Scorer(config, dataset, trainer.generator)
    piece = gan_runs.Piece("fromage", "grid", tuple(gan_runs.grid_runs(config, "fromage")))
    return config, trainer, scorer, piece


def test_interrupted_piece_resumes_equal_to_an_uninterrupted_one(tmp_path):
    """Stopped in its second chunk (checkpointed after the first) and run again, a piece gives
    the numbers of a straight run."""
    config, trainer, scorer, piece = _piece_runner(tmp_path, lr_factors=(1.0,))
    straight = gan_train.train_piece(trainer, scorer, piece)
    gan_runs.remove_checkpoints(config, piece)
    calls = []
    stop_mid_chunk = lambda: calls.append(1) or len(calls) > 15  # noqa: E731
    assert gan_train.train_piece(trainer, scorer, piece, should_stop=stop_mid_chunk) is None
    checkpoints = tmp_path / "checkpoints" / "fromage_grid"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["10"]
    resumed = gan_train.train_piece(trainer, scorer, piece)
    assert [r["resumed_at_steps"] for r in resumed] == [[10]]
    for a, b in zip(straight, resumed, strict=True):
        for key in a:
            if key.endswith(("_per_eval", "_per_chunk")) or key in ("frechet_distance", "steps"):
                assert a[key] == b[key], key
        np.testing.assert_array_equal(a["_sample_grid"], b["_sample_grid"])
    assert straight[0]["steps"] == [0, 10, 20, 30] and straight[0]["resumed_at_steps"] == []


def test_rerun_skips_finished_runs_and_report_only_rebuilds(tmp_path, capsys):
    # The MLPs (fast to compile): the bookkeeping is the same for every model.
    argv = [
        "--preset", "quick", "--model", "mlp", "--generator-hidden", "16",
        "--discriminator-hidden", "16", "--optimizers", "fromage", "--lr-factors", "1",
        "--seeds", "0,1", "--variants", "fromage_chain", "--classifier-epochs", "1",
        "--out", str(tmp_path), "--max-steps-this-run", "10",
    ]  # fmt: skip
    # Each call trains one piece until its first checkpoint; the fourth call finishes the chain.
    for _ in range(3):
        assert not gan_cli.main(argv)["finished"]
    result = gan_cli.main(argv)
    assert result["finished"] and result["robustness"]["variants"].keys() == {"fromage_chain"}
    saved = json.loads((tmp_path / "gan.json").read_text())
    chain = [r for r in saved["runs"] if r["optimizer"] == "fromage_chain"]
    assert [r["seed"] for r in chain] == [0, 1] and all(r["phase"] == "robustness" for r in chain)
    assert all(r["resumed_at_steps"] == [10] for r in saved["runs"])
    assert "fromage_optax building blocks" in (tmp_path / "gan.md").read_text()
    capsys.readouterr()
    again = gan_cli.main(argv)  # nothing left to train
    assert again["finished"] and "fromage_grid" not in capsys.readouterr().err
    rebuilt = gan_cli.main([*argv, "--report-only"])
    assert rebuilt["summary"] == again["summary"]
