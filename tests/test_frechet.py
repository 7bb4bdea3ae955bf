"""Tests of benchmarks/frechet.py: the Fréchet distance against closed forms, and the
cached feature classifier."""

import numpy as np
import pytest
import scipy.linalg

from benchmarks import data, frechet


def _diagonal_closed_form(mean1, variances1, mean2, variances2):
    return np.sum((mean1 - mean2) ** 2) + np.sum(
        variances1 + variances2 - 2 * np.sqrt(variances1 * variances2)
    )


@pytest.mark.parametrize("dimension", [1, 3, 17])
def test_diagonal_gaussians_match_the_closed_form(dimension):
    rng = np.random.default_rng(dimension)
    mean1, mean2 = rng.normal(size=dimension), rng.normal(size=dimension)
    variances1, variances2 = rng.uniform(0.1, 5, dimension), rng.uniform(0.1, 5, dimension)
    distance = frechet.frechet_distance_of_gaussians(
        mean1, np.diag(variances1), mean2, np.diag(variances2)
    )
    expected = _diagonal_closed_form(mean1, variances1, mean2, variances2)
    np.testing.assert_allclose(distance, expected, rtol=1e-10)


def test_singular_diagonal_covariances_match_the_closed_form():
    # Zero variances (dead ReLU features) in one or both Gaussians.
    mean1, mean2 = np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 1.0, 0.0, 3.0])
    variances1, variances2 = np.array([0.0, 2.0, 0.0, 1.0]), np.array([3.0, 0.0, 0.0, 4.0])
    distance = frechet.frechet_distance_of_gaussians(
        mean1, np.diag(variances1), mean2, np.diag(variances2)
    )
    expected = _diagonal_closed_form(mean1, variances1, mean2, variances2)
    assert expected == pytest.approx(1 + 4 + (3 + 2 + 0 + 1))
    np.testing.assert_allclose(distance, expected, rtol=1e-10)


def test_rotated_gaussians_match_the_closed_form():
    """Covariances sharing eigenvectors: Tr √(Σ1Σ2) = Σ √(λ1 λ2) in any rotated basis."""
    rng = np.random.default_rng(0)
    rotation, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    eigenvalues1, eigenvalues2 = rng.uniform(0, 3, 6), rng.uniform(0, 3, 6)
    eigenvalues1[0] = 0.0  # rank-deficient
    covariance1 = rotation @ np.diag(eigenvalues1) @ rotation.T
    covariance2 = rotation @ np.diag(eigenvalues2) @ rotation.T
    mean1, mean2 = rng.normal(size=6), rng.normal(size=6)
    distance = frechet.frechet_distance_of_gaussians(mean1, covariance1, mean2, covariance2)
    expected = _diagonal_closed_form(
        rotation.T @ mean1, eigenvalues1, rotation.T @ mean2, eigenvalues2
    )
    # The tolerance comes from the computation, not from one machine. In float64 the
    # eigendecompositions perturb every eigenvalue of Σ1^½ Σ2 Σ1^½ by about
    # δ = d·ε·‖Σ1‖‖Σ2‖; the square root turns that into √δ for the zero eigenvalue
    # (rank-deficient Σ1) and into at most δ/√λ for the others, and Tr counts it twice.
    epsilon = np.finfo(np.float64).eps
    dimension = len(mean1)
    delta = dimension * epsilon * np.linalg.norm(covariance1, 2) * np.linalg.norm(covariance2, 2)
    np.testing.assert_allclose(
        distance, expected, rtol=dimension * epsilon, atol=2 * np.sqrt(delta)
    )
    assert 2 * np.sqrt(delta) < 1e-6 * expected  # the check still means something


def test_general_covariances_match_scipy_sqrtm():
    rng = np.random.default_rng(1)
    factor1, factor2 = rng.normal(size=(5, 5)), rng.normal(size=(5, 8))
    covariance1, covariance2 = factor1 @ factor1.T, factor2 @ factor2.T / 8
    mean1, mean2 = rng.normal(size=5), rng.normal(size=5)
    trace_sqrt = np.real(np.trace(scipy.linalg.sqrtm(covariance1 @ covariance2)))
    expected = (
        np.sum((mean1 - mean2) ** 2)
        + np.trace(covariance1)
        + np.trace(covariance2)
        - 2 * trace_sqrt
    )
    distance = frechet.frechet_distance_of_gaussians(mean1, covariance1, mean2, covariance2)
    np.testing.assert_allclose(distance, expected, rtol=1e-8)
    # Symmetric, zero for identical Gaussians.
    swapped = frechet.frechet_distance_of_gaussians(mean2, covariance2, mean1, covariance1)
    np.testing.assert_allclose(swapped, distance, rtol=1e-8)
    same = frechet.frechet_distance_of_gaussians(mean1, covariance1, mean1, covariance1)
    assert same == pytest.approx(0.0, abs=1e-9)


def test_distance_of_samples_approaches_the_distance_of_their_gaussians():
    rng = np.random.default_rng(2)
    scales1, scales2 = np.array([1.0, 2.0, 0.5]), np.array([2.0, 1.0, 1.0])
    samples1 = rng.normal(size=(200_000, 3)) * scales1
    samples2 = rng.normal(size=(200_000, 3)) * scales2 + np.array([1.0, 0.0, -1.0])
    expected = _diagonal_closed_form(np.zeros(3), scales1**2, np.array([1, 0, -1.0]), scales2**2)
    assert frechet.frechet_distance(samples1, samples2) == pytest.approx(expected, rel=0.02)
    # Fewer samples than features: the covariances are singular, the distance stays finite.
    few = frechet.frechet_distance(rng.normal(size=(4, 10)), rng.normal(size=(4, 10)))
    assert np.isfinite(few) and few >= 0


def test_mismatched_shapes_raise():
    with pytest.raises(ValueError, match="shapes differ"):
        frechet.frechet_distance_of_gaussians(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_feature_classifier_is_accurate_seeded_and_cached(tmp_path):
    digits = data.load_digits()
    arguments = (
        "digits", digits.train_images, digits.train_labels, digits.test_images, digits.test_labels,
    )  # fmt: skip
    settings = {"num_classes": 10, "hidden_sizes": (32,), "epochs": 15, "seed": 3}
    model, params, info = frechet.train_feature_classifier(
        *arguments, **settings, cache_dir=tmp_path
    )
    assert info["cached"] is False and info["test_accuracy"] > 0.85
    _, cached_params, cached_info = frechet.train_feature_classifier(
        *arguments, **settings, cache_dir=tmp_path
    )
    assert cached_info["cached"] is True and cached_info["path"] == info["path"]
    assert cached_info["test_accuracy"] == info["test_accuracy"]
    np.testing.assert_array_equal(cached_params["Dense_0"]["kernel"], params["Dense_0"]["kernel"])
    logits, features = model.apply({"params": params}, digits.test_images[:5])
    assert logits.shape == (5, 10) and features.shape == (5, 32)
    # Another seed is another classifier, in another cache file.
    _, other_params, other_info = frechet.train_feature_classifier(
        *arguments, **{**settings, "epochs": 1, "seed": 4}, cache_dir=tmp_path
    )
    assert other_info["path"] != info["path"]
    assert not np.allclose(other_params["Dense_0"]["kernel"], params["Dense_0"]["kernel"])
