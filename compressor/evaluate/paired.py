"""Paired quality metrics: compressed vs reference outputs on the same seeded latents (PSNR, SSIM)."""

from __future__ import annotations

import numpy as np


def psnr(reference: np.ndarray, actual: np.ndarray, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB over all elements; infinite when the outputs are identical."""
    mse = float(np.mean((np.asarray(reference, np.float64) - np.asarray(actual, np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(data_range**2 / mse))


def data_range_of(value_range: tuple[float, float] | None, reference: np.ndarray) -> float:
    """The card's declared output range, else the range the reference outputs actually span."""
    if value_range is not None:
        return float(value_range[1] - value_range[0])
    return float(np.max(reference) - np.min(reference)) or 1.0


SSIM_WINDOW = 11  # Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03
SSIM_SIGMA = 1.5


def ssim(reference: np.ndarray, actual: np.ndarray, data_range: float) -> float:
    """Mean structural similarity of [N, C, H, W] images (Wang et al.; per channel, 'valid' windows only,
    as the original code and scikit-image's gaussian_weights=True do). 1.0 for identical images."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.asarray(reference, np.float64))
    y = torch.from_numpy(np.asarray(actual, np.float64))
    _, channels, height, width = x.shape
    size = min(SSIM_WINDOW, height, width)
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * SSIM_SIGMA**2))
    window = (g[:, None] * g[None, :] / g.sum() ** 2).expand(channels, 1, size, size)

    def blur(t):
        return F.conv2d(t, window, groups=channels)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    ssim_map = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(ssim_map.mean())
