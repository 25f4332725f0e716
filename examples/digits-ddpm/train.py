"""Train a small diffusers UNet2DModel as a DDPM on scikit-learn's bundled digits and save its weights.

    python examples/digits-ddpm/train.py [--steps N] [--out DIR]

Writes unet.safetensors (the exponential moving average of the weights, as DDPM releases do) and
samples.png (8x8 grid sampled with the model card's sampler from fixed seeds) into --out. The noise
schedule and the sampler are the ones compressor.yaml declares. CPU only, fully seeded.
"""

import argparse
import copy
import math
import sys
import time
from functools import partial
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DModel
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]  # digits_common.py one up
from digits_common import load_data, save_grid  # noqa: E402

from compressor.modelcard import load_card  # noqa: E402
from compressor.sampler import sampler_for, torch_call  # noqa: E402

BATCH = 128


def ema_update(ema: torch.nn.Module, model: torch.nn.Module, step: int) -> None:
    """EMA with a warm-up (decay grows from 0.1 to 0.999) so early weights do not linger."""
    decay = min(0.999, (1 + step) / (10 + step))
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p, 1 - decay)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(2)
    start = time.perf_counter()
    card = load_card(HERE / "compressor.yaml")
    data = load_data()
    model = UNet2DModel(**card.kwargs)
    ema = copy.deepcopy(model).requires_grad_(False)
    noise_schedule = DDPMScheduler(**card.sampler.config)  # the training noise schedule the sampler inverts
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    warmup = 100
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps))
    )
    order = torch.Generator().manual_seed(0)  # data order independent of the model's RNG use
    for step in range(args.steps):
        images = data[torch.randint(len(data), (BATCH,), generator=order)]
        noise = torch.randn_like(images)
        t = torch.randint(0, noise_schedule.config.num_train_timesteps, (BATCH,))
        predicted = model(noise_schedule.add_noise(images, noise, t), t).sample
        loss = torch.nn.functional.mse_loss(predicted, noise)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        schedule.step()
        ema_update(ema, model, step)
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {loss.item():.4f}  {time.perf_counter() - start:.0f}s", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    save_file(ema.state_dict(), str(args.out / "unet.safetensors"))
    sampler = sampler_for(card)  # the loop compressor drives the model with
    ema.forward = partial(UNet2DModel.forward, ema, return_dict=False)  # tensors, as compressor calls it
    images = sampler.generate(torch_call(ema.eval()), sampler.start(64, seed=1234), seed=1234)
    save_grid(args.out / "samples.png", torch.from_numpy(images))
    params = sum(p.numel() for p in model.parameters())
    print(f"done in {time.perf_counter() - start:.0f}s, unet params {params}")


if __name__ == "__main__":
    main()
