"""Tests of the resumable depth sweep (presets long and paper): pieces, Orbax resume (bitwise on
CPU), the staircase schedule, the authors' metric at milestones and the partial report."""

import dataclasses
import json

import numpy as np
import pytest

from benchmarks.depth import __main__ as depth_cli
from benchmarks.depth import configs, milestones, pieces, pieces_report, train

# The paper preset (resumable, no width study) on digits: 1,438 training images, 14 steps per
# epoch at batch 100; the metric window is one epoch.
TINY = [
    "--preset", "paper", "--dataset", "digits", "--width", "8", "--optimizers", "fromage",
    "--optimizer-depths", "fromage=2", "--epochs", "5", "--batch-size", "100",
    "--checkpoint-every-epochs", "2", "--milestone-steps", "28,70", "--window-steps", "14",
]  # fmt: skip


def test_long_preset_follows_the_issue():
    config = depth_cli.parse_args(["--preset", "long"])
    assert config.dataset == "mnist_subset" and config.width == 64 and config.init == "torch"
    # 4,000 train images / 250 = 16 steps per epoch: 1,500 epochs are 24,000 steps.
    assert config.epochs * (4000 // config.batch_size) == 24000
    assert config.lr_decay == 0.95 and config.lr_decay_every_steps == 240
    assert config.depths_of("sgd") == (8, 10, 12, 16)
    assert config.depths_of("adam") == (24, 28, 32, 40)
    assert config.depths_of("fromage") == (24, 32, 40, 48, 64)
    names = [p.name for p in pieces.all_pieces(config)]
    assert names[:3] == ["fromage_d24_w64", "adam_d24_w64", "adam_d32_w64"]
    # Each optimiser's depths, the width study, and 13 of them again with seeds 1 and 2.
    assert len(names) == 4 + 4 + 5 + 6 + 13 and len(set(names)) == len(names)
    again = [p for p in pieces.all_pieces(config) if p.seeds == (1, 2)]
    assert {p.base_name for p in again} == set(configs.LONG_SEED_STUDY_PIECES)
    assert all(len(p.learning_rates) == (3 if p.width == 64 else 1) for p in again)
    study = [p for p in pieces.all_pieces(config) if p.width == 128 and p.seeds == (0,)]
    assert {p.depth for p in study} == {16, 24, 32}
    assert {(p.optimizer, p.learning_rates, p.seeds) for p in study} == {
        ("fromage", (0.01,), (0,)),
        ("adam", (1e-4,), (0,)),
    }
    assert set(config.piece_order) == set(names) - {"sgd_d8_w64", "sgd_d16_w64"}
    assert pieces.Piece("adam", 24, 64, (1e-3,)).name == "adam_d24_w64"
    assert pieces.Piece("adam", 24, 64, (1e-3,), (1, 2)).name == "adam_d24_w64_s1-2"
    # Pieces of the config's seeds keep their names and protocol (finished ones still count).
    assert pieces.protocol(config, pieces.all_pieces(config)[0])["seeds"] == [0]


def test_paper_preset_has_the_authors_extra_depths():
    config = depth_cli.parse_args(["--preset", "paper", "--width-study", "256"])
    assert config.pieces and config.width == 784 and config.width_study == (256,)
    assert {11, 12, 13, 14} <= set(config.depths_of("sgd"))
    assert {21, 22, 23, 24} <= set(config.depths_of("adam"))
    assert {27, 32, 37, 42} <= set(config.depths_of("fromage"))
    assert config.depths_of("optax_fromage") == configs.PAPER_DEPTHS
    flags = ["--optimizer-depths", "sgd=3/4", "--width-study-learning-rates", "adam=0.5"]
    config = depth_cli.parse_args(flags)
    assert config.depths_of("sgd") == (3, 4) and config.width_study_learning_rates == (
        ("adam", 0.5),
    )
    with pytest.raises(SystemExit):
        depth_cli.parse_args(["--optimizer-depths", "rmsprop=3"])


def test_staircase_decay_every_240_steps():
    config = depth_cli.parse_args(["--preset", "long"])
    lrs = np.asarray([0.1], np.float32)
    assert train.learning_rates_at(config, lrs, 14, 16)[0] == np.float32(0.1)  # step 224
    assert train.learning_rates_at(config, lrs, 15, 16)[0] == np.float32(0.1) * np.float32(0.95)
    assert train.learning_rates_at(config, lrs, 1499, 16)[0] == pytest.approx(
        0.1 * 0.95**99, rel=1e-5
    )
    per_epoch = dataclasses.replace(config, lr_decay_every_steps=None)
    assert train.learning_rates_at(per_epoch, lrs, 2, 16)[0] == pytest.approx(0.1 * 0.95**2)


def test_interrupted_piece_resumes_bitwise(tmp_path):
    """Stopped after 3 epochs (checkpoints every 2) and rerun, a piece gives the numbers of a
    straight run; a further rerun trains nothing."""
    depth_cli.main([*TINY, "--out", str(tmp_path / "straight")])
    stopped = [*TINY, "--out", str(tmp_path / "resumed")]
    summary = depth_cli.main([*stopped, "--max-epochs-this-run", "3"])
    assert summary["partial"] and summary["missing_pieces"] == ["fromage_d2_w8"]
    assert (tmp_path / "resumed" / "checkpoints" / "fromage_d2_w8" / "3").is_dir()
    depth_cli.main(stopped)
    straight, resumed = (
        json.loads((tmp_path / name / "pieces" / "fromage_d2_w8.json").read_text())
        for name in ("straight", "resumed")
    )
    assert not (tmp_path / "resumed" / "checkpoints" / "fromage_d2_w8").exists()
    assert straight["resumed_at_epochs"] == [] and resumed["resumed_at_epochs"] == [3]
    assert straight["runs"] == resumed["runs"] and straight["best_at"] == resumed["best_at"]
    assert len(straight["runs"]) == 3 and len(straight["runs"][0]["accuracy_per_window"]) == 5
    assert set(straight["best_at"]) == {"28", "70"}
    assert straight["best_at"]["70"]["train_accuracy"] > 0.3
    summary = depth_cli.main(stopped)
    assert not summary["partial"] and summary["finished_pieces"] == ["fromage_d2_w8"]
    for name in ("deepest.png", "accuracy_vs_depth.png", "depth.md"):
        assert (tmp_path / "resumed" / name).stat().st_size > 100
    assert depth_cli.main(["--report-only", "--out", str(tmp_path / "resumed")])["rows"]


def test_metric_averages_the_window_ending_at_each_milestone():
    config = dataclasses.replace(
        configs.PRESETS["long"], milestone_steps=(32, 64, 96), window_steps=32, epochs=5
    )
    accuracy = [0.1, 0.2, 0.3, 0.4, 0.5]  # per epoch of 16 steps
    assert milestones.epochs_per_window(config, 16) == 2
    at = milestones.metric_at(config, accuracy, 16)
    assert at == {"32": pytest.approx(0.15), "64": pytest.approx(0.35), "96": None}
    assert milestones.window_means(accuracy, 2) == pytest.approx([0.15, 0.35])
    runs = [
        {"learning_rate": 0.1, "accuracy_at": {"32": 0.5, "64": 0.95}},
        {"learning_rate": 0.01, "accuracy_at": {"32": 0.6, "64": 0.90}},
    ]
    best = milestones.best_at(runs)
    assert best["32"] == {"learning_rate": 0.01, "train_accuracy": 0.6}
    assert best["64"]["learning_rate"] == 0.1


def _fake_piece(config, optimizer, depth, width, accuracies, seeds=(0,)):
    """A finished piece whose first lr reaches `accuracies` (per milestone; one list per seed,
    or one for every seed) and whose other lrs stay at chance."""
    lrs = configs.PAPER_LEARNING_RATES[optimizer]
    piece = pieces.Piece(optimizer, depth, width, lrs, tuple(seeds), tuple(config.seeds))
    per_seed = accuracies if isinstance(accuracies[0], list) else [accuracies] * len(seeds)
    runs = [
        {
            "learning_rate": lr,
            "seed": seed,
            "accuracy_at": {
                str(s): (a if lr == lrs[0] else 0.1)
                for s, a in zip(config.milestone_steps, values, strict=True)
            },
        }
        for lr in lrs
        for seed, values in zip(seeds, per_seed, strict=True)
    ]
    result = {**dataclasses.asdict(piece), "piece": piece.name, "runs": runs}
    result |= {"protocol": pieces.protocol(config, piece), "wall_seconds": 1.0}
    result["best_at"] = milestones.best_at(runs)
    path = pieces.piece_path(config, piece)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))


