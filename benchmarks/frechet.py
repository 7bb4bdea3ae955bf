"""Fréchet distance between feature sets, and the classifier whose features it is measured in.

The Fréchet (2-Wasserstein) distance between Gaussians N(μ1, Σ1) and N(μ2, Σ2) is

    ‖μ1 − μ2‖² + Tr(Σ1) + Tr(Σ2) − 2 Tr((Σ1^½ Σ2 Σ1^½)^½).

FID evaluates it for Gaussians fitted to Inception features of real and generated
images. Our benchmarks have no Inception net (and nothing may be downloaded), so
the features come from a small classifier trained on the same data inside the
benchmark (`train_feature_classifier`, seeded, cached on disk): its last hidden
layer gives the features, its logits tell whether a generated image of class c
is recognised as c.

The trace term uses only symmetric eigendecompositions: Σ1^½ from ``eigh`` of
Σ1, then the eigenvalues of the symmetric PSD matrix Σ1^½ Σ2 Σ1^½, whose square
roots sum to Tr((Σ1 Σ2)^½). Negative eigenvalues from round-off are clipped to
zero, so singular covariances (ReLU features that are always zero, fewer samples
than features) need no added jitter.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from flax import serialization

from benchmarks import data as data_lib
from benchmarks import training


def _symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    """The PSD square root of a symmetric PSD matrix (negative round-off clipped)."""
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def frechet_distance_of_gaussians(mean1, covariance1, mean2, covariance2) -> float:
    """Squared Fréchet distance between N(mean1, covariance1) and N(mean2, covariance2).

    Args:
      mean1, mean2: (d,) means.
      covariance1, covariance2: (d, d) symmetric positive semi-definite
        covariances; singular ones are fine.

    Returns:
      ‖μ1 − μ2‖² + Tr Σ1 + Tr Σ2 − 2 Tr((Σ1^½ Σ2 Σ1^½)^½), a float ≥ 0.

    Example:
      >>> import numpy as np
      >>> round(frechet_distance_of_gaussians(np.zeros(2), np.eye(2), np.ones(2), 4 * np.eye(2)), 6)
      4.0
    """
    mean1, mean2 = np.asarray(mean1, np.float64), np.asarray(mean2, np.float64)
    covariance1 = np.atleast_2d(np.asarray(covariance1, np.float64))
    covariance2 = np.atleast_2d(np.asarray(covariance2, np.float64))
    if mean1.shape != mean2.shape or covariance1.shape != covariance2.shape:
        raise ValueError(
            f"shapes differ: means {mean1.shape} vs {mean2.shape}, covariances "
            f"{covariance1.shape} vs {covariance2.shape}."
        )
    sqrt1 = _symmetric_sqrt(covariance1)
    middle = sqrt1 @ covariance2 @ sqrt1
    middle_eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt_product = np.sqrt(np.clip(middle_eigenvalues, 0.0, None)).sum()
    distance = (
        np.sum((mean1 - mean2) ** 2)
        + np.trace(covariance1)
        + np.trace(covariance2)
        - 2.0 * trace_sqrt_product
    )
    # Round-off can make the distance of (nearly) equal Gaussians slightly negative.
    return float(max(distance, 0.0))


def gaussian_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) of (num_samples, d) features, in float64."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need (num_samples >= 2, d) features, got shape {features.shape}.")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(features1, features2) -> float:
    """Fréchet distance between Gaussians fitted to two (num_samples, d) feature sets."""
    return frechet_distance_of_gaussians(
        *gaussian_statistics(features1), *gaussian_statistics(features2)
    )


class FeatureClassifier(nn.Module):
    """MLP classifier whose last hidden layer is the feature space of the Fréchet distance.

    Attributes:
      hidden_sizes: widths of the ReLU hidden layers; the last is the feature size.
      num_classes: number of logits.
    """

    hidden_sizes: Sequence[int]
    num_classes: int

    @nn.compact
    def __call__(self, images):
        """Returns (logits, features) of flat `images` (batch, num_pixels)."""
        features = images.reshape(images.shape[0], -1)
        for width in self.hidden_sizes:
            features = nn.relu(nn.Dense(width)(features))
        return nn.Dense(self.num_classes)(features), features


def _cache_name(dataset_name, train_images, train_labels, hidden_sizes, epochs, seed) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(train_images, np.float32).tobytes())
    digest.update(np.ascontiguousarray(train_labels, np.int32).tobytes())
    digest.update(json.dumps([list(hidden_sizes), epochs, seed]).encode())
    return f"classifier_{dataset_name}_{digest.hexdigest()[:12]}"


def _fit(model, params, images, labels, epochs, batch_size, learning_rate, seed):
    """`params` after `epochs` shuffled epochs of Adam on the cross-entropy."""
    optimizer = optax.adam(learning_rate)

    @jax.jit
    def train_step(params, opt_state, images, labels):
        def loss_fn(params):
            logits, _ = model.apply({"params": params}, images)
            return training.cross_entropy_loss(logits, labels)

        grads = jax.grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    opt_state = optimizer.init(params)
    rng = np.random.default_rng(seed)
    batch_size = min(batch_size, len(images))
    for _ in range(epochs):
        for indices in data_lib.epoch_batch_indices(len(images), batch_size, rng):
            params, opt_state = train_step(params, opt_state, images[indices], labels[indices])
    return params


def train_feature_classifier(
    dataset_name: str,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    *,
    num_classes: int,
    hidden_sizes: Sequence[int] = (128, 64),
    epochs: int = 30,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    seed: int = 0,
    cache_dir: str | Path | None = None,
) -> tuple[FeatureClassifier, dict, dict]:
    """Trains (or loads from `cache_dir`) the seeded feature classifier with Adam.

    The cache file is named after a hash of the training data and the settings,
    so a classifier is reused only for the same images, labels, sizes, epochs and
    seed.

    Returns:
      (model, params, info): ``info`` has "test_accuracy", "train_seconds",
      "cached" (True when loaded) and "path" (of the cache file, or None).
    """
    model = FeatureClassifier(tuple(hidden_sizes), num_classes)
    params = model.init(jax.random.key(seed), jnp.asarray(train_images[:1]))["params"]
    name = _cache_name(dataset_name, train_images, train_labels, hidden_sizes, epochs, seed)
    weights_path = Path(cache_dir) / f"{name}.msgpack" if cache_dir is not None else None
    info_path = weights_path.with_suffix(".json") if weights_path is not None else None
    if weights_path is not None and weights_path.is_file() and info_path.is_file():
        params = serialization.from_bytes(params, weights_path.read_bytes())
        info = {**json.loads(info_path.read_text()), "cached": True, "path": str(weights_path)}
        return model, params, info

    start = time.perf_counter()
    params = _fit(
        model, params, train_images, train_labels, epochs, batch_size, learning_rate, seed
    )
    info = {
        "test_accuracy": classifier_accuracy(model, params, test_images, test_labels),
        "train_seconds": time.perf_counter() - start,
        "hidden_sizes": list(hidden_sizes),
        "epochs": epochs,
        "seed": seed,
    }
    if weights_path is not None:
        weights_path.parent.mkdir(parents=True, exist_ok=True)
        weights_path.write_bytes(serialization.to_bytes(params))
        info_path.write_text(json.dumps(info, indent=2) + "\n")
    return model, params, {**info, "cached": False, "path": weights_path and str(weights_path)}


def classifier_accuracy(model, params, images, labels, batch_size: int = 4096) -> float:
    """Fraction of `images` the classifier assigns to `labels`."""
    correct = 0
    for start in range(0, len(images), batch_size):
        logits, _ = model.apply({"params": params}, jnp.asarray(images[start : start + batch_size]))
        correct += int(
            np.sum(np.argmax(np.asarray(logits), -1) == labels[start : start + batch_size])
        )
    return correct / len(images)
