"""2x upsampling layers (ConvTranspose2d(4, 2, 1), nearest Upsample + 3x3 conv) rewritten into stride-1 convs
over the input grid: exact for every shape and form, each form picked where it is cheapest, and only where
the rewrite applies."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from compressor.rewrites import (
    decompose_convtranspose,
    fold_batchnorm,
    upsample_conv_to_convtranspose,
    upsample_conv_to_phases,
)
from compressor.rewrites.convtranspose import convtranspose_phases, leftover_convtransposes, phases_as_convtranspose
from compressor.rewrites.phases import (
    BlockConv2d,
    PhaseConv2d,
    SubPixelConv2d,
    upsampling_module,
)
from compressor.rewrites.upsample_conv import conv3x3_after_upsample_phases
from compressor.testing.models import TinyDecoder, TinyGenerator, randomized

# Every form on input sizes it accepts (the block form needs even sizes; upsampling_module knows).
FORMS_AND_SIZES = [
    (form, size)
    for form in (PhaseConv2d, SubPixelConv2d, BlockConv2d)
    for size in [(4, 4), (6, 2), (5, 7), (1, 1)]
    if form is not BlockConv2d or (size[0] % 2 == 0 and size[1] % 2 == 0)
]


@pytest.mark.parametrize("form,size", FORMS_AND_SIZES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("relu", [True, False])
def test_every_form_equals_the_transposed_conv(form, size, bias, relu):
    height, width = size
    torch.manual_seed(0)
    layer = nn.ConvTranspose2d(6, 5, 4, 2, 1, bias=bias)
    x = torch.randn(3, 6, height, width)
    expected = layer(x).relu() if relu else layer(x)
    actual = form(convtranspose_phases(layer), nn.ReLU() if relu else None)(x)
    assert actual.shape == (3, 5, 2 * height, 2 * width)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("form,size", FORMS_AND_SIZES)
@pytest.mark.parametrize("bias", [True, False])
def test_every_form_equals_upsample_then_conv3x3(form, size, bias):
    height, width = size
    torch.manual_seed(1)
    conv = nn.Conv2d(6, 5, 3, padding=1, bias=bias)
    x = torch.randn(3, 6, height, width)
    expected = conv(nn.functional.interpolate(x, scale_factor=2, mode="nearest"))
    actual = form(conv3x3_after_upsample_phases(conv))(x)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "out_channels,input_size,expected",
    [
        (1, (8, 8), BlockConv2d),  # an image head: 16 channels per position instead of 4 or 1
        (2, (8, 8), BlockConv2d),
        (1, (5, 8), SubPixelConv2d),  # odd size: no stride-2 blocks
        (1, None, SubPixelConv2d),  # size unknown
        (3, (8, 8), SubPixelConv2d),  # RGB: 12 channels fill a block of 16
        (4, (8, 8), SubPixelConv2d),
        (8, (8, 8), PhaseConv2d),  # wide layers: only the useful MACs
        (64, (8, 8), PhaseConv2d),
    ],
)
def test_the_form_is_the_one_with_least_padded_work(out_channels, input_size, expected):
    phases = convtranspose_phases(nn.ConvTranspose2d(4, out_channels, 4, 2, 1))
    assert type(upsampling_module(phases, None, input_size)) is expected


def test_generator_rewrite_is_exact_and_picks_the_form_by_output_channels():
    model = randomized(TinyGenerator(latent_dim=8, channels=16))
    folded, _ = fold_batchnorm(model)
    z = torch.randn(4, 8)
    rewritten, changed = decompose_convtranspose(folded, (z[:2],))
    assert changed == ["blocks.2", "blocks.5"]
    assert isinstance(rewritten.get_submodule("blocks.2"), PhaseConv2d)  # 8 output channels
    assert isinstance(rewritten.get_submodule("blocks.5"), BlockConv2d)  # 1 output channel (image), 8x8 input
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in rewritten.modules())
    torch.testing.assert_close(rewritten(z), model(z), rtol=1e-5, atol=1e-5)


def test_decoder_upsample_conv_rewrite_is_exact_and_drops_the_upsamples():
    model = randomized(TinyDecoder(latent_dim=4, channels=16))
    z = torch.randn(4, 4)
    rewritten, changed = upsample_conv_to_phases(model, (z[:2],))
    assert changed == ["blocks.1", "blocks.5"]
    assert isinstance(rewritten.get_submodule("blocks.1"), PhaseConv2d)  # 8 output channels
    assert isinstance(rewritten.get_submodule("blocks.5"), BlockConv2d)  # the 1-channel head, 8x8 input
    assert not any(isinstance(m, nn.Upsample) for m in rewritten.modules())
    torch.testing.assert_close(rewritten(z), model(z), rtol=1e-5, atol=1e-5)


def test_decoder_upsample_conv_becomes_one_exact_convtranspose_per_pair():
    model = randomized(TinyDecoder(latent_dim=4, channels=16))
    z = torch.randn(4, 4)
    rewritten, changed = upsample_conv_to_convtranspose(model, (z[:2],))
    assert changed == ["blocks.1", "blocks.5"]
    layer = rewritten.get_submodule("blocks.1")
    assert type(layer) is nn.ConvTranspose2d and (layer.kernel_size, layer.stride, layer.padding) == ((4, 4), (2, 2), (1, 1))
    assert not any(isinstance(m, nn.Upsample) for m in rewritten.modules())
    torch.testing.assert_close(rewritten(z), model(z), rtol=1e-5, atol=1e-5)


def test_phases_as_convtranspose_inverts_convtranspose_phases():
    torch.manual_seed(0)
    layer = nn.ConvTranspose2d(6, 5, 4, 2, 1)
    rebuilt = phases_as_convtranspose(convtranspose_phases(layer))
    torch.testing.assert_close(rebuilt.weight, layer.weight)
    torch.testing.assert_close(rebuilt.bias, layer.bias)


class _UpsampleConv(nn.Module):
    def __init__(self, upsample: nn.Module, conv: nn.Module, relu: bool = False, conv_twice: bool = False):
        super().__init__()
        self.upsample, self.conv, self.relu, self.conv_twice = upsample, conv, relu, conv_twice

    def forward(self, x):
        y = self.conv(self.upsample(x))
        if self.conv_twice:
            y = y + self.conv(self.upsample(x))
        return torch.relu(y) if self.relu else y


def test_a_relu_after_an_upsample_conv_moves_inside():
    model = _UpsampleConv(nn.Upsample(scale_factor=2), nn.Conv2d(4, 8, 3, padding=1), relu=True).eval()
    x = torch.randn(2, 4, 4, 4)
    rewritten, changed = upsample_conv_to_phases(model, (x,))
    assert changed == ["conv"] and isinstance(rewritten.conv.activation, nn.ReLU)
    torch.testing.assert_close(rewritten(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "model",
    [
        _UpsampleConv(nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(4, 8, 3, padding=1)),
        _UpsampleConv(nn.Upsample(scale_factor=3), nn.Conv2d(4, 8, 3, padding=1)),
        _UpsampleConv(nn.Upsample(scale_factor=2), nn.Conv2d(4, 8, 3, padding=0)),
        _UpsampleConv(nn.Upsample(scale_factor=2), nn.Conv2d(4, 8, 5, padding=2)),
        _UpsampleConv(nn.Upsample(scale_factor=2), nn.Conv2d(4, 8, 3, padding=1, stride=2)),
        _UpsampleConv(nn.Upsample(scale_factor=2), nn.Conv2d(4, 8, 3, padding=1), conv_twice=True),
    ],
    ids=["bilinear", "scale3", "no-padding", "kernel5", "stride2", "conv-called-twice"],
)
def test_other_upsample_conv_pairs_are_left_alone(model):
    model = model.eval()
    x = torch.randn(2, 4, 4, 4)
    rewritten, changed = upsample_conv_to_phases(model, (x,))
    assert changed == []
    torch.testing.assert_close(rewritten(x), model(x))


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
        nn.ConvTranspose2d(4, 4, 3, 2, 1),
        nn.ConvTranspose2d(4, 6, 3, 2, 1, output_padding=1),  # ResNet generators' upsampler
        nn.ConvTranspose2d(4, 4, 4, 2, 1, output_padding=1),
        nn.ConvTranspose2d(4, 3, 5, 3, 2, output_padding=2),
        nn.ConvTranspose2d(4, 2, 2, 2, 0),
        nn.ConvTranspose2d(4, 4, 7, 4, 3, bias=False),
    ],
    ids=["k3s2p1", "k3s2p1op1", "k4s2p1op1", "k5s3p2op2", "k2s2p0", "k7s4p3-nobias"],
)
def test_every_strided_transposed_conv_gets_an_exact_conv_form(layer):
    model = nn.Sequential(layer, nn.ReLU()).eval()
    nn.init.uniform_(layer.weight, -1, 1)
    rewritten, changed = decompose_convtranspose(model, (torch.randn(2, 4, 5, 6),))
    assert changed == ["0"]
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in rewritten.modules())
    assert not any(isinstance(m, nn.ReLU) and name != "0.activation" for name, m in rewritten.named_modules())
    for size in [(5, 6), (1, 1), (8, 3)]:  # the form depends on no particular input size
        x = torch.randn(3, 4, *size)
        torch.testing.assert_close(rewritten(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "layer, reason",
    [
        (nn.ConvTranspose2d(4, 4, 4, 1, 0), "stride 1"),
        (nn.ConvTranspose2d(4, 4, 4, 2, 1, groups=2), "groups=2"),
        (nn.ConvTranspose2d(4, 4, 3, 2, 1, dilation=2), "dilation"),
        (nn.ConvTranspose2d(4, 4, 3, (2, 1), 1), "differs per axis"),
    ],
    ids=["stride1", "groups", "dilation", "anisotropic-stride"],
)
def test_other_transposed_convs_are_left_alone_with_a_reason(layer, reason):
    model = nn.Sequential(layer).eval()
    rewritten, changed = decompose_convtranspose(model)
    assert changed == []
    assert reason in leftover_convtransposes(rewritten)["0"]
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(rewritten(x), model(x))


def test_a_transposed_conv_called_twice_is_listed_with_why():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.ConvTranspose2d(4, 4, 3, 2, 1, output_padding=1)

        def forward(self, x):
            return self.up(x) + self.up(x.flip(-1))

    rewritten, changed = decompose_convtranspose(Twice().eval())
    assert changed == [] and "more than one place" in leftover_convtransposes(rewritten)["up"]


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
