"""Tests of benchmarks/word_lm/, its model (benchmarks/models/word_transformer.py) and its
data (benchmarks/word_data.py): the quick preset end to end and resumed, the PyTorch
initialisation, the causal mask, dropout, batchify, the loaders and the lr schedule."""

import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from benchmarks import optimizers, word_data
from benchmarks.models import word_transformer
from benchmarks.word_lm import __main__ as word_lm_cli
from benchmarks.word_lm import configs, train

RUN_FIELDS = {
    "best_validation_perplexity",
    "best_epoch",
    "test_perplexity",
    "train_perplexity_per_epoch",
    "validation_perplexity_per_epoch",
    "learning_rate_per_epoch",
    "train_perplexity_at_decay_epoch",
    "group_seconds",
    "protocol",
}


@pytest.mark.slow
def test_quick_preset_end_to_end_and_rerun_skips_finished_runs(tmp_path, monkeypatch):
    out = tmp_path / "quick"
    summary = word_lm_cli.main(["--preset", "quick", "--out", str(out), "--no-progress"])
    assert (out / "word_lm.png").stat().st_size > 1000
    assert "| optimizer |" in (out / "word_lm.md").read_text()
    saved = json.loads((out / "word_lm.json").read_text())
    assert saved["finished"] and saved["data"]["name"] == "pydoc_data.topics"
    preset = configs.PRESETS["quick"]
    # Every optimiser once at seed 0, then its (only) setting at seed 1.
    names = sorted(path.stem for path in (out / "runs").glob("*.json"))
    assert names == sorted(f"{r.setting}_seed{s}" for r in configs.grid(preset) for s in (0, 1))
    assert {r["optimizer"] for r in saved["runs"]} == set(configs.OPTIMIZER_NAMES)
    vocabulary = saved["data"]["vocabulary_size"]
    for name in names:
        run = json.loads((out / "runs" / f"{name}.json").read_text())
        assert RUN_FIELDS <= set(run)
        lr = run["learning_rate"]
        assert run["learning_rate_per_epoch"] == pytest.approx([lr, lr / 10])
        validation = run["validation_perplexity_per_epoch"]
        assert all(math.isfinite(v) and 1 < v < 2 * vocabulary for v in validation)
        assert run["best_validation_perplexity"] == min(validation)
        assert run["best_epoch"] == 1 + validation.index(min(validation))
        assert math.isfinite(run["test_perplexity"]) and run["group_seconds"] > 0
        assert run["train_perplexity_at_decay_epoch"] == run["train_perplexity_per_epoch"][0]
    assert len(summary["grid_rows"]) == 3 and len(summary["seed_rows"]) == 3
    assert all(row["seeds"] == "0,1" for row in summary["seed_rows"])
    # Paired differences of the best settings over the same seeds, with t intervals.
    runs = {r["name"]: r for r in saved["runs"]}
    best = {runs[name]["optimizer"]: runs[name] for name in saved["best"]}
    pairs = {row["difference"]: row for row in summary["paired_rows"]}
    assert set(pairs) == {"fromage − adam", "fromage − sgd", "adam − sgd"}
    differences = [
        runs[f"{best['fromage']['setting']}_seed{s}"]["test_perplexity"]
        - runs[f"{best['adam']['setting']}_seed{s}"]["test_perplexity"]
        for s in (0, 1)
    ]
    half = 12.706205 * np.std(differences, ddof=1) / np.sqrt(2)  # t(0.975, 1)
    assert pairs["fromage − adam"]["test ppl (best val)"] == (
        f"{np.mean(differences):+.1f} ± {half:.1f}"
    )
    # The vocabulary keeps training words seen twice (the quick preset's min count).
    rates = saved["data"]["unknown_rates"]
    assert (
        0 < rates["train"] < rates["validation"]
        and "`<unk>` share" in (out / "word_lm.md").read_text()
    )

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(train, "train_group", no_training)
    rerun = word_lm_cli.main(["--preset", "quick", "--out", str(out), "--no-progress"])
    assert rerun["grid_rows"] == summary["grid_rows"]


def small_config(**fields):
    defaults = {"vocab_size": 300, "width": 40, "num_heads": 2, "hidden": 24, "num_layers": 2}
    return word_transformer.WordTransformerConfig(**(defaults | fields))


def _assert_uniform(values, bound):
    values = np.asarray(values).ravel()
    assert np.abs(values).max() <= bound
    assert np.abs(values).max() > 0.9 * bound
    # U(−b, b) has standard deviation b/√3.
    assert values.std() == pytest.approx(bound / math.sqrt(3), rel=0.15)


