"""Train a VAE on scikit-learn's bundled digits and save its decoder's weights.

    python examples/digits-vae/train.py [--epochs N] [--beta B] [--out DIR]

Writes decoder.safetensors (decoder only; the encoder is discarded) and samples.png (8x8 grid
decoded from fixed prior samples z ~ N(0, I), not reconstructions) into --out. CPU only, seeded.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from model import DigitsVAEDecoder, DigitsVAEEncoder  # noqa: E402

LATENT_DIM = 16
BATCH = 64


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--beta", type=float, default=1.0, help="weight of the KL term")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(2)
    start = time.perf_counter()
    data = load_data()
    enc, dec = DigitsVAEEncoder(LATENT_DIM, 128), DigitsVAEDecoder(LATENT_DIM, 128)
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-3)
    order = torch.Generator().manual_seed(0)  # data order independent of the model's RNG use

    for epoch in range(args.epochs):
        perm = torch.randperm(len(data), generator=order)
        totals = torch.zeros(2)
        for i in range(0, len(data), BATCH):
            x = data[perm[i : i + BATCH]]
            mu, logvar = enc(x)
            z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()  # reparameterisation trick
            # Per-image sums (not means) keep recon and KL on the scale of a proper ELBO,
            # so beta alone sets the trade-off between sharp samples and a usable prior.
            recon = F.mse_loss(dec(z), x, reduction="sum") / len(x)
            kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum() / len(x)
            loss = recon + args.beta * kl
            opt.zero_grad()
            loss.backward()
            opt.step()
            totals += torch.tensor([recon.item(), kl.item()]) * len(x)
        recon_avg, kl_avg = (totals / len(data)).tolist()
        elapsed = time.perf_counter() - start
        print(f"epoch {epoch + 1:3d}  recon {recon_avg:.2f}  kl {kl_avg:.2f}  {elapsed:.0f}s", flush=True)

    dec.eval()
    args.out.mkdir(parents=True, exist_ok=True)
    save_file(dec.state_dict(), str(args.out / "decoder.safetensors"))
    with torch.no_grad():
        prior = torch.randn(64, LATENT_DIM, generator=torch.Generator().manual_seed(1234))
        save_grid(args.out / "samples.png", dec(prior))
    params = sum(p.numel() for p in dec.parameters())
    print(f"done in {time.perf_counter() - start:.0f}s, decoder params {params}")


if __name__ == "__main__":
    main()
