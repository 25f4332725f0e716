"""ConvTranspose2d(4, 2, 1) decomposed into stride-1 convs: exact for every shape, and only where it applies."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from compressor.rewrites import decompose_convtranspose, fold_batchnorm
from compressor.rewrites.convtranspose import PhaseConvTranspose2d, SubPixelConvTranspose2d
from compressor.testing.models import TinyGenerator, randomized


@pytest.mark.parametrize("form", [PhaseConvTranspose2d, SubPixelConvTranspose2d])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("height,width", [(4, 4), (5, 7), (1, 1)])
def test_both_forms_equal_the_transposed_conv(form, bias, relu, height, width):
    torch.manual_seed(0)
    layer = nn.ConvTranspose2d(6, 5, 4, 2, 1, bias=bias)
    x = torch.randn(3, 6, height, width)
    expected = layer(x).relu() if relu else layer(x)
    actual = form(layer, nn.ReLU() if relu else None)(x)
    assert actual.shape == (3, 5, 2 * height, 2 * width)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_generator_rewrite_is_exact_and_picks_the_form_by_output_channels():
    model = randomized(TinyGenerator(latent_dim=8, channels=16))
    folded, _ = fold_batchnorm(model)
    rewritten, changed = decompose_convtranspose(folded)
    assert changed == ["blocks.2", "blocks.5"]
    assert isinstance(rewritten.get_submodule("blocks.2"), PhaseConvTranspose2d)  # 8 output channels
    assert isinstance(rewritten.get_submodule("blocks.5"), SubPixelConvTranspose2d)  # 1 output channel (image)
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in rewritten.modules())
    z = torch.randn(4, 8)
    torch.testing.assert_close(rewritten(z), model(z), rtol=1e-5, atol=1e-5)


def test_relu_that_follows_is_applied_per_phase_and_removed_from_the_graph():
    model = randomized(TinyGenerator(latent_dim=8, channels=16))
    rewritten, _ = decompose_convtranspose(fold_batchnorm(model)[0])
    phase = rewritten.get_submodule("blocks.2")
    assert isinstance(phase.activation, nn.ReLU)
    called = [node.target for node in rewritten.graph.nodes if node.op == "call_module"]
    assert "blocks.4" not in called  # the ReLU after the BatchNorm, now inside the phase module


@pytest.mark.parametrize(
    "layer",
    [
        nn.ConvTranspose2d(4, 4, 3, 2, 1),  # other kernel size
        nn.ConvTranspose2d(4, 4, 4, 1, 0),  # stride 1 (the 1x1-input projection)
        nn.ConvTranspose2d(4, 4, 4, 2, 1, output_padding=1),
        nn.ConvTranspose2d(4, 4, 4, 2, 1, groups=2),
    ],
    ids=["kernel3", "stride1", "output-padding", "groups"],
)
def test_other_transposed_convs_are_left_alone(layer):
    model = nn.Sequential(layer).eval()
    rewritten, changed = decompose_convtranspose(model)
    assert changed == []
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(rewritten(x), model(x))


class _Upsampler(nn.Module):
    """One ConvTranspose2d(4, 2, 1) named `up`; subclasses say how forward() uses it."""

    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose2d(4, 8, 4, 2, 1)


class _TwoReaders(_Upsampler):
    def forward(self, x):
        y = self.up(x)
        return torch.relu(y) + y


class _CalledTwice(_Upsampler):
    def forward(self, x):
        return torch.relu(self.up(x)) + self.up(x)  # one call followed by ReLU, one not


class _WithOutputSize(_Upsampler):
    def forward(self, x):
        return self.up(x, output_size=[6, 6])


def test_relu_with_other_readers_stays_outside():
    model = _TwoReaders().eval()
    rewritten, changed = decompose_convtranspose(model)
    assert changed == ["up"] and isinstance(rewritten.up.activation, nn.Identity)
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(rewritten(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model_class", [_CalledTwice, _WithOutputSize])
def test_a_layer_called_twice_or_with_output_size_is_left_alone(model_class):
    model = model_class().eval()
    rewritten, changed = decompose_convtranspose(model)
    assert changed == []
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(rewritten(x), model(x))