def test_initialisation_matches_pytorch():
    config = small_config()
    params = word_transformer.init_word_transformer_params(config, jax.random.key(0))
    _assert_uniform(params["encoder"]["embedding"], 0.1)
    _assert_uniform(params["decoder"]["kernel"], 0.1)
    np.testing.assert_array_equal(params["decoder"]["bias"], 0.0)
    for layer in ("layers_0", "layers_1"):
        layer_params = params[layer]
        attention = layer_params["self_attn"]
        assert attention["in_proj"]["kernel"].shape == (40, 120)
        # Xavier-uniform over the fused (width, 3·width) matrix.
        _assert_uniform(attention["in_proj"]["kernel"], math.sqrt(6 / (40 + 120)))
        _assert_uniform(attention["out_proj"]["kernel"], 1 / math.sqrt(40))
        np.testing.assert_array_equal(attention["in_proj"]["bias"], 0.0)
        np.testing.assert_array_equal(attention["out_proj"]["bias"], 0.0)
        _assert_uniform(layer_params["linear1"]["kernel"], 1 / math.sqrt(40))
        _assert_uniform(layer_params["linear2"]["kernel"], 1 / math.sqrt(24))
        assert np.abs(layer_params["linear1"]["bias"]).max() <= 1 / math.sqrt(40)
        assert np.abs(layer_params["linear2"]["bias"]).max() <= 1 / math.sqrt(24)
        assert np.abs(layer_params["linear1"]["bias"]).min() > 0
        for norm in ("norm1", "norm2"):
            np.testing.assert_array_equal(layer_params[norm]["scale"], 1.0)
            np.testing.assert_array_equal(layer_params[norm]["bias"], 0.0)


def test_sinusoidal_positions_are_pytorchs_table():
    table = word_transformer.sinusoidal_positions(50, 8)
    np.testing.assert_array_equal(table[0], [0, 1, 0, 1, 0, 1, 0, 1])
    position, pair = 7, 2
    frequency = 10000 ** (-2 * pair / 8)
    np.testing.assert_allclose(table[position, 2 * pair], math.sin(position * frequency), 1e-6)
    np.testing.assert_allclose(table[position, 2 * pair + 1], math.cos(position * frequency), 1e-6)


def test_output_at_t_does_not_depend_on_later_tokens():
    config = small_config()
    model = word_transformer.WordTransformer(config)
    params = word_transformer.init_word_transformer_params(config, jax.random.key(1))
    tokens = jax.random.randint(jax.random.key(2), (2, 12), 0, config.vocab_size)
    changed = tokens.at[:, 6:].set((tokens[:, 6:] + 1) % config.vocab_size)
    apply = jax.jit(model.apply)
    logits = apply({"params": params}, tokens)
    changed_logits = apply({"params": params}, changed)
    np.testing.assert_allclose(logits[:, :6], changed_logits[:, :6], rtol=1e-5, atol=1e-5)
    assert not np.allclose(logits[:, 6:], changed_logits[:, 6:], atol=1e-3)


def test_dropout_only_in_training():
    config = small_config(num_layers=1)
    model = word_transformer.WordTransformer(config)
    params = word_transformer.init_word_transformer_params(config, jax.random.key(0))
    tokens = jnp.arange(20).reshape(2, 10)

    # Jitted: one compilation per mode instead of dispatching every op eagerly.
    @functools.partial(jax.jit, static_argnums=0)
    def apply(train, key):
        return model.apply({"params": params}, tokens, train=train, rngs={"dropout": key})

    evaluation = apply(False, jax.random.key(3))
    np.testing.assert_array_equal(evaluation, apply(False, jax.random.key(4)))
    default = jax.jit(model.apply)({"params": params}, tokens)  # train=False, no rngs
    np.testing.assert_allclose(default, evaluation, rtol=1e-5, atol=1e-6)
    assert not np.allclose(apply(True, jax.random.key(3)), apply(True, jax.random.key(4)))
    assert not np.allclose(apply(True, jax.random.key(3)), evaluation)


def test_batchify_and_bptt_windows():
    source = word_data.batchify(np.arange(103), 4)
    assert source.shape == (25, 4)
    np.testing.assert_array_equal(source[:, 2], np.arange(50, 75))
    windows = word_data.bptt_windows(source, 7)
    # Windows start at rows 0, 7, 14, 21; the last holds the 3 rows 21..23 -> 22..24.
    assert windows.inputs.shape == (4, 4, 7)
    np.testing.assert_array_equal(windows.inputs[1, 2], np.arange(57, 64))
    np.testing.assert_array_equal(windows.targets[1, 2], np.arange(58, 65))
    np.testing.assert_array_equal(windows.targets[3, 0, :3], [22, 23, 24])
    assert windows.weights.sum() == 24 * 4 and windows.weights[3, :, 3:].sum() == 0
    full = word_data.bptt_windows(source, 7, drop_last=True)
    assert full.inputs.shape == (3, 4, 7) and full.weights.all()
    with pytest.raises(ValueError, match="too few"):
        word_data.batchify(np.arange(7), 4)


