"""Rewrites that hold only at particular input shapes: a ConvTranspose2d on a 1x1 input as Linear + reshape,
ReflectionPad2d as two gathers, a Linear viewed as a feature map written channels-last, a conv to few
channels computing blocks of pixels. Each is exact, applies only where its shape condition holds, and
leaves an ONNX graph without the op ORT runs slowly or only in float."""

from __future__ import annotations

import onnx
import pytest
import torch
import torch.nn as nn

from compressor.modelcard import ModelCard
from compressor.rewrites import (
    convtranspose_1x1_to_linear,
    fold_batchnorm,
    linear_channels_last,
    linear_to_convtranspose,
    narrow_conv_to_blocks,
    narrow_convtranspose_to_conv,
    reflection_pad_to_gather,
)
from compressor.rewrites.convtranspose_1x1 import LinearConvTranspose1x1
from compressor.rewrites.linear_channels_last import ChannelsLastLinear
from compressor.rewrites.linear_convtranspose import ConvTransposeLinear
from compressor.rewrites.narrow_conv import BlockedConv2d, block_factor
from compressor.rewrites.reflection_pad import GatherReflectionPad2d
from compressor.runtimes.onnx.export import export_onnx
from compressor.testing.models import TinyDecoder, TinyGenerator, randomized


class ClassicDCGAN(nn.Module):
    """The original DCGAN generator layout: z viewed as nz x 1 x 1, then ConvTranspose2d(nz, C, 4, 1, 0)."""

    def __init__(self, latent_dim: int = 8, bias: bool = False) -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, 16, 4, 1, 0, bias=bias), nn.BatchNorm2d(16), nn.ReLU(),
            nn.ConvTranspose2d(16, 1, 4, 2, 1), nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.blocks(z.view(z.shape[0], -1, 1, 1))


