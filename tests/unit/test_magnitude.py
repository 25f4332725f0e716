"""Magnitude pruning: unstructured (global and per layer), the 2:4 pattern, the cubic schedule, and masks that
survive training."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from pydantic import ValidationError

from compressor.pruning.magnitude import (
    apply_masks,
    is_two_four,
    magnitude_masks,
    make_permanent,
    prunable_layers,
    schedule,
    two_four_layers,
)
from compressor.stages.prune_magnitude import MagnitudePruneConfig
from compressor.testing.models import ResnetGenerator, UNetGenerator, randomized


def _sparsity(module: nn.Module) -> float:
    return float((module.weight == 0).float().mean())


def test_global_scope_meets_the_sparsity_overall_and_cuts_layers_unevenly():
    model = randomized(UNetGenerator())
    layers, _ = prunable_layers(model, "unstructured")
    apply_masks(layers, magnitude_masks(layers, 0.6, "global", "unstructured"))
    make_permanent(layers)
    total = sum(m.weight.numel() for m in layers.values())
    overall = sum(_sparsity(m) * m.weight.numel() for m in layers.values()) / total
    assert overall == pytest.approx(0.6, abs=0.01)
    per_layer = [_sparsity(m) for m in layers.values()]
    assert max(per_layer) - min(per_layer) > 0.1  # one threshold: layers of small weights lose more
    assert not any(hasattr(m, "weight_orig") for m in layers.values())  # the masks' reparametrization is gone


def test_layer_scope_cuts_each_layer_by_the_same_fraction():
    model = randomized(UNetGenerator())
    layers, _ = prunable_layers(model, "unstructured")
    apply_masks(layers, magnitude_masks(layers, 0.5, "layer", "unstructured"))
    assert all(_sparsity(m) == pytest.approx(0.5, abs=0.02) for m in layers.values())


def test_two_four_zeroes_two_of_every_four_input_channels_where_tensorrt_can_use_it():
    model = randomized(ResnetGenerator())
    layers, left = prunable_layers(model, "2:4")
    assert layers and all(isinstance(m, (nn.Conv2d, nn.Linear)) for m in layers.values())
    assert any("ConvTranspose2d" in why for why in left.values())  # TensorRT's sparse kernels: conv and linear only
    assert any("not a multiple of 4" in why for why in left.values())  # the RGB input conv (3 channels)
    apply_masks(layers, magnitude_masks(layers, 0.5, "global", "2:4"))
    make_permanent(layers)
    assert all(is_two_four(m.weight) for m in layers.values())
    assert set(two_four_layers(model)) == set(layers)
    assert all(_sparsity(m) == pytest.approx(0.5, abs=1e-6) for m in layers.values())


def test_is_two_four_rejects_a_run_with_one_zero():
    weight = torch.ones(2, 8)
    weight[:, ::2] = 0
    assert is_two_four(weight)
    weight[1, 0] = 1.0
    assert not is_two_four(weight)


def test_the_cubic_schedule_cuts_most_first_and_ends_at_the_sparsity():
    steps = schedule(0.8, 4)
    assert steps[-1] == pytest.approx(0.8) and steps == sorted(steps)
    assert steps[0] > 0.8 / 4  # more than a linear schedule's first step


def test_masked_weights_stay_zero_while_training():
    model = randomized(UNetGenerator())
    layers, _ = prunable_layers(model, "unstructured")
    apply_masks(layers, magnitude_masks(layers, 0.5, "global", "unstructured"))
    zero = {name: (m.weight == 0).clone() for name, m in layers.items()}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        loss = model(torch.randn(2, 3, 32, 32)).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(bool((m.weight[zero[name]] == 0).all()) for name, m in layers.items())


@pytest.mark.parametrize("settings, message", [
    ({}, "needs a sparsity"),
    ({"pattern": "2:4", "sparsity": 0.3}, "drop sparsity"),
    ({"pattern": "2:4", "iterations": 3}, "apply to unstructured pruning only"),
    ({"sparsity": 1.0}, "less than 1"),
])
def test_magnitude_settings_are_checked(settings, message):
    with pytest.raises(ValidationError, match=message):
        MagnitudePruneConfig(method="magnitude", **settings)


def test_the_next_mask_reads_the_trained_weights_not_the_last_forward_passes():
    layer = nn.Linear(4, 1, bias=False)
    layer.weight.data = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    layers = {"layer": layer}
    apply_masks(layers, magnitude_masks(layers, 0.25, "global", "unstructured"))  # drops 1.0
    layer(torch.ones(1, 4))  # `weight` as this forward pass computed it
    layer.weight_orig.data[0, 3] = 0.5  # an optimizer step shrinks the largest weight; no forward pass since
    mask = magnitude_masks(layers, 0.5, "global", "unstructured")["layer"]
    assert mask.tolist() == [[0.0, 1.0, 1.0, 0.0]]
