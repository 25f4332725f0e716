"""The gallery: labelled rows of original, artifact and difference, the difference heat map scaled to the largest
change shown, and each sample's PSNR recorded for the reports."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest
from matplotlib import colormaps

from compressor.evaluate.paired import psnr
from compressor.release.gallery import diff_label, write_gallery


def _samples(count: int, channels: int = 1):
    rng = np.random.default_rng(0)
    reference = np.tanh(rng.normal(size=(count, channels, 32, 32)))
    actual = np.clip(reference + rng.normal(0, 0.004, reference.shape), -1, 1)
    return reference, actual


def test_the_record_holds_each_samples_psnr_and_the_diff_scale(tmp_path):
    reference, actual = _samples(10)
    actual[3] = reference[3]
    record = write_gallery(tmp_path / "g.png", reference, actual, (-1.0, 1.0), "model.onnx")
    assert record["file"] == "g.png" and record["samples"] == 10 and record["value_range"] == [-1.0, 1.0]
    assert record["psnr_db"][3] is None  # identical: infinite PSNR, which JSON cannot hold
    expected = [round(psnr(ref, art, 2.0), 2) for ref, art in zip(reference, actual)]
    assert [value for k, value in enumerate(record["psnr_db"]) if k != 3] == [v for k, v in enumerate(expected) if k != 3]
    assert record["diff_max"] == pytest.approx(np.abs(actual - reference).max())


def test_the_largest_difference_is_drawn_in_the_heat_maps_brightest_colour(tmp_path):
    reference, actual = _samples(8)
    actual[5, :, 10:16, 10:16] = reference[5, :, 10:16, 10:16] + 0.05  # a 46 dB model's whole error, in one place
    write_gallery(tmp_path / "g.png", reference, actual, (-1.0, 1.0), "model.onnx")
    pixels = matplotlib.image.imread(tmp_path / "g.png")[..., :3]
    brightest = np.array(colormaps["inferno"](1.0)[:3])
    assert np.all(np.abs(pixels - brightest) < 0.02, axis=-1).sum() > 100  # the block, scaled to full brightness


def test_more_latents_make_more_rows_and_colour_samples_are_drawn(tmp_path):
    write_gallery(tmp_path / "one.png", *_samples(8), (-1.0, 1.0))
    write_gallery(tmp_path / "two.png", *_samples(12, channels=3), (-1.0, 1.0))
    one_group, two_groups = (matplotlib.image.imread(tmp_path / name) for name in ("one.png", "two.png"))
    assert two_groups.shape[0] > 1.6 * one_group.shape[0]
    assert two_groups.shape[1] == one_group.shape[1]  # 8 columns either way


def test_the_difference_row_says_its_scale():
    assert diff_label(0.0121) == "|diff|\n× 1/0.0121" and "identical" in diff_label(0.0)
