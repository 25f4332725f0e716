"""Calibration files: the right arrays load, and every wrong one is a one-line error naming file and fix."""

from __future__ import annotations

import numpy as np
import pytest

from compressor.calibration import batches, load_calibration, prior_samples
from compressor.errors import ConfigError
from compressor.modelcard import ModelCard
from compressor.testing.models import card_dict

CARD = ModelCard.model_validate(card_dict("tiny", 8))
RNG = np.random.default_rng(0)


def _latents(count: int, width: int = 8, dtype=np.float32) -> np.ndarray:
    return RNG.standard_normal((count, width)).astype(dtype)


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_file_and_folder_load_and_concatenate(tmp_path):
    one = _npz(tmp_path / "a.npz", z=_latents(20))
    data = load_calibration(one, CARD, minimum=16)
    assert data["z"].shape == (20, 8) and data["z"].dtype == np.float32
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(3):
        _npz(folder / f"part{i}.npz", z=_latents(10, dtype=np.float64))
    assert load_calibration(folder, CARD, minimum=16)["z"].shape == (30, 8)


@pytest.mark.parametrize(
    "arrays,expected",
    [
        ({"z": _latents(20, width=7)}, "samples of shape [7], the model takes [8]"),
        ({"z": np.ones((20, 8), np.int64)}, "dtype int64"),
        ({"latent": _latents(20)}, "no array named 'z'"),
        ({"z": _latents(5)}, "5 calibration samples, at least 16 needed"),
        ({"z": np.full((20, 8), np.nan, np.float32)}, "NaN or Inf"),
        ({"z": np.zeros((20, 8), np.float32)}, "is constant"),
    ],
    ids=["shape", "dtype", "name", "too-few", "nan", "constant"],
)
def test_bad_calibration_data(tmp_path, arrays, expected):
    path = _npz(tmp_path / "calib.npz", **arrays)
    with pytest.raises(ConfigError) as info:
        load_calibration(path, CARD, minimum=16)
    assert str(path) in info.value.message and expected in info.value.message


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_calibration(tmp_path / "absent.npz", CARD, minimum=16)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="not a readable .npz"):
        load_calibration(garbage, CARD, minimum=16)


def test_pickled_arrays_are_refused_not_executed(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, z=np.array([{"a": 1}] * 20, dtype=object))
    with pytest.raises(ConfigError, match="not a readable .npz"):
        load_calibration(path, CARD, minimum=16)


def test_prior_samples_are_seeded_and_batched():
    first, again = prior_samples(CARD, 40, seed=3), prior_samples(CARD, 40, seed=3)
    np.testing.assert_array_equal(first["z"], again["z"])
    assert [len(feed["z"]) for feed in batches(first, 16)] == [16, 16, 8]
