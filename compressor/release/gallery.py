"""The report's gallery: reference and artifact samples on the same latents, with their difference.

Rows come in threes for each group of up to 8 latents: reference samples, the artifact's samples, and
|artifact - reference| magnified 4x (black = identical), so a person can see at a glance whether the
images held up and where they changed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compressor.release.png import write_png

GALLERY_FILE = "gallery.png"
COLUMNS = 8
PAD = 2
DIFF_GAIN = 4


def write_gallery(path: Path, reference: np.ndarray, actual: np.ndarray, value_range: tuple[float, float]) -> Path:
    """A PNG grid of [N, C, H, W] reference and artifact images (C = 1 or 3) in `value_range`."""
    low, high = value_range
    ref = np.clip((reference - low) / (high - low), 0, 1)
    art = np.clip((actual - low) / (high - low), 0, 1)
    diff = np.clip(np.abs(art - ref) * DIFF_GAIN, 0, 1)
    rows = []
    for start in range(0, len(ref), COLUMNS):
        rows += [ref[start : start + COLUMNS], art[start : start + COLUMNS], diff[start : start + COLUMNS]]
    grid = _tile(rows)
    scale = max(1, 64 // ref.shape[-1])  # small samples (32x32 digits) are hard to see at 1:1
    grid = grid.repeat(scale, 0).repeat(scale, 1)
    return write_png(path, np.round(grid * 255).astype(np.uint8))


def _tile(rows: list[np.ndarray]) -> np.ndarray:
    """Rows of [n, C, H, W] images -> one [rows*(H+PAD)+PAD, COLUMNS*(W+PAD)+PAD(, 3)] canvas."""
    channels, height, width = rows[0].shape[1:]
    canvas = np.full((len(rows) * (height + PAD) + PAD, COLUMNS * (width + PAD) + PAD, channels), 0.5)  # gray grid lines
    for r, images in enumerate(rows):
        for c, image in enumerate(images):
            top, left = PAD + r * (height + PAD), PAD + c * (width + PAD)
            canvas[top : top + height, left : left + width] = image.transpose(1, 2, 0)
    return canvas[..., 0] if channels == 1 else canvas
