"""What both demo training scripts share: the digits data set at 32x32, and a PNG grid of samples.

Torch and scikit-learn only; PNGs are written by compressor's own zlib + struct writer (no imaging package).
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from compressor.release.png import write_png


def load_data() -> torch.Tensor:
    """Digits as [1797, 1, 32, 32] in [-1, 1] (8x8 values 0..16, bilinear upsampled)."""
    images = torch.tensor(load_digits().images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False)
    return images * 2.0 - 1.0


def save_grid(path: Path, images: torch.Tensor, pad: int = 2, scale: int = 2) -> None:
    """Tile [64, 1, H, W] images in [-1, 1] into an 8x8 grid, upscale nearest, save as PNG."""
    n, _, h, w = images.shape
    side = int(n**0.5)
    grid = torch.full((side * (h + pad) + pad, side * (w + pad) + pad), -1.0)
    for i in range(n):
        r, c = divmod(i, side)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        grid[top : top + h, left : left + w] = images[i, 0]
    grid = grid.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
    pixels = ((grid.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    write_png(path, pixels.numpy())
