"""Tests for benchmarks/text_data.py: loaders on files the tests write, and batches."""

import numpy as np
import pytest

from benchmarks import text_data


def test_encode_decode_round_trip_is_bytes():
    text = "naïve café — ok"
    tokens = text_data.encode(text)
    assert tokens.dtype == np.uint8
    assert len(tokens) == len(text.encode("utf-8")) > len(text)
    assert text_data.decode(tokens) == text


def test_text_file_split_90_10(tmp_path):
    text = "".join(f"line {i}: the quick brown fox\n" for i in range(100))
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    corpus = text_data.load_text_file(path)
    total = len(text.encode())
    assert len(corpus.train) == round(0.9 * total)
    assert len(corpus.train) + len(corpus.validation) == total
    assert text_data.decode(np.concatenate([corpus.train, corpus.validation])) == text
    assert text_data.decode(corpus.validation).endswith("line 99: the quick brown fox\n")
    assert corpus.test is None


def test_text_file_rejects_non_utf8_and_tiny_files(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"abc\xff\xfe")
    with pytest.raises(UnicodeDecodeError):
        text_data.load_text_file(bad)
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("abc")
    with pytest.raises(ValueError, match="too few"):
        text_data.load_text_file(tiny)


@pytest.mark.parametrize("suffix", ["tokens", "raw"])
def test_wikitext_folder(tmp_path, suffix):
    contents = {"train": " = Train = \n a b c \n", "valid": " = Valid = \n d \n", "test": " t \n"}
    for stem, text in contents.items():
        (tmp_path / f"wiki.{stem}.{suffix}").write_text(text, encoding="utf-8")
    corpus = text_data.load_wikitext(tmp_path)
    assert text_data.decode(corpus.train) == contents["train"]
    assert text_data.decode(corpus.validation) == contents["valid"]
    assert text_data.decode(corpus.test) == contents["test"]
    assert suffix in corpus.name


def test_wikitext_prefers_tokens_and_test_is_optional(tmp_path):
    (tmp_path / "wiki.train.tokens").write_text("tokens train")
    (tmp_path / "wiki.valid.tokens").write_text("tokens valid")
    (tmp_path / "wiki.train.raw").write_text("raw train")
    (tmp_path / "wiki.valid.raw").write_text("raw valid")
    corpus = text_data.load_wikitext(tmp_path)
    assert text_data.decode(corpus.train) == "tokens train"
    assert corpus.test is None


def test_wikitext_missing_files_named(tmp_path):
    (tmp_path / "wiki.train.tokens").write_text("only train")
    with pytest.raises(FileNotFoundError, match="wiki.valid.tokens"):
        text_data.load_wikitext(tmp_path)


def test_load_corpus_dispatch(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("0123456789" * 10)
    assert text_data.load_corpus(data=str(path)).name == str(path)
    default = text_data.load_corpus()
    assert default.name == "pydoc_data.topics"
    assert len(default.train) > 100_000
    assert b"assert" in default.train.tobytes()
    with pytest.raises(ValueError, match="either"):
        text_data.load_corpus(data=str(path), data_dir=str(tmp_path))


def test_random_batch_targets_are_next_bytes():
    tokens = np.arange(200, dtype=np.uint8)
    inputs, targets = text_data.random_batch(tokens, 16, 10, np.random.default_rng(0))
    assert inputs.shape == targets.shape == (16, 10)
    assert inputs.dtype == np.int32
    np.testing.assert_array_equal(targets, inputs + 1)
    np.testing.assert_array_equal(np.diff(inputs, axis=1), 1)
    assert inputs.max() <= 198 and len(np.unique(inputs[:, 0])) > 1
    with pytest.raises(ValueError, match="too few"):
        text_data.random_batch(tokens[:5], 2, 10, np.random.default_rng(0))


def test_evaluation_batches_cover_split_without_overlap():
    tokens = np.arange(101, dtype=np.uint8)
    batches = text_data.evaluation_batches(tokens, batch_size=3, context_length=10)
    inputs = np.concatenate([b[0] for b in batches])
    targets = np.concatenate([b[1] for b in batches])
    assert inputs.shape == (10, 10)
    np.testing.assert_array_equal(inputs.ravel(), np.arange(100))
    np.testing.assert_array_equal(targets.ravel(), np.arange(1, 101))
    assert [len(b[0]) for b in batches] == [3, 3, 3, 1]


def test_evaluation_batches_spread_when_capped():
    tokens = np.arange(1001, dtype=np.int64)
    batches = text_data.evaluation_batches(tokens, batch_size=2, context_length=10, max_batches=2)
    starts = np.concatenate([b[0][:, 0] for b in batches])
    assert len(starts) == 4
    assert starts[0] == 0 and starts[-1] == 990
    assert np.all(np.diff(starts) >= 10)


def test_docstrings_corpus_is_held_out_by_module_and_deterministic():
    files = text_data.stdlib_docstring_files()
    paths = [path for path, _ in files]
    assert paths == sorted(paths) and len(paths) > 100
    # No tests, IDLE, or the pydoc topics of the other corpus.
    assert not any(p.startswith(("test/", "idlelib/", "pydoc_data/")) for p in paths)
    splits = text_data.docstring_splits()
    assert splits["validation"] == "\n\n".join(
        text for i, (_, text) in enumerate(files) if i % 10 == 3
    )
    # Held out by module: no validation module's docstrings are in training.
    held_out = [text for i, (_, text) in enumerate(files) if i % 10 in (3, 7)]
    assert all(text not in splits["train"] for text in held_out[:20] if len(text) > 2000)
    corpus = text_data.load_corpus(corpus="docstrings")
    assert corpus.name == "stdlib docstrings"
    assert text_data.decode(corpus.validation) == splits["validation"]
    assert len(corpus.train) > 5 * (len(corpus.validation) + len(corpus.test))
    # The corpus is prose: mostly letters and spaces, unlike source code.
    letters = sum(c.isalpha() or c == " " for c in splits["train"]) / len(splits["train"])
    assert letters > 0.75
    with pytest.raises(ValueError, match="unknown corpus 'wiki'.*pydoc.*docstrings"):
        text_data.load_corpus(corpus="wiki")