def test_wikitext_loader_on_written_files(tmp_path):
    contents = {"train": "a b <unk>\n\nb d\n", "valid": "a e\n", "test": "d\n"}
    for split, text in contents.items():
        (tmp_path / f"wiki.{split}.tokens").write_text(text, encoding="utf-8")
    corpus = word_data.load_word_wikitext(tmp_path)
    assert "tokenised" in corpus.name
    assert corpus.vocabulary == ("a", "b", "<unk>", "<eos>", "d")
    assert corpus.train.tolist() == [0, 1, 2, 3, 3, 1, 4, 3]
    assert corpus.validation.tolist() == [0, 2, 3]  # "e" is not a training word
    assert corpus.test.tolist() == [4, 3]
    rates = word_data.unknown_rates(corpus)
    assert rates == {"train": 1 / 8, "validation": 1 / 3, "test": 0.0}
    prefix = word_data.load_word_wikitext(tmp_path, train_words=3)
    assert prefix.vocabulary == ("a", "b", "<unk>", "<eos>")
    assert prefix.test.tolist() == [2, 3]
    # min_count: "a" and "d" (seen once) become <unk> in every split.
    rare = word_data.load_word_wikitext(tmp_path, min_count=2)
    assert rare.vocabulary == ("b", "<eos>", "<unk>")
    assert word_data.unknown_rates(rare)["test"] == 0.5
    (tmp_path / "wiki.test.tokens").unlink()
    with pytest.raises(FileNotFoundError, match="wiki.test.tokens"):
        word_data.load_word_wikitext(tmp_path)


def test_wikitext_loader_refuses_raw_files_and_says_which_it_found(tmp_path):
    for split in ("train", "valid", "test"):
        (tmp_path / f"wiki.{split}.raw").write_text("The cat sat .\n", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match=r"wiki.test.raw.*raw \(untokenised\).*tokenised"):
        word_data.load_word_wikitext(tmp_path)
    # Raw text under the tokenised names: no <unk> anywhere.
    for split in ("train", "valid", "test"):
        (tmp_path / f"wiki.{split}.tokens").write_text("The cat sat .\n", encoding="utf-8")
    with pytest.raises(ValueError, match="holds no <unk>: it looks like raw text"):
        word_data.load_word_wikitext(tmp_path)


def test_min_count_vocabulary_and_docstrings_corpus():
    assert word_data.build_vocabulary(["x", "y", "x", "z", "y", "x"], min_count=2) == (
        "x",
        "y",
        "<eos>",
        "<unk>",
    )
    with pytest.raises(ValueError, match="min_count must be at least 1"):
        word_data.build_vocabulary(["x"], min_count=0)
    corpus = word_data.load_word_corpus(corpus="docstrings", train_words=20000, min_count=3)
    assert corpus.name == "stdlib docstrings"
    rates = word_data.unknown_rates(corpus)
    # Rare training words are <unk> in training too; held-out modules have more.
    assert 0 < rates["train"] < rates["validation"] < 0.5
    with pytest.raises(ValueError, match="unknown corpus"):
        word_data.load_word_corpus(corpus="wiki")


def test_text_file_loader_splits_contiguous_blocks(tmp_path):
    lines = [f"line {i} has words" for i in range(100)]
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    corpus = word_data.load_word_text_file(path)
    assert (len(corpus.train), len(corpus.validation), len(corpus.test)) == (400, 50, 50)
    words = [corpus.vocabulary[i] for i in corpus.validation[:5]]
    assert words == ["line", "<unk>", "has", "words", "<eos>"]  # "80" is not a training word


def test_learning_rate_divided_by_10_after_epoch_10():
    config = configs.PRESETS["cpu"]
    rates = [configs.learning_rate_at(config, 0.01, epoch) for epoch in range(1, 21)]
    assert rates == [0.01] * 10 + [pytest.approx(0.001)] * 10


def test_grid_groups_and_names():
    runs = configs.grid(configs.PRESETS["cpu"])
    assert [r.name for r in runs] == [
        "fromage_lr0.01_p1_seed0",
        "fromage_lr0.01_pNone_seed0",
        "adam_lr0.001_seed0",
        "adam_lr0.0001_seed0",
        "sgd_lr0.1_seed0",
        "sgd_lr1_seed0",
        "sgd_lr10_seed0",
    ]
    assert [len(group) for group in configs.groups(runs)] == [1, 1, 2, 3]


def test_sgd_clips_the_global_gradient_norm_and_adam_is_plain():
    params = {"w": jnp.ones(3), "b": jnp.zeros(2)}
    grads = {"w": jnp.full(3, 100.0), "b": jnp.full(2, 100.0)}
    for name, expected_norm in (("sgd", 0.5 * 0.25), ("adam", 0.5 * math.sqrt(5))):
        optimizer = configs.make_optimizer(name, None)
        state = optimizer.init(params)
        state = optimizers.with_learning_rate(state, 0.5)
        updates, _ = optimizer.update(grads, state, params)
        assert float(optax.tree.norm(updates)) == pytest.approx(expected_norm, rel=1e-4)


def test_paper_preset_needs_wikitext(capsys):
    with pytest.raises(SystemExit):
        word_lm_cli.main(["--preset", "paper"])
    assert "--data-dir" in capsys.readouterr().err
