"""Word-level corpora and the bptt batches of PyTorch's ``word_language_model`` example.

Text is split into words on whitespace, every line ending in ``<eos>`` (an
empty line is a lone ``<eos>``), as the example's ``data.py`` does. The
vocabulary is built from the training words, as WikiText's was: the words
seen at least ``min_count`` times, in order of first appearance, plus
``<unk>`` and ``<eos>``; any other word of any split becomes ``<unk>``
(WikiText-2's files already hold ``<unk>`` for the words it dropped, so
``min_count=1`` keeps them as they are). `unknown_rates` gives each split's
``<unk>`` share. Four sources, none downloaded at run time:

* ``load_word_wikitext(data_dir)``: ``wiki.{train,valid,test}.tokens`` (WikiText-2;
  the raw ``.raw`` files are refused, since the word LM needs the tokenised ones).
* ``load_word_text_file(path)``: any UTF-8 text file, split 80/10/10 in contiguous blocks.
* ``load_default_word_corpus()``: the text of Python's documentation topics
  (``pydoc_data.topics``, ≈77,000 words), split 80/10/10 in contiguous blocks.
* ``load_docstring_word_corpus()``: the standard library's docstrings, split by
  module (`benchmarks.text_data.docstring_splits`).

`batchify` cuts a token stream into ``batch_size`` columns and `bptt_windows`
walks down them ``bptt`` rows at a time, as the example trains and evaluates.

Example:
  >>> corpus = word_corpus_from_lines(["a b", "", "b c"], ["a d"], ["c"])
  >>> corpus.vocabulary
  ('a', 'b', '<eos>', 'c', '<unk>')
  >>> corpus.train.tolist(), corpus.validation.tolist(), corpus.test.tolist()
  ([0, 1, 2, 2, 1, 3, 2], [0, 4, 2], [3, 2])
  >>> batchify(np.arange(7), 2).tolist()
  [[0, 3], [1, 4], [2, 5]]
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from benchmarks import text_data

EOS = "<eos>"
UNK = "<unk>"


class WordCorpus(NamedTuple):
    """A corpus as int32 arrays of word ids.

    Attributes:
      name: where it came from, for reports.
      vocabulary: the words; a word's id is its index.
      train, validation, test: the splits' word ids.
    """

    name: str
    vocabulary: tuple[str, ...]
    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray


def line_words(lines: Iterable[str]) -> list[str]:
    """The words of `lines` (split on whitespace), each line followed by ``<eos>``."""
    return [word for line in lines for word in (*line.split(), EOS)]


def build_vocabulary(words: Iterable[str], min_count: int = 1) -> tuple[str, ...]:
    """The `words` seen at least `min_count` times, in order of first appearance, then
    ``<eos>`` and ``<unk>`` if absent."""
    if min_count < 1:
        raise ValueError(f"min_count must be at least 1, got {min_count}")
    counts = Counter(words)
    vocabulary = dict.fromkeys(word for word in counts if counts[word] >= min_count)
    vocabulary.update(dict.fromkeys((EOS, UNK)))
    return tuple(vocabulary)


def encode_words(words: Sequence[str], vocabulary: Sequence[str]) -> np.ndarray:
    """The ids of `words` in `vocabulary` (``<unk>``'s id for a word it lacks)."""
    index = {word: i for i, word in enumerate(vocabulary)}
    unknown = index[UNK]
    return np.asarray([index.get(word, unknown) for word in words], np.int32)


def word_corpus_from_lines(
    train: Sequence[str],
    validation: Sequence[str],
    test: Sequence[str],
    *,
    name: str = "lines",
    train_words: int | None = None,
    min_count: int = 1,
) -> WordCorpus:
    """A `WordCorpus` of three lists of lines; the vocabulary comes from the training words.

    Args:
      train, validation, test: the splits' lines.
      name: the corpus's name in reports.
      train_words: keep only this many training words (a prefix, counting
        ``<eos>``); the vocabulary is built from those.
      min_count: a training word seen fewer times becomes ``<unk>`` everywhere.
    """
    words = line_words(train)
    if train_words is not None:
        if train_words < 2:
            raise ValueError(f"train_words must be at least 2, got {train_words}")
        words = words[:train_words]
    vocabulary = build_vocabulary(words, min_count)
    return WordCorpus(
        name,
        vocabulary,
        encode_words(words, vocabulary),
        encode_words(line_words(validation), vocabulary),
        encode_words(line_words(test), vocabulary),
    )


def unknown_rates(corpus: WordCorpus) -> dict[str, float]:
    """The share of ``<unk>`` among each split's tokens (train, validation, test)."""
    unknown = corpus.vocabulary.index(UNK)
    return {
        split: float(np.mean(tokens == unknown)) if len(tokens) else 0.0
        for split, tokens in (
            ("train", corpus.train),
            ("validation", corpus.validation),
            ("test", corpus.test),
        )
    }


def split_lines(
    lines: Sequence[str], fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> tuple[list[str], list[str], list[str]]:
    """`lines` cut into three contiguous blocks holding about `fractions` of the words each."""
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"fractions must be three positive numbers summing to 1, got {fractions}")
    ends = np.cumsum([len(line.split()) + 1 for line in lines])
    first, second = np.searchsorted(ends, np.cumsum(fractions[:2]) * ends[-1], side="right")
    blocks = list(lines[:first]), list(lines[first:second]), list(lines[second:])
    if not all(blocks):
        raise ValueError(f"{len(lines)} lines are too few to split into train/validation/test")
    return blocks


def load_word_text_file(
    path: str | os.PathLike, *, train_words: int | None = None, min_count: int = 1
) -> WordCorpus:
    """Any UTF-8 text file, its lines split 80/10/10 into train/validation/test."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return word_corpus_from_lines(
        *split_lines(lines), name=str(path), train_words=train_words, min_count=min_count
    )


def load_word_wikitext(
    data_dir: str | os.PathLike, *, train_words: int | None = None, min_count: int = 1
) -> WordCorpus:
    """WikiText (-2 or -103) from a folder holding the tokenised ``wiki.{train,valid,test}.tokens``.

    Raises:
      FileNotFoundError: naming the missing files, and saying so when the folder
        holds the raw variant (``wiki.*.raw``) instead.
      ValueError: if the ``.tokens`` training file holds no ``<unk>`` (every
        tokenised WikiText does): raw text under the tokenised name.
    """
    data_dir = Path(data_dir)
    files = [data_dir / f"wiki.{split}.tokens" for split in ("train", "valid", "test")]
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raw = sorted(path.name for path in data_dir.glob("wiki.*.raw"))
        found = (
            f"; it holds {', '.join(raw)}, the raw (untokenised) WikiText: the word LM needs "
            "the tokenised files of WikiText-2 (not WikiText-2-raw)"
            if raw
            else ""
        )
        raise FileNotFoundError(f"no WikiText in {data_dir}: missing {', '.join(missing)}{found}")
    splits = [path.read_text(encoding="utf-8").splitlines() for path in files]
    if not any(UNK in line for line in splits[0]):
        raise ValueError(
            f"{files[0]} holds no {UNK}: it looks like raw text, not tokenised WikiText "
            "(whose rare words are <unk>); use the wiki.*.tokens files of WikiText-2."
        )
    return word_corpus_from_lines(
        *splits,
        name=f"{data_dir} (found wiki.*.tokens, tokenised)",
        train_words=train_words,
        min_count=min_count,
    )


def load_default_word_corpus(*, train_words: int | None = None, min_count: int = 1) -> WordCorpus:
    """Python's documentation topics (``pydoc_data.topics``, sorted), split 80/10/10 by lines."""
    blocks = split_lines(text_data.default_corpus_text().split("\n"))
    return word_corpus_from_lines(
        *blocks, name="pydoc_data.topics", train_words=train_words, min_count=min_count
    )


def load_docstring_word_corpus(*, train_words: int | None = None, min_count: int = 1) -> WordCorpus:
    """The standard library's docstrings, split by module file (`text_data.docstring_splits`)."""
    splits = text_data.docstring_splits()
    lines = [splits[split].split("\n") for split in ("train", "validation", "test")]
    return word_corpus_from_lines(
        *lines, name="stdlib docstrings", train_words=train_words, min_count=min_count
    )


_SHIPPED = {"pydoc": load_default_word_corpus, "docstrings": load_docstring_word_corpus}


def load_word_corpus(
    data: str | None = None,
    data_dir: str | None = None,
    *,
    train_words: int | None = None,
    min_count: int = 1,
    corpus: str = "pydoc",
) -> WordCorpus:
    """`load_word_text_file(data)`, `load_word_wikitext(data_dir)` or the shipped `corpus`."""
    if data and data_dir:
        raise ValueError("give either a text file (--data) or a WikiText folder (--data-dir)")
    options = {"train_words": train_words, "min_count": min_count}
    if data:
        return load_word_text_file(data, **options)
    if data_dir:
        return load_word_wikitext(data_dir, **options)
    if corpus not in _SHIPPED:
        raise ValueError(f"unknown corpus {corpus!r}; choose from {tuple(_SHIPPED)}")
    return _SHIPPED[corpus](**options)


def batchify(tokens: np.ndarray, batch_size: int) -> np.ndarray:
    """`tokens` cut into `batch_size` contiguous columns: shape (len // batch_size, batch_size).

    Column j holds tokens ``[j·n, (j+1)·n)`` with ``n = len // batch_size``; the
    remainder is dropped (PyTorch's ``data.view(bsz, -1).t()``).
    """
    rows = len(tokens) // batch_size
    if rows < 2:
        raise ValueError(f"{len(tokens)} tokens are too few for {batch_size} columns of 2 rows")
    return np.asarray(tokens[: rows * batch_size]).reshape(batch_size, rows).T


class Windows(NamedTuple):
    """Consecutive bptt windows of a batchified stream, batch-major.

    Attributes:
      inputs, targets: int32 (num_windows, batch_size, bptt); targets are the
        next tokens of inputs.
      weights: float32 (num_windows, batch_size, bptt): 1 for a real target, 0
        for the padding of a short last window.
    """

    inputs: np.ndarray
    targets: np.ndarray
    weights: np.ndarray


def bptt_windows(source: np.ndarray, bptt: int, *, drop_last: bool = False) -> Windows:
    """The windows ``source[i:i+bptt] -> source[i+1:i+1+bptt]`` for i = 0, bptt, 2·bptt, ...

    `source` is a `batchify` output (rows, batch_size). The example's last
    window is shorter (``rows − 1 − i`` rows); here it is padded with weight 0,
    or left out with `drop_last` (all training steps then have one shape).
    """
    rows, batch_size = source.shape
    starts = range(0, rows - 1, bptt)
    if drop_last:
        starts = [i for i in starts if i + bptt <= rows - 1]
    if not starts:
        raise ValueError(f"{rows} rows hold no full window of bptt {bptt}")
    shape = (len(starts), batch_size, bptt)
    inputs, targets = np.zeros(shape, np.int32), np.zeros(shape, np.int32)
    weights = np.zeros(shape, np.float32)
    for window, i in enumerate(starts):
        length = min(bptt, rows - 1 - i)
        inputs[window, :, :length] = source[i : i + length].T
        targets[window, :, :length] = source[i + 1 : i + 1 + length].T
        weights[window, :, :length] = 1.0
    return Windows(inputs, targets, weights)
