"""The committed demo checkpoints load safely, produce images in their declared range, and go through the
whole pipeline with the export matching torch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from compressor import api
from compressor.checkpoint import load_checkpoint
from compressor.modelcard import sample_inputs

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DEMOS = ["digits-dcgan", "digits-vae"]


@pytest.mark.parametrize("name", DEMOS)
def test_demo_checkpoint_generates_images_in_range(name):
    loaded = load_checkpoint(EXAMPLES / name)
    low, high = loaded.card.outputs["image"].range
    with torch.no_grad():
        images = loaded.model(*sample_inputs(loaded.card, 8, seed=0).values())
    assert tuple(images.shape[1:]) == loaded.card.outputs["image"].shape
    assert images.min() >= low and images.max() <= high
    # A trained generator gives distinct samples for distinct latents (a collapsed one would not).
    assert images.std(dim=0).mean() > 0.05


@pytest.mark.slow
@pytest.mark.parametrize("name", DEMOS)
def test_demo_runs_end_to_end(name, tmp_path):
    sets = ("target.benchmark.runs=5", "target.benchmark.warmup=2")
    result = api.run(api.RunConfig(checkpoint=EXAMPLES / name, target="cpu", out=tmp_path, sets=sets))
    artifact = result.manifest["artifacts"]["model.onnx"]
    assert artifact["parity"]["ok"]
    assert artifact["bytes"] < 1.2 * result.manifest["model"]["fp32_bytes"]
