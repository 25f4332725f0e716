"""Train a VAE on scikit-learn's bundled digits and save its decoder's weights.

    python examples/digits-vae/train.py [--epochs N] [--beta B] [--out DIR]

Writes decoder.safetensors (decoder only; the encoder is discarded) and samples.png (8x8 grid
decoded from fixed prior samples z ~ N(0, I), not reconstructions) into --out. CPU only, seeded.
"""

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # model.py here, digits_common.py one up
from digits_common import load_data, save_grid  # noqa: E402
from model import DigitsVAEDecoder, DigitsVAEEncoder  # noqa: E402

LATENT_DIM = 16
BATCH = 64


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