def test_partial_report_from_finished_pieces(tmp_path):
    config = dataclasses.replace(configs.PRESETS["long"], out=str(tmp_path))
    _fake_piece(config, "adam", 24, 64, [0.95, 0.95, 0.95, 0.95, 0.95])
    _fake_piece(config, "adam", 32, 64, [0.11, 0.11, 0.11, 0.11, 0.11])
    _fake_piece(config, "fromage", 24, 64, [0.3, 0.5, 0.8, 0.95, 0.99])
    _fake_piece(config, "fromage", 40, 64, [0.3, 0.5, 0.8, 0.92, 0.95])
    summary = pieces_report.write_pieces_outputs(config)
    assert summary["partial"] and len(summary["missing_pieces"]) == 32 - 4
    best = pieces_report.best_table(config, pieces_report.collect(config)[0])
    # Fromage 32 is not finished: the contiguous deepest stops at 24, 40 counts "alone".
    assert pieces_report.deepest(best, config, "fromage", 64, "24000") == (24, 40)
    assert pieces_report.deepest(best, config, "fromage", 64, "960") == (None, None)
    assert pieces_report.deepest(best, config, "adam", 64, "960") == (24, 24)
    rows = {(r["optimizer"], r["width"], r["depth"]): r for r in summary["rows"]}
    assert rows[("fromage", 64, "deepest ≥ 90 %")]["24,000"] == "24 (40 alone)"
    assert rows[("fromage", 64, "deepest ≥ 90 %")]["960"] == "< 24"
    assert rows[("fromage", "784 (authors)", "deepest ≥ 90 %")]["12,000"] == 27
    assert rows[("adam", 64, 24)]["960"] == "0.950 (lr 0.01)"
    assert "PARTIAL: 4 of 32" in (tmp_path / "depth.md").read_text()
    saved = json.loads((tmp_path / "depth.json").read_text())
    assert saved["partial"] is True and "fromage_d24_w64" in saved["finished_pieces"]
    assert (tmp_path / "deepest.png").stat().st_size > 1000
    # A piece saved under another protocol (here: length) does not count.
    assert pieces_report.collect(dataclasses.replace(config, epochs=10))[0] == []


