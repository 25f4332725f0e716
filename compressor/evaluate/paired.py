"""Paired quality metrics: compressed vs reference outputs on the same seeded latents."""

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
