"""Byte-level text corpora and batches for the transformer language model.

Every corpus is read as UTF-8 bytes, so the vocabulary is the 256 byte values
and the loss is in nats per byte (per character for ASCII text). Three
sources, none downloaded at run time:

* ``load_text_file(path)``: any UTF-8 text file, split 90/10 into train and
  validation (the last 10% is validation).
* ``load_wikitext(data_dir)``: a folder holding WikiText-2 (or -103) as
  ``wiki.{train,valid,test}.tokens`` or the ``.raw`` variants.
* ``load_default_corpus()``: the English text of Python's own documentation
  topics (``pydoc_data.topics``, ≈466 kB), which every CPython ships.

Example:
  >>> import numpy as np
  >>> corpus = load_default_corpus()
  >>> corpus.train.dtype, len(corpus.train) > 9 * len(corpus.validation) - 10
  (dtype('uint8'), True)
  >>> inputs, targets = random_batch(corpus.train, 2, 8, np.random.default_rng(0))
  >>> inputs.shape, bool((inputs[:, 1:] == targets[:, :-1]).all())
  ((2, 8), True)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

VOCAB_SIZE = 256


class TextCorpus(NamedTuple):
    """A corpus as byte arrays (uint8).

    Attributes:
      name: where it came from, for reports.
      train: training bytes.
      validation: validation bytes.
      test: test bytes, or None when the source has no test split.
    """

    name: str
    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray | None = None


def encode(text: str) -> np.ndarray:
    """UTF-8 bytes of `text` as a uint8 array of token ids."""
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy()


def decode(tokens: np.ndarray) -> str:
    """Text from byte token ids (invalid UTF-8 sequences become U+FFFD)."""
    return np.asarray(tokens, dtype=np.uint8).tobytes().decode("utf-8", errors="replace")


def split_train_validation(
    tokens: np.ndarray, validation_fraction: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """The first (1 − fraction) of `tokens` for training, the rest for validation."""
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    cut = int(round(len(tokens) * (1 - validation_fraction)))
    return tokens[:cut], tokens[cut:]


def load_text_file(path: str | os.PathLike, validation_fraction: float = 0.1) -> TextCorpus:
    """Any UTF-8 text file, split into train (first 90%) and validation (last 10%).

    Raises:
      ValueError: if the file is not valid UTF-8 or too short to split.
    """
    path = Path(path)
    text = path.read_bytes().decode("utf-8")  # fails loudly on non-UTF-8 input
    tokens = encode(text)
    train, validation = split_train_validation(tokens, validation_fraction)
    if len(train) < 2 or len(validation) < 2:
        raise ValueError(f"{path} holds {len(tokens)} bytes, too few to split into train/val.")
    return TextCorpus(str(path), train, validation)


_WIKITEXT_SPLITS = {"train": "train", "validation": "valid", "test": "test"}


def load_wikitext(data_dir: str | os.PathLike) -> TextCorpus:
    """WikiText from a folder with ``wiki.train.tokens`` etc. or ``wiki.train.raw`` etc.

    The ``.tokens`` files are preferred when both exist. The train and
    validation files are required; the test file is optional.

    Raises:
      FileNotFoundError: naming the files looked for, if train or validation is missing.
    """
    data_dir = Path(data_dir)
    for suffix in ("tokens", "raw"):
        files = {
            split: data_dir / f"wiki.{stem}.{suffix}" for split, stem in _WIKITEXT_SPLITS.items()
        }
        if files["train"].is_file() and files["validation"].is_file():
            break
    else:
        raise FileNotFoundError(
            f"{data_dir} holds no WikiText: expected wiki.train.tokens and wiki.valid.tokens "
            "(or wiki.train.raw and wiki.valid.raw)."
        )
    splits = {
        split: encode(path.read_text(encoding="utf-8")) if path.is_file() else None
        for split, path in files.items()
    }
    return TextCorpus(
        f"{data_dir} ({suffix})", splits["train"], splits["validation"], splits["test"]
    )


def default_corpus_text() -> str:
    """The text of Python's documentation topics (``pydoc_data.topics``), joined in sorted
    order so the corpus is the same on every run (it ships with Python: no download)."""
    from pydoc_data import topics

    return "\n\n".join(topics.topics[key] for key in sorted(topics.topics))


def load_default_corpus(validation_fraction: float = 0.1) -> TextCorpus:
    """Python's documentation topics (`default_corpus_text`), split 90/10."""
    train, validation = split_train_validation(encode(default_corpus_text()), validation_fraction)
    return TextCorpus("pydoc_data.topics", train, validation)


def load_corpus(data: str | None = None, data_dir: str | None = None) -> TextCorpus:
    """`load_text_file(data)`, `load_wikitext(data_dir)`, or the default corpus."""
    if data and data_dir:
        raise ValueError("give either a text file (--data) or a WikiText folder (--data-dir)")
    if data:
        return load_text_file(data)
    if data_dir:
        return load_wikitext(data_dir)
    return load_default_corpus()


def _windows(tokens: np.ndarray, starts: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    index = starts[:, None] + np.arange(length + 1)[None, :]
    window = tokens[index].astype(np.int32)
    return window[:, :-1], window[:, 1:]


def random_batch(
    tokens: np.ndarray, batch_size: int, context_length: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """`batch_size` windows at uniformly random offsets: (inputs, next-byte targets).

    Returns:
      Two int32 arrays of shape [batch_size, context_length]; targets are the
      inputs shifted left by one byte.
    """
    if len(tokens) < context_length + 1:
        raise ValueError(
            f"{len(tokens)} tokens are too few for windows of context_length {context_length}"
        )
    starts = rng.integers(0, len(tokens) - context_length, size=batch_size)
    return _windows(tokens, starts, context_length)


def evaluation_batches(
    tokens: np.ndarray, batch_size: int, context_length: int, max_batches: int | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Consecutive non-overlapping windows covering `tokens`, grouped into batches.

    The same windows on every call, so every optimiser is scored on the same
    text. With `max_batches`, the windows are spread evenly over the whole
    split instead of covering only its start; the last batch may be smaller.
    """
    num_windows = (len(tokens) - 1) // context_length
    if num_windows < 1:
        raise ValueError(
            f"{len(tokens)} tokens are too few for windows of context_length {context_length}"
        )
    starts = np.arange(num_windows) * context_length
    if max_batches is not None and num_windows > max_batches * batch_size:
        picks = np.linspace(0, num_windows - 1, max_batches * batch_size).round().astype(int)
        starts = starts[picks]
    return [
        _windows(tokens, starts[i : i + batch_size], context_length)
        for i in range(0, len(starts), batch_size)
    ]
