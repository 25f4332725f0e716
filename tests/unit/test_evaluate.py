"""Parity flags an artifact that drifts from torch; latency statistics come from the runs asked for."""

from __future__ import annotations

import pytest
import torch

from compressor.config import ParitySettings
from compressor.evaluate.latency import time_callable
from compressor.evaluate.parity import check_parity
from compressor.sampler import torch_call
from compressor.testing.models import TinyGenerator, randomized


def _runner(model, noise=0.0):
    def run(feeds):
        with torch.no_grad():
            out = model(torch.from_numpy(feeds["z"])).numpy()
        return [out + noise]

    return run


@pytest.fixture
def model():
    return randomized(TinyGenerator())


def test_identical_runner_passes(model):
    result = check_parity(torch_call(model), _runner(model), {"z": torch.randn(4, 8).numpy()}, ParitySettings())
    assert result["ok"] and result["max_abs_error"] == 0.0 and result["samples"] == 4


def test_drifting_runner_fails_with_its_error(model):
    result = check_parity(torch_call(model), _runner(model, noise=1e-2), {"z": torch.randn(4, 8).numpy()}, ParitySettings())
    assert not result["ok"]
    assert result["max_abs_error"] == pytest.approx(1e-2, rel=1e-3)


def test_tolerance_scales_with_output_magnitude(model):
    loose = ParitySettings(atol=0.0, rtol=0.05)
    assert check_parity(torch_call(model), _runner(model, noise=1e-2), {"z": torch.randn(4, 8).numpy()}, loose)["ok"]


def test_time_callable_counts_warmup_and_runs():
    calls = []
    stats = time_callable(lambda: calls.append(1), warmup=3, runs=7)
    assert len(calls) == 10 and stats["runs"] == 7
    assert 0 <= stats["min_ms"] <= stats["median_ms"] <= stats["p90_ms"]


class CountingFeatures:
    """A feature extractor that counts its batches: the mean of each channel."""

    name, sha256, dim = "counting", "0" * 64, 3

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, images):
        self.calls += 1
        return images.mean(dim=(2, 3))


def test_reference_features_come_from_the_cache_on_a_rerun():
    """Keyed by the model and its sampling, not the images: a rerun neither generates the samples nor extracts."""
    import numpy as np

    from compressor.evaluate.features import ModelSamples, model_sample_features

    extractor = CountingFeatures()
    generated = []

    def images():
        generated.append(1)
        return np.random.default_rng(len(generated)).random((6, 3, 4, 4), dtype=np.float32)

    card = {"name": "toy", "inputs": {"z": [8]}}
    first, first_cached = model_sample_features(ModelSamples("a" * 64, card, 9000, 6), extractor, images, batch=2)
    again, again_cached = model_sample_features(ModelSamples("a" * 64, card, 9000, 6), extractor, images, batch=2)
    assert (first_cached, again_cached) == (False, True)
    assert extractor.calls == 3 and len(generated) == 1  # three batches, once
    np.testing.assert_array_equal(first, again)
    for other in (ModelSamples("b" * 64, card, 9000, 6), ModelSamples("a" * 64, card, 9001, 6),
                  ModelSamples("a" * 64, {**card, "name": "other"}, 9000, 6), ModelSamples("a" * 64, card, 9000, 8),
                  ModelSamples("a" * 64, card, 9000, 6, probe="other outputs")):
        assert not other.cached(extractor), other  # another checkpoint, seed, card (sampler), count or outputs
    assert not model_sample_features(ModelSamples("", card, 9000, 6), extractor, images)[1]  # no hash: no cache


def test_an_artifacts_features_are_cached_by_its_images():
    """The same images give the same features (a rerun with the same artifact); other images are extracted."""
    import numpy as np

    from compressor.evaluate.features import image_features

    extractor = CountingFeatures()
    images = np.random.default_rng(0).random((6, 3, 4, 4), dtype=np.float32)
    first, first_cached = image_features(extractor, images, batch=2)
    again, again_cached = image_features(extractor, images.copy(), batch=2)
    other, other_cached = image_features(extractor, images[::-1], batch=2)
    assert (first_cached, again_cached, other_cached) == (False, True, False)
    assert extractor.calls == 6  # three batches for the first set, three for the other, none for the rerun
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
