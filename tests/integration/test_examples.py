"""The committed demo checkpoints load safely, produce images in their declared range, and go through the
whole pipeline with the export matching torch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from compressor import api
from compressor.checkpoint import load_checkpoint, tensor_outputs
from compressor.sampler import sampler_for, torch_call

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DEMOS = ["digits-dcgan", "digits-vae", "digits-ddpm"]
# int8 / fp32 file size. Issue 3 asks 0.30x of the DCGAN; the VAE decoder is small enough (0.14M
# parameters) that int32 biases and per-channel scales weigh more (measured 0.37x); the UNet's GroupNorm and
# attention stay float (measured 0.41x).
SIZE_RATIO = {"digits-dcgan": 0.30, "digits-vae": 0.40, "digits-ddpm": 0.45}
# The rewritten fp32 export vs the checkpoint: the same weights (+ export overhead), except that the VAE's
# Upsample + 3x3 convs become 2x2 phase convs, 16 taps for every 9 (rewrites/upsample_conv.py); the UNet's
# export carries its timestep frequencies and reshape constants (measured 1.21x).
FP32_GROWTH = {"digits-dcgan": 1.2, "digits-vae": 1.2 * 16 / 9, "digits-ddpm": 1.25}


def _real_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """The training data as the scripts see it (32x32 in [-1, 1]), flattened, with the digit labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = torch.nn.functional.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False)
    return (images * 2 - 1).flatten(1), torch.tensor(digits.target)


@pytest.mark.parametrize("name", DEMOS)
def test_demo_checkpoint_is_really_trained(name):
    """Samples (through the card's sampler: 20 DDIM steps for the DDPM) lie close to real digits (an untrained
    network of the same shape lies far away), stay in the declared range, and cover many digit classes."""
    loaded = load_checkpoint(EXAMPLES / name)
    sampler = sampler_for(loaded.card)
    start = sampler.start(64, seed=0)
    untrained = tensor_outputs(type(loaded.model)(**loaded.card.kwargs).eval())
    real, labels = _real_digits()
    images = torch.from_numpy(sampler.generate(torch_call(loaded.model), start, seed=0))
    baseline = torch.from_numpy(sampler.generate(torch_call(untrained), start, seed=0))

    def nearest(samples):
        distances = torch.cdist(samples.flatten(1), real).pow(2) / real.shape[1]  # per-pixel MSE
        return distances.min(dim=1)

    trained_mse, closest = nearest(images)
    low, high = sampler.range
    assert tuple(images.shape[1:]) == (1, 32, 32)
    assert images.min() >= low and images.max() <= high
    assert trained_mse.mean() < 0.15  # measured: about 0.07 for the GAN and the VAE, 0.076 for the DDPM
    assert trained_mse.mean() < 0.3 * nearest(baseline).values.mean()  # untrained: about 0.55
    assert len(set(labels[closest].tolist())) >= 7


@pytest.mark.slow
@pytest.mark.parametrize("name", DEMOS)
def test_demo_runs_end_to_end(name, tmp_path):
    sets = ("target.benchmark.runs=5", "target.benchmark.warmup=2", "stages.ptq.samples=64")
    result = api.run(api.RunConfig(checkpoint=EXAMPLES / name, target="cpu", out=tmp_path, sets=sets))
    fp32, int8 = result.manifest["artifacts"]["model.fp32.onnx"], result.manifest["artifacts"]["model.onnx"]
    assert fp32["parity"]["ok"] and fp32["bytes"] < FP32_GROWTH[name] * result.manifest["model"]["fp32_bytes"]
    assert int8["parity"]["ok"] and int8["parity"]["psnr_db"] >= 30
    assert int8["bytes"] <= SIZE_RATIO[name] * fp32["bytes"]
