"""Tests of benchmarks/gan/ and benchmarks/models/gan.py: the quick preset end to end, the
gpu preset's MNIST path, the optimisers of the protocol, the train step and the bookkeeping."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from benchmarks import data, optimizers
from benchmarks.gan import __main__ as gan_cli
from benchmarks.gan import configs, report
from benchmarks.gan import step as gan_step
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
    assert comparison["fromage_within_one_std_or_better"] == (
        comparison["fromage_minus_adam"] <= comparison["adam_std"]
    )
    for name in ("gan.png", "gan_accuracy.png", "samples_fromage.png", "samples_adam.png"):
        assert (out / name).stat().st_size > 1000
    assert len(list(out.glob("classifier_digits_*.msgpack"))) == 1
    assert "Fréchet distance" in (out / "gan.md").read_text()
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
    assert config.steps == 30_000 and config.seeds == (0, 1, 2)
    assert tuple(config.optimizers) == ("fromage", "adam", "sgd", "optax_fromage")
    out = tmp_path / "out"
    gan_cli.main(
        [
            "--preset", "gpu", "--data-dir", str(tmp_path), "--out", str(out),
            "--optimizers", "sgd", "--seeds", "0", "--lr-factors", "1", "--steps", "2",
            "--eval-every", "1", "--batch-size", "8", "--classifier-epochs", "1",
            "--eval-samples-per-class", "2",
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
    assert cpu.dataset == "digits" and cpu.batch_size == 256 and cpu.seeds == (0, 1, 2)
    assert cpu.lr_factors == (1 / 3, 1.0, 3.0, 10.0) and cpu.lr_decay_at == 0.9
    assert configs.learning_rate_decay_step(cpu) == 14_500  # 0.9 x 16,000 rounded to 500s
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
    # Fromage 4 ± 1.41 vs Adam 3 ± 1.41: 1 above Adam's mean, within one std.
    assert comparison["fromage_minus_adam"] == pytest.approx(1.0)
    assert comparison["fromage_within_one_std_or_better"] is True
    runs[3]["frechet_distance"] = 6.0
    comparison = report.fromage_versus_adam(report.summarize(runs, ["fromage", "adam"]))
    assert comparison["fromage_within_one_std_or_better"] is False
    assert report.fromage_versus_adam(summaries[1:]) is None