def test_seed_study_is_reported_apart_from_the_first_seed(tmp_path):
    """The main table keeps seed 0 (the authors ran one seed); the seed rows count, per
    milestone, the seeds that reach 90 % at their best lr."""
    config = dataclasses.replace(configs.PRESETS["long"], out=str(tmp_path))
    _fake_piece(config, "adam", 24, 64, [0.1, 0.1, 0.1, 0.1, 0.1])
    chance, learns = [0.1, 0.1, 0.1, 0.1, 0.1], [0.2, 0.5, 0.8, 0.95, 0.99]
    _fake_piece(config, "adam", 24, 64, [learns, learns], seeds=(1, 2))
    _fake_piece(config, "fromage", 24, 64, learns)
    _fake_piece(config, "fromage", 24, 64, [learns, chance], seeds=(1, 2))
    summary = pieces_report.write_pieces_outputs(config)
    assert "adam_d24_w64_s1-2" in summary["finished_pieces"]
    rows = {(r["optimizer"], r["width"], r["depth"]): r for r in summary["rows"]}
    assert rows[("adam", 64, 24)]["24,000"] == "0.100 (lr 0.01)"
    adam, fromage = summary["seed_rows"]
    assert adam["depth"] == 24 and adam["24,000"] == "2/3: 0.10 0.99 0.99"
    assert fromage["24,000"] == "2/3: 0.99 0.99 0.10"
    assert fromage["4,800"] == "0/3: 0.80 0.80 0.10"
    # The first seed alone says Adam stays below 24 layers; the median seed trains 24.
    assert rows[("adam", 64, "deepest ≥ 90 %")]["24,000"] == "< 24"
    assert rows[("adam", 64, "deepest ≥ 90 %, median seed")]["24,000"] == "24"
    assert rows[("adam", 64, "deepest ≥ 90 %, median seed")]["4,800"] == "< 24"
    # Widths of the study list only the optimisers it trains.
    assert {o for o, w, _ in rows if w == 128} == {"adam", "fromage"}
    assert "seeds ≥ 90 %" in (tmp_path / "depth.md").read_text()


def test_signal_probe_measures_spread_and_dead_units():
    """On hand-made layers: a layer whose bias swamps its input has no signal left, a layer
    with a negative bias and zero kernel is all dead."""
    import jax.numpy as jnp

    from benchmarks.depth import signal

    images = jnp.asarray([[1.0, -1.0], [2.0, 0.5], [-1.0, 3.0]])
    identity = {"kernel": jnp.eye(2), "bias": jnp.full((2,), 10.0)}
    dead = {"kernel": jnp.zeros((2, 2)), "bias": jnp.full((2,), -1.0)}
    spread, dead_fraction = signal.layer_signal({"hidden_0": identity, "hidden_1": dead}, images, 2)
    h = np.maximum(np.asarray(images) + 10.0, 0)
    expected = h.std(axis=0).mean() / np.sqrt((h**2).mean())
    np.testing.assert_allclose(spread[0], expected, rtol=1e-6)
    assert float(spread[1]) == 0.0 and list(np.asarray(dead_fraction)) == [0.0, 1.0]


def test_signal_quick_preset_writes_outputs(tmp_path):
    from benchmarks.depth import signal

    results = signal.main(["--preset", "quick", "--optimizers", "fromage", "--out", str(tmp_path)])
    (run, *_) = results["runs"]
    assert set(run["signal"]) == {"0", "2"} and len(run["signal"]["0"]) == 4
    assert len(results["rows"]) == 3 and np.isfinite(run["accuracy_per_epoch"]).all()
    for name in ("signal.json", "signal.md", "signal.png"):
        assert (tmp_path / name).stat().st_size > 100
