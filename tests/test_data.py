"""Tests of benchmarks/data.py: the IDX reader/writer, the MNIST IDX loader and the splits."""

import gzip

import numpy as np
import pytest

from benchmarks import data


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, compress, dtype):
    array = (np.arange(2 * 3 * 5) * 7 - 40).astype(dtype).reshape(2, 3, 5)
    path = data.write_idx(tmp_path / "x", array, compress=compress)
    if compress:
        assert path.read_bytes()[:2] == b"\x1f\x8b"
    back = data.read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == (2, 3, 5)
    np.testing.assert_array_equal(back, array)


def test_read_idx_matches_the_standard_layout(tmp_path):
    # A hand-written MNIST-style labels file: magic 0x00000801, one dim of size 3.
    raw = bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 9])
    (tmp_path / "labels").write_bytes(raw)
    np.testing.assert_array_equal(data.read_idx(tmp_path / "labels"), [7, 2, 9])


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x00\x01\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(ValueError, match="not an IDX file"):
        data.read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 4, 1, 2]))
    with pytest.raises(ValueError, match="header says shape"):
        data.read_idx(tmp_path / "short")


def write_fake_mnist(folder, *, num_train=12, num_test=5, compress_train=True, seed=0):
    """Four small IDX files with MNIST's names: training files gzipped, test files raw."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (num_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, num_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (num_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, num_test, dtype=np.uint8),
    }
    train = {k: v for k, v in arrays.items() if k.startswith("train")}
    test = {k: v for k, v in arrays.items() if k.startswith("test")}
    data.write_mnist_idx(folder, train, compress=compress_train)
    data.write_mnist_idx(folder, test, compress=False)
    return arrays


def test_load_mnist_idx_reads_gz_and_raw_files(tmp_path):
    arrays = write_fake_mnist(tmp_path)
    assert (tmp_path / "train-images-idx3-ubyte.gz").exists()
    assert (tmp_path / "t10k-images-idx3-ubyte").exists()
    dataset = data.load_mnist_idx(tmp_path)
    assert dataset.name == "mnist" and dataset.num_classes == 10
    assert dataset.train_images.shape == (12, 784) and dataset.train_images.dtype == np.float32
    assert dataset.test_images.shape == (5, 784)
    np.testing.assert_array_equal(dataset.train_labels, arrays["train_labels"])
    np.testing.assert_array_equal(dataset.test_labels, arrays["test_labels"])
    # Standardised with the training pixels' statistics: an affine map of the raw pixels.
    raw = arrays["train_images"].reshape(12, -1).astype(np.float64)
    expected = (raw - raw.mean()) / raw.std()
    np.testing.assert_allclose(dataset.train_images, expected, rtol=1e-5, atol=1e-5)
    raw_test = arrays["test_images"].reshape(5, -1).astype(np.float64)
    np.testing.assert_allclose(
        dataset.test_images, (raw_test - raw.mean()) / raw.std(), rtol=1e-5, atol=1e-5
    )


def test_load_mnist_idx_names_missing_files_and_folder(tmp_path):
    write_fake_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    (tmp_path / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError) as error:
        data.load_mnist_idx(tmp_path)
    message = str(error.value)
    assert "t10k-labels-idx1-ubyte" in message and "train-images-idx3-ubyte" in message
    assert "train-labels-idx1-ubyte" not in message
    assert str(tmp_path.resolve()) in message


def test_load_mnist_idx_rejects_mismatched_counts(tmp_path):
    write_fake_mnist(tmp_path)
    data.write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match="5 test images but 4 test labels"):
        data.load_mnist_idx(tmp_path)


def test_gzip_detection_ignores_file_name(tmp_path):
    payload = bytes([0, 0, 8, 1, 0, 0, 0, 2, 3, 4])
    (tmp_path / "plain.gz").write_bytes(payload)
    (tmp_path / "zipped").write_bytes(gzip.compress(payload))
    np.testing.assert_array_equal(data.read_idx(tmp_path / "plain.gz"), [3, 4])
    np.testing.assert_array_equal(data.read_idx(tmp_path / "zipped"), [3, 4])


def test_digits_split_is_disjoint_and_standardised():
    dataset = data.load_digits(test_fraction=0.25, seed=3)
    assert dataset.train_images.shape[1] == 64
    assert len(dataset.train_images) + len(dataset.test_images) == 1797
    assert len(dataset.test_images) == round(1797 * 0.25)
    assert abs(float(dataset.train_images.mean())) < 1e-4
    assert abs(float(dataset.train_images.std()) - 1.0) < 1e-4
    assert set(np.unique(dataset.train_labels)) == set(range(10))
    train_rows = {row.tobytes() for row in dataset.train_images}
    overlap = sum(row.tobytes() in train_rows for row in dataset.test_images)
    # Digits holds a few exact duplicate images; a leaky split would share hundreds.
    assert overlap < 10


def test_mnist_subset_has_5000_images():
    dataset = data.load_mnist_subset()
    assert dataset.train_images.shape == (4000, 784) and dataset.test_images.shape == (1000, 784)
    assert (
        np.bincount(np.concatenate([dataset.train_labels, dataset.test_labels])).tolist()
        == [500] * 10
    )


def test_load_dataset_errors():
    with pytest.raises(ValueError, match="--data-dir"):
        data.load_dataset("mnist")
    with pytest.raises(ValueError, match="Unknown dataset"):
        data.load_dataset("cifar")


def test_epoch_batch_indices_is_a_permutation_prefix():
    indices = data.epoch_batch_indices(10, 3, np.random.default_rng(0))
    assert indices.shape == (3, 3) and indices.dtype == np.int32
    assert len(set(indices.ravel().tolist())) == 9 and indices.max() < 10
    with pytest.raises(ValueError, match="exceeds"):
        data.epoch_batch_indices(2, 3, np.random.default_rng(0))
