"""The Frechet distance against an independent implementation of the published formula, KID, and
statistics files (round trip, refusal of other extractors, unreadable files)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from scipy import linalg

from compressor.evaluate.frechet import (
    FeatureStats,
    StatsError,
    _mmd2,
    frechet_distance,
    frechet_distance_of_features,
    kernel_inception_distance,
    load_stats,
    stats_of,
)


def _published_fid(mu1, sigma1, mu2, sigma2):
    """pytorch-fid's calculate_frechet_distance: sqrtm of the product, real part."""
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    covmean = covmean.real
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


def _features(seed, n=600, dim=24, shift=0.0, stretch=1.0):
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    return (rng.normal(size=(n, dim)) @ mixing) * stretch + shift


def _stats(features, sha="a" * 64):
    return stats_of(features, "test", sha, warn=False)


@pytest.mark.parametrize("shift,stretch", [(0.0, 1.0), (0.3, 1.0), (0.0, 1.7), (1.0, 0.5)])
def test_frechet_distance_matches_the_published_formula(shift, stretch):
    first, second = _stats(_features(1)), _stats(_features(2, shift=shift, stretch=stretch))
    expected = _published_fid(first.mu, first.sigma, second.mu, second.sigma)
    assert frechet_distance(first, second) == pytest.approx(expected, abs=1e-6)


def test_distance_of_a_set_to_itself_is_zero_and_grows_with_the_shift():
    stats = _stats(_features(3))
    assert abs(frechet_distance(stats, stats)) < 1e-8
    near = frechet_distance(stats, _stats(_features(3, shift=0.1)))
    far = frechet_distance(stats, _stats(_features(3, shift=1.0)))
    assert 0 < near < far
    assert far == pytest.approx(24 * 1.0**2, rel=1e-6)  # same covariance: only |mu1 - mu2|^2 = dim * shift^2


def test_singular_covariances_give_a_finite_score_and_a_warning_that_says_how_many(caplog):
    with caplog.at_level(logging.WARNING, logger="compressor"):
        few = stats_of(_features(4, n=10, dim=24), "test", "a" * 64)
    assert "use at least 25 images" in caplog.text
    other = _stats(_features(5, n=10, dim=24))
    score = frechet_distance(few, other)
    assert np.isfinite(score) and score > 0


@pytest.mark.parametrize("count,dim", [(24, 300), (500, 40)])  # fewer samples than features (singular), and more
def test_the_distance_of_features_equals_the_distance_of_their_statistics(count, dim):
    rng = np.random.default_rng(3)
    first, second = rng.normal(size=(count, dim)), rng.normal(0.2, 1.5, size=(count + 5, dim)) @ rng.normal(size=(dim, dim)) / 6
    expected = frechet_distance(stats_of(first, "x", "s", warn=False), stats_of(second, "x", "s", warn=False))
    assert frechet_distance_of_features(first, second) == pytest.approx(expected, rel=1e-7)
    assert frechet_distance_of_features(first, first) == pytest.approx(0, abs=1e-9)


def test_stats_from_other_extractors_are_refused():
    with pytest.raises(StatsError, match="different feature extractors"):
        frechet_distance(_stats(_features(1), "a" * 64), _stats(_features(1), "b" * 64))


def test_mmd_matches_a_direct_sum_over_pairs():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 5)), rng.normal(0.5, 1, size=(7, 5))

    def k(a, b):
        return (a @ b / 5 + 1) ** 3

    m = len(x)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    assert _mmd2(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-10)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
    same = kernel_inception_distance(_features(1, n=300), _features(2, n=300))
    shifted = kernel_inception_distance(_features(1, n=300), _features(2, n=300, shift=1.0))
    assert abs(same) < 0.05 * shifted and shifted > 0


def test_stats_file_round_trip(tmp_path):
    stats = stats_of(_features(6), "inception-v3", "c" * 64)
    loaded = load_stats(stats.save(tmp_path / "ref.npz"))
    assert (loaded.count, loaded.extractor, loaded.extractor_sha256) == (600, "inception-v3", "c" * 64)
    np.testing.assert_array_equal(loaded.mu, stats.mu)
    np.testing.assert_array_equal(loaded.sigma, stats.sigma)


@pytest.mark.parametrize(
    "content,expected",
    [
        (b"not an npz", "unreadable statistics file"),
        ("mu-only", "no sigma, count"),
        ("mismatch", "do not fit together"),
    ],
)
def test_bad_stats_files_are_one_line_errors(tmp_path, content, expected):
    path = tmp_path / "ref.npz"
    if content == "mu-only":
        np.savez(path, mu=np.zeros(3))
    elif content == "mismatch":
        FeatureStats(np.zeros(3), np.eye(4), 5, "x", "d" * 64).save(path)
    else:
        path.write_bytes(content)
    with pytest.raises(StatsError, match=expected) as info:
        load_stats(path)
    assert str(path) in info.value.message and "\n" not in info.value.message
