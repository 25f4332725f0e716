"""Rewrite a stride-1 convolution with few output channels (the image head of most generators: a 3x3 or
7x7 conv to 1 or 3 channels) into a strided convolution that computes a block of output pixels per
position as channels, then a pixel shuffle.

ONNX Runtime's int8 matrix products fill output channels in blocks of 16 (rewrites/phases.py), so a conv
to 1 channel costs as much as one to 16. Computing an f x f block of outputs per position (f*f*C
channels) from an (f+k-1)-wide window at stride f does (f+k-1)^2 / (f^2 k^2) times the MACs per output
pixel but fills the blocks; `block_factor` picks the f with the least padded work (f=2 for docs/architecture.md's
7x7 conv to 3 channels, f=4 for a 3x3 conv to 1 channel). Exact: the kernel is copied into place.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from compressor.rewrites.graph import (
    finish,
    input_shape,
    replace_module,
    single_calls,
    traced_with_shapes,
)
from compressor.rewrites.phases import padded_channels

BLOCK_FACTORS = (1, 2, 4, 8)


class BlockedConv2d(nn.Module):
    """Conv2d(k x k, stride 1, zero padding p) as Conv2d((f+k-1) x (f+k-1), stride f, padding p) + pixel shuffle(f),
    for an output size divisible by f: 'same' convs (p = k // 2) and the 'valid' ones (p = 0) that follow an
    explicit reflection padding in ResNet generators."""

    fx_leaf = True  # see rewrites/graph.py

    def __init__(self, layer: nn.Conv2d, factor: int) -> None:
        super().__init__()
        self.factor = factor
        out_channels, in_channels, size, _ = layer.weight.shape
        window = factor + size - 1
        self.conv = nn.Conv2d(in_channels, factor * factor * out_channels, window, stride=factor, padding=_padding(layer),
                              bias=layer.bias is not None)
        with torch.no_grad():
            self.conv.weight.zero_()
            for p in range(factor):
                for q in range(factor):
                    # pixel_shuffle(f) reads channel c * f^2 + (p * f + q) as output (f*I + p, f*J + q) of channel c,
                    # whose k x k window starts p rows and q columns into the block's window.
                    self.conv.weight[p * factor + q :: factor * factor, :, p : p + size, q : q + size] = layer.weight
            if layer.bias is not None:
                self.conv.bias.copy_(layer.bias.repeat_interleave(factor * factor))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.conv(x), self.factor)


def narrow_conv_to_blocks(model: nn.Module, example: tuple) -> tuple[nn.Module, list[str]]:
    """Replace each single-use stride-1 'same' conv whose cheapest block factor (for the input size in
    `example`) is above 1."""
    graph_module = traced_with_shapes(model, example)
    changed = []
    for node, layer in single_calls(graph_module, _rewritable):
        shape = input_shape(node)
        size, padding = layer.kernel_size[0], _padding(layer)
        output_size = tuple(extent + 2 * padding - size + 1 for extent in shape[2:]) if shape else None
        factor = block_factor(layer.out_channels, size, output_size)
        if factor > 1:
            replace_module(graph_module, node.target, BlockedConv2d(layer, factor))
            changed.append(node.target)
    return finish(graph_module), changed


def block_factor(out_channels: int, size: int, output_size: tuple[int, int] | None) -> int:
    """The block size f with the least padded MACs per output pixel, (f+k-1)^2 * padded(f^2 C) / f^2, among
    those that divide the output size; 1 when that size is unknown or no f at least halves the work
    (the cost model is rough, and blocks cost weights: (f+k-1)^2 f^2 / k^2 times as many)."""

    def cost(f: int) -> float:
        return (f + size - 1) ** 2 * padded_channels(f * f * out_channels) / (f * f)

    if output_size is None:
        return 1
    usable = [f for f in BLOCK_FACTORS if all(extent % f == 0 for extent in output_size)]
    best = min(usable, key=lambda f: (cost(f), f))
    return best if cost(best) <= cost(1) / 2 else 1


def _padding(layer: nn.Conv2d) -> int:
    return layer.kernel_size[0] // 2 if layer.padding == "same" else layer.padding[0]


def _rewritable(module: nn.Module) -> bool:
    size = module.kernel_size[0] if isinstance(module, nn.Conv2d) else 0
    return (
        type(module) is nn.Conv2d
        and module.kernel_size == (size, size)
        and size % 2 == 1
        and module.stride == (1, 1)
        and (module.padding == "same" or (isinstance(module.padding, tuple) and module.padding[0] == module.padding[1]))
        and module.dilation == (1, 1)
        and module.groups == 1
        and module.padding_mode == "zeros"
    )
