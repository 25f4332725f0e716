"""What both demo training scripts share: the digits data set at 32x32, and a PNG grid of samples.

Torch and scikit-learn only; the PNG writer uses zlib + struct so no imaging package is needed.
"""

import struct
import zlib
from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits


def load_data() -> torch.Tensor:
    """Digits as [1797, 1, 32, 32] in [-1, 1] (8x8 values 0..16, bilinear upsampled)."""
    images = torch.tensor(load_digits().images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False)
    return images * 2.0 - 1.0


def write_png(path: Path, pixels: list[list[int]]) -> None:
    """Write 8-bit grayscale rows as a PNG with zlib+struct only (no imaging dependency)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    height, width = len(pixels), len(pixels[0])
    raw = b"".join(b"\x00" + bytes(row) for row in pixels)  # filter type 0 on every row
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9))
    path.write_bytes(png + chunk(b"IEND", b""))


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
    write_png(path, pixels.tolist())
