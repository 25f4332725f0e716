"""Train the DigitsGenerator as a DCGAN on scikit-learn's bundled digits and save its weights.

    python examples/digits-dcgan/train.py [--epochs N] [--out DIR]

Writes generator.safetensors (eval-ready: BatchNorm running stats recalibrated) and samples.png
(8x8 grid from fixed latents, generator in eval mode) into --out. CPU only, fully seeded.
"""

import argparse
import struct
import sys
import time
import zlib
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from sklearn.datasets import load_digits
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from model import DigitsGenerator  # noqa: E402

LATENT_DIM = 64
BATCH = 64


class DigitsDiscriminator(nn.Module):
    """Strided-conv critic for 32x32 images; outputs one logit per image. Training only."""

    def __init__(self, base_channels: int = 64):
        super().__init__()
        c = base_channels
        self.net = nn.Sequential(
            nn.Conv2d(1, c, 4, 2, 1),  # 32 -> 16
            nn.LeakyReLU(0.2),
            nn.Conv2d(c, c * 2, 4, 2, 1),  # 16 -> 8
            nn.BatchNorm2d(c * 2),
            nn.LeakyReLU(0.2),
            nn.Conv2d(c * 2, c * 4, 4, 2, 1),  # 8 -> 4
            nn.BatchNorm2d(c * 4),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(c * 4 * 4 * 4, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


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


@torch.no_grad()
def recalibrate_batchnorm(gen: DigitsGenerator, batches: int = 50) -> None:
    """Replace the EMA running stats with an exact average over fresh prior batches.

    The EMA lags behind the last weight updates; a cumulative average (momentum=None) over the
    final weights gives eval-mode outputs that match what the generator produced in training.
    """
    bns = [m for m in gen.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    gen.train()
    for _ in range(batches):
        gen(torch.randn(256, LATENT_DIM))
    for bn in bns:
        bn.momentum = 0.1  # restore the default so the saved module behaves like a fresh one
    gen.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(2)
    start = time.perf_counter()
    data = load_data()
    gen, disc = DigitsGenerator(LATENT_DIM, 256), DigitsDiscriminator()
    opt_g = torch.optim.Adam(gen.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=2e-4, betas=(0.5, 0.999))
    bce = nn.BCEWithLogitsLoss()
    order = torch.Generator().manual_seed(0)  # data order independent of the model's RNG use

    for epoch in range(args.epochs):
        perm = torch.randperm(len(data), generator=order)
        for i in range(0, len(data) - BATCH + 1, BATCH):  # drop the ragged last batch for BN
            real = data[perm[i : i + BATCH]]
            fake = gen(torch.randn(BATCH, LATENT_DIM))
            # One-sided label smoothing (0.9) keeps the discriminator from saturating early.
            loss_d = bce(disc(real), torch.full((BATCH,), 0.9)) + bce(
                disc(fake.detach()), torch.zeros(BATCH)
            )
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
            loss_g = bce(disc(fake), torch.ones(BATCH))  # non-saturating generator loss
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()
        elapsed = time.perf_counter() - start
        print(f"epoch {epoch + 1:3d}  loss_d {loss_d.item():.3f}  loss_g {loss_g.item():.3f}  {elapsed:.0f}s", flush=True)

    recalibrate_batchnorm(gen)
    args.out.mkdir(parents=True, exist_ok=True)
    save_file(gen.state_dict(), str(args.out / "generator.safetensors"))
    with torch.no_grad():
        fixed = torch.randn(64, LATENT_DIM, generator=torch.Generator().manual_seed(1234))
        save_grid(args.out / "samples.png", gen(fixed))
    params = sum(p.numel() for p in gen.parameters())
    print(f"done in {time.perf_counter() - start:.0f}s, generator params {params}")


if __name__ == "__main__":
    main()
