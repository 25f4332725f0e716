"""`inspect`'s numbers: MACs per layer match the textbook formulas, params and output shapes are per layer."""

from __future__ import annotations

import torch.nn as nn

from compressor.modelcard import ModelCard
from compressor.summary import summarize
from compressor.testing.models import TinyGenerator, card_dict


def test_macs_params_and_shapes_of_the_tiny_generator():
    model = TinyGenerator(latent_dim=8, channels=16).eval()
    card = ModelCard.model_validate(card_dict("tiny", 8))
    summary = summarize(model, card)
    layers = {row["name"]: row for row in summary["layers"]}
    assert layers["project"]["macs"] == 8 * 256
    # ConvTranspose2d(16 -> 8, k4, s2) on 4x4: every input pixel scatters C_in*C_out*k*k MACs.
    assert layers["blocks.2"]["macs"] == 4 * 4 * 16 * 8 * 4 * 4
    assert layers["blocks.5"]["macs"] == 8 * 8 * 8 * 1 * 4 * 4
    assert layers["blocks.5"]["output_shape"] == [1, 1, 16, 16]
    assert layers["blocks.2"]["params"] == 16 * 8 * 16 + 8
    assert summary["parameters"] == sum(p.numel() for p in model.parameters())
    assert summary["macs_per_sample"] == sum(row["macs"] for row in summary["layers"])
    batchnorm_buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    assert summary["fp32_bytes"] == summary["parameters"] * 4 + batchnorm_buffers


def test_layers_are_leaves_only():
    model = TinyGenerator().eval()
    summary = summarize(model, ModelCard.model_validate(card_dict("tiny", 8)))
    assert all(not list(model.get_submodule(row["name"]).children()) for row in summary["layers"])
    assert isinstance(model.get_submodule(summary["layers"][0]["name"]), nn.Linear)
