"""Byte-level text corpora and batches for the transformer language model.

Every corpus is read as UTF-8 bytes, so the vocabulary is the 256 byte values
and the loss is in nats per byte (per character for ASCII text). Three
sources, none downloaded at run time:

* ``load_text_file(path)``: any UTF-8 text file, split 90/10 into train and
  validation (the last 10% is validation).
* ``load_wikitext(data_dir)``: a folder holding WikiText-2 (or -103) as
  ``wiki.{train,valid,test}.tokens`` or the ``.raw`` variants.
* ``load_named_corpus(name)``: a text every CPython ships, chosen by name
  (`CORPORA`): ``"pydoc"``, the English text of Python's documentation topics
  (``pydoc_data.topics``, ≈466 kB; the default), or ``"docstrings"``, the
  docstrings of the standard library's modules (≈1.5 MB of English prose
  about APIs, split by module file so validation holds unseen modules).

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

import functools
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


# Folders of the standard library whose docstrings are not prose about the
# library (tests, IDLE, the pydoc topics of the other corpus, vendored code).
_DOCSTRING_SKIP = frozenset(
    {
        "test",
        "tests",
        "idlelib",
        "pydoc_data",
        "site-packages",
        "dist-packages",
        "lib2to3",
        "turtledemo",
        "ensurepip",
        "__pycache__",
    }
)


@functools.cache
def stdlib_docstring_files() -> tuple[tuple[str, str], ...]:
    """(module file, its docstrings joined) for every standard-library module with any.

    The docstrings (module, class, function; longer than 40 characters) are
    read with `ast` from the source files, in sorted path order, without
    importing anything; folders in `_DOCSTRING_SKIP` are left out.
    """
    import ast
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(
        path
        for path in root.rglob("*.py")
        if not _DOCSTRING_SKIP & set(path.relative_to(root).parts[:-1])
        and not path.relative_to(root).parts[0].startswith("config-")
    )
    documents = []
    for path in files:
        try:
            tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError):  # a file of another Python's grammar: skip it
            continue
        kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
        docs = [
            doc
            for node in ast.walk(tree)
            if isinstance(node, kinds) and (doc := ast.get_docstring(node)) and len(doc) > 40
        ]
        if docs:
            documents.append((path.relative_to(root).as_posix(), "\n\n".join(docs)))
    return tuple(documents)


def docstring_splits() -> dict[str, str]:
    """The docstrings corpus's train/validation/test texts, split by module file.

    Of the module files in sorted order, every tenth (index ≡ 3 mod 10) goes to
    validation and every tenth from index 7 (≡ 7 mod 10) to test, so the
    held-out text is from modules the model never saw in training.
    """
    parts: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
    for index, (_, text) in enumerate(stdlib_docstring_files()):
        split = {3: "validation", 7: "test"}.get(index % 10, "train")
        parts[split].append(text)
    return {split: "\n\n".join(texts) for split, texts in parts.items()}


def load_docstring_corpus() -> TextCorpus:
    """The standard library's docstrings (`docstring_splits`) as bytes."""
    splits = {split: encode(text) for split, text in docstring_splits().items()}
    return TextCorpus("stdlib docstrings", splits["train"], splits["validation"], splits["test"])


# The corpora every CPython ships, by the name --corpus takes.
CORPORA = {"pydoc": load_default_corpus, "docstrings": load_docstring_corpus}


def load_named_corpus(name: str) -> TextCorpus:
    """The shipped corpus called `name` (a key of `CORPORA`)."""
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; choose from {tuple(CORPORA)}")
    return CORPORA[name]()


def load_corpus(
    data: str | None = None, data_dir: str | None = None, corpus: str = "pydoc"
) -> TextCorpus:
    """`load_text_file(data)`, `load_wikitext(data_dir)`, or the shipped corpus `corpus`."""
    if data and data_dir:
        raise ValueError("give either a text file (--data) or a WikiText folder (--data-dir)")
    if data:
        return load_text_file(data)
    if data_dir:
        return load_wikitext(data_dir)
    return load_named_corpus(corpus)


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
