"""SSIM (closed forms and properties), the image conversion FID sees, real-image sets and the FD-surrogate
extractor's determinism (the gallery: test_gallery.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compressor.evaluate.fd_surrogate import RandomConvFeatures
from compressor.evaluate.images import ImageSetError, load_real_images, to_unit_rgb
from compressor.evaluate.paired import psnr, ssim


def test_ssim_of_identical_images_is_one_and_falls_with_noise():
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, size=(3, 1, 24, 24))
    assert ssim(images, images, 2.0) == pytest.approx(1.0)
    slight, heavy = (images + rng.normal(0, s, images.shape) for s in (0.02, 0.3))
    assert 1.0 > ssim(images, slight, 2.0) > ssim(images, heavy, 2.0) > 0
    assert ssim(images, heavy, 2.0) == pytest.approx(ssim(heavy, images, 2.0))


def test_ssim_of_two_flat_images_is_the_luminance_term():
    """Constant images a and b: no structure or contrast, so SSIM = (2ab + C1) / (a^2 + b^2 + C1)."""
    a, b, data_range = 0.2, 0.5, 1.0
    c1 = (0.01 * data_range) ** 2
    flat_a, flat_b = np.full((1, 3, 16, 16), a), np.full((1, 3, 16, 16), b)
    assert ssim(flat_a, flat_b, data_range) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-9)


def test_psnr_closed_form():
    reference = np.zeros((1, 1, 4, 4))
    assert psnr(reference, reference + 0.1, 2.0) == pytest.approx(10 * np.log10(4 / 0.01))


def test_generated_images_are_mapped_to_unit_rgb_on_8_bit_levels():
    out = to_unit_rgb(np.array([[[[-1.0, 0.0, 1.0, 2.0]]]]), (-1.0, 1.0))
    assert out.shape == (1, 3, 1, 4)
    np.testing.assert_allclose(out[0, 0, 0], [0, 128 / 255, 1, 1])  # 0.5 * 255 = 127.5 rounds to 128; 2 clips
    np.testing.assert_array_equal(out[:, 0], out[:, 2])


def test_real_images_from_npz_in_either_layout(tmp_path):
    nhwc = np.random.default_rng(0).integers(0, 256, size=(5, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "real.npz", images=nhwc)
    images = load_real_images(tmp_path / "real.npz")
    assert images.shape == (5, 3, 8, 8) and images.dtype == np.float32
    np.testing.assert_allclose(images, nhwc.transpose(0, 3, 1, 2) / 255, rtol=1e-6)


@pytest.mark.parametrize(
    "images,expected",
    [
        (np.zeros((4, 2, 8, 8), np.uint8), "1 or 3 channels"),
        (np.full((4, 1, 8, 8), 3.0, np.float32), "must lie in \\[0, 1\\]"),
        (np.zeros((4, 8), np.uint8), "must be \\[N, C, H, W\\]"),
        (np.zeros((4, 1, 8, 8), np.int32), "uint8 \\(0..255\\) or float"),
    ],
)
def test_bad_real_image_sets_are_one_line_errors(tmp_path, images, expected):
    np.savez(tmp_path / "real.npz", images=images)
    with pytest.raises(ImageSetError, match=expected):
        load_real_images(tmp_path / "real.npz")


def test_npz_without_images_array_names_what_it_found(tmp_path):
    np.savez(tmp_path / "real.npz", pictures=np.zeros(3))
    with pytest.raises(ImageSetError, match="no 'images' array \\(found \\['pictures'\\]\\)"):
        load_real_images(tmp_path / "real.npz")


def test_fd_surrogate_is_deterministic_and_sees_image_changes():
    first, second = RandomConvFeatures(), RandomConvFeatures()
    assert first.sha256 == second.sha256
    images = torch.rand(4, 3, 32, 32)
    torch.testing.assert_close(first(images), second(images))
    assert first(images).shape == (4, first.dim)
    assert not torch.allclose(first(images), first(images.flip(-1) * 0.5))
