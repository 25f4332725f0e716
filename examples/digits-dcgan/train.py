"""Train the DigitsGenerator as a DCGAN on scikit-learn's bundled digits and save its weights.

    python examples/digits-dcgan/train.py [--epochs N] [--out DIR]

Writes generator.safetensors (eval-ready: BatchNorm running stats recalibrated) and samples.png
(8x8 grid from fixed latents, generator in eval mode) into --out. CPU only, fully seeded.
"""

import argparse
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # model.py here, digits_common.py one up
from digits_common import load_data, save_grid  # noqa: E402
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