class ResidualImageNet(nn.Module):
    """CycleGAN-style: reflection-padded 7x7 stem, a reflection-padded 3x3 residual block."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(3, 8, 7), nn.ReLU())
        self.block = nn.Sequential(nn.ReflectionPad2d((1, 2, 0, 1)), nn.Conv2d(8, 8, (2, 4)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        return h + self.block(h)


def _seeded(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for parameter in model.parameters():
        nn.init.normal_(parameter, std=0.3)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2)
    return model.eval()


@pytest.mark.parametrize("bias", [True, False])
def test_convtranspose_on_1x1_input_becomes_an_exact_linear(bias):
    model = _seeded(ClassicDCGAN(bias=bias))
    z = torch.randn(5, 8)
    rewritten, changed = convtranspose_1x1_to_linear(model, (z[:2],))
    assert changed == ["blocks.0"]  # blocks.3 reads an 4x4 map: not this rewrite's business
    assert isinstance(rewritten.get_submodule("blocks.0"), LinearConvTranspose1x1)
    torch.testing.assert_close(rewritten(z), model(z), rtol=1e-5, atol=1e-5)


def test_convtranspose_on_a_larger_input_is_left_alone():
    model = nn.Sequential(nn.ConvTranspose2d(4, 4, 4, 1, 0)).eval()
    _, changed = convtranspose_1x1_to_linear(model, (torch.randn(2, 4, 2, 2),))
    assert changed == []


@pytest.mark.parametrize("height,width", [(16, 16), (9, 13)])
def test_reflection_pad_becomes_exact_gathers(height, width):
    model = _seeded(ResidualImageNet())
    x = torch.randn(3, 3, height, width)
    rewritten, changed = reflection_pad_to_gather(model, (x[:2],))
    assert changed == ["stem.0", "block.0"]
    assert all(isinstance(rewritten.get_submodule(name), GatherReflectionPad2d) for name in changed)
    torch.testing.assert_close(rewritten(x), model(x), rtol=1e-5, atol=1e-5)  # conv rounding only (layout)


def test_rewritten_exports_have_no_reflect_pad_or_convtranspose(tmp_path):
    card = ModelCard.model_validate({
        "name": "n", "family": "other",
        "inputs": {"x": {"shape": [3, 16, 16], "prior": "normal"}}, "outputs": {"y": {"shape": [8, 16, 16]}},
    })
    x = torch.randn(2, 3, 16, 16)
    rewritten, _ = reflection_pad_to_gather(_seeded(ResidualImageNet()), (x,))
    graph = onnx.load(str(export_onnx(rewritten, card, tmp_path / "pad.onnx", opset=20))).graph
    assert not [n for n in graph.node if n.op_type == "Pad"] and any(n.op_type == "Gather" for n in graph.node)

    card = ModelCard.model_validate({
        "name": "g", "family": "gan",
        "inputs": {"z": {"shape": [8], "prior": "normal"}}, "outputs": {"image": {"shape": [1, 8, 8]}},
    })
    rewritten, _ = convtranspose_1x1_to_linear(_seeded(ClassicDCGAN()), (torch.randn(2, 8),))
    graph = onnx.load(str(export_onnx(rewritten, card, tmp_path / "dcgan.onnx", opset=20))).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("ConvTranspose") == 1 and "Gemm" in ops  # the 4x4 -> 8x8 layer is decompose_convtranspose's


@pytest.mark.parametrize("model_class", [TinyGenerator, TinyDecoder])
def test_linear_viewed_as_a_feature_map_is_written_channels_last(model_class):
    model = randomized(model_class())
    folded, _ = fold_batchnorm(model)
    z = torch.randn(5, model.project.in_features)
    rewritten, changed = linear_channels_last(folded, (z[:2],))
    assert changed == ["project"] and isinstance(rewritten.project, ChannelsLastLinear)
    torch.testing.assert_close(rewritten(z), model(z), rtol=1e-5, atol=1e-5)
    called = [node.target for node in rewritten.graph.nodes if node.op in ("call_module", "call_method")]
    assert "view" not in called  # the reshape moved inside
    if model_class is TinyGenerator:  # the ReLU after the (folded) BatchNorm moved inside too
        assert isinstance(rewritten.project.activation, nn.ReLU) and "blocks.1" not in called


class _LinearThen(nn.Module):
    def __init__(self, shape):
        super().__init__()
        self.linear, self.shape = nn.Linear(4, 24), shape

    def forward(self, z):
        return self.linear(z).view(z.shape[0], *self.shape)


@pytest.mark.parametrize("shape", [(24,), (6, 4), (2, 3, 2, 2)], ids=["2d", "3d", "5d"])
def test_a_linear_reshaped_to_anything_but_nchw_is_left_alone(shape):
    model = _LinearThen(shape).eval()
    z = torch.randn(3, 4)
    _, changed = linear_channels_last(model, (z[:2],))
    assert changed == []


@pytest.mark.parametrize(
    "out_channels,kernel,size,factor",
    [(1, 3, (32, 32), 4), (3, 7, (64, 64), 2), (1, 3, (30, 30), 2), (64, 3, (32, 32), 1), (8, 3, (32, 32), 1), (1, 3, None, 1)],
    ids=["gray-head", "rgb-7x7-head", "size-not-divisible-by-4", "wide", "not-worth-it", "size-unknown"],
)
def test_block_factor_follows_the_padded_work(out_channels, kernel, size, factor):
    assert block_factor(out_channels, kernel, size) == factor


@pytest.mark.parametrize("out_channels,kernel,factor", [(1, 3, 4), (3, 7, 2), (2, 5, 4), (1, 1, 2)])
def test_blocked_conv_equals_the_conv(out_channels, kernel, factor):
    torch.manual_seed(0)
    layer = nn.Conv2d(6, out_channels, kernel, padding=kernel // 2)
    x = torch.randn(2, 6, 16, 8)
    torch.testing.assert_close(BlockedConv2d(layer, factor)(x), layer(x), rtol=1e-5, atol=1e-5)


def test_image_head_conv_becomes_blocks_and_others_stay():
    model = nn.Sequential(nn.Conv2d(4, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 1, 3, padding=1), nn.Conv2d(1, 1, 3, stride=2, padding=1)).eval()
    x = torch.randn(2, 4, 16, 16)
    rewritten, changed = narrow_conv_to_blocks(model, (x,))
    assert changed == ["2"] and isinstance(rewritten.get_submodule("2"), BlockedConv2d)  # the stride-2 conv stays
    torch.testing.assert_close(rewritten(x), model(x), rtol=1e-5, atol=1e-5)


def test_a_valid_conv_after_reflection_padding_is_blocked_exactly():
    # The ResNet generator's head: ReflectionPad2d(3) then a 7x7 conv with no padding to 3 channels.
    model = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(16, 3, 7), nn.Tanh()).eval()
    x = torch.randn(2, 16, 32, 32)
    rewritten, changed = narrow_conv_to_blocks(model, (x,))
    assert changed == ["1"]
    assert isinstance(rewritten.get_submodule("1"), BlockedConv2d)
    y = torch.randn(3, 16, 32, 32)
    torch.testing.assert_close(rewritten(y), model(y), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spatial_bias", [True, False], ids=["bias-varies-by-position", "bias-per-channel"])
@pytest.mark.parametrize("model_class", [TinyGenerator, TinyDecoder])
def test_a_projection_linear_becomes_an_exact_convtranspose_with_one_scale_per_channel(model_class, spatial_bias):
    model = randomized(model_class())
    if not spatial_bias:  # a bias constant over each channel's positions needs no added constant
        with torch.no_grad():
            channels = model.project.out_features // 16
            model.project.bias.copy_(torch.randn(channels).repeat_interleave(16))
    z = torch.randn(5, model.project.in_features)
    rewritten, changed = linear_to_convtranspose(model, (z[:2],))
    assert changed == ["project"] and isinstance(rewritten.project, ConvTransposeLinear)
    conv = rewritten.project.conv
    assert conv.out_channels == model.project.out_features // 16 and conv.stride == conv.kernel_size == (4, 4)
    assert (rewritten.project.spatial_bias is not None) == spatial_bias
    torch.testing.assert_close(rewritten(z), model(z), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(24,), (6, 4), (24, 1, 1), (2, 3, 2, 2)], ids=["2d", "3d", "1x1", "5d"])
def test_a_linear_not_reshaped_to_a_feature_map_stays_a_linear(shape):
    model = _LinearThen(shape).eval()
    _, changed = linear_to_convtranspose(model, (torch.randn(2, 4),))
    assert changed == []


def test_only_a_narrow_convtranspose_head_becomes_a_conv_and_pixel_shuffle():
    model = randomized(TinyGenerator())
    z = torch.randn(5, 8)
    rewritten, changed = narrow_convtranspose_to_conv(model, (z[:2],))
    assert changed == ["blocks.5"]  # 8 -> 1 channels; blocks.2 (16 -> 8) stays a ConvTranspose
    assert isinstance(rewritten.get_submodule("blocks.2"), nn.ConvTranspose2d)
    assert not isinstance(rewritten.get_submodule("blocks.5"), nn.ConvTranspose2d)
    torch.testing.assert_close(rewritten(z), model(z), rtol=1e-5, atol=1e-5)
