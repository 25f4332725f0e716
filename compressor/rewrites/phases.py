"""2x upsampling layers as ordinary stride-1 convolutions over the input grid, one per output phase.

Two common upsampling layers of generators have the same structure: ConvTranspose2d(4, 2, 1) and a 2x
nearest Upsample followed by a 3x3 conv. Each output pixel (2i + a, 2j + b) reads a 2x2 window of input
pixels through a fixed 2x2 kernel, one per output phase (a, b): row phase 0 reads input rows (i-1, i),
row phase 1 reads (i, i+1), and likewise for columns. Given those four kernels (`PhaseKernels`), the
layer runs in one of three exact forms; `upsampling_module` picks the cheapest for ONNX Runtime's int8
kernels, whose matrix products fill output channels in blocks of 16 (docs/architecture.md, 'int8 on ORT CPU'):

- `PhaseConv2d`: four 2x2 convs, one per phase, each with its own asymmetric zero padding, executing only
  the useful multiply-accumulates, then an interleave written channels-last so ONNX Runtime's NHWC pass
  cancels its transposes; an activation that follows (ReLU) is applied per phase, where a quantized
  runtime fuses it into the conv. Best for many output channels.
- `SubPixelConv2d`: one 3x3 conv computing the 4 phases as 4*C channels + pixel shuffle(2): 2.25x the
  MACs, but 4x the channels per product (an N=3 product per phase wastes most of each block).
- `BlockConv2d`: one 4x4 stride-2 conv computing a 4x4 block of outputs (16*C channels) per position
  + pixel shuffle(4): 4x the MACs, 16x the channels; for a 1- or 2-channel image head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from compressor.rewrites.graph import output_shape, replace_module, sole_relu_user

# ONNX Runtime's int8 matrix-product kernels produce output channels in blocks of this many (MLAS U8S8).
CHANNEL_BLOCK = 16


@dataclass
class PhaseKernels:
    """kernels[(row, col)]: the (C_out, C_in, 2, 2) kernel of output phase (row, col), its rows and columns
    in the order of the input rows and columns they read; bias: (C_out,) or None."""

    kernels: dict[tuple[int, int], torch.Tensor]
    bias: torch.Tensor | None

    @property
    def channels(self) -> tuple[int, int]:
        out_channels, in_channels = self.kernels[(0, 0)].shape[:2]
        return out_channels, in_channels


class PhaseConv2d(nn.Module):
    """Four 2x2 stride-1 convs (one per output phase) and an interleave."""

    fx_leaf = True  # see rewrites/graph.py

    def __init__(self, phases: PhaseKernels, activation: nn.Module | None = None) -> None:
        super().__init__()
        self.activation = activation if activation is not None else nn.Identity()
        self.phases = nn.ModuleList(_conv(phases.kernels[(a, b)], phases.bias) for a in (0, 1) for b in (0, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = []
        for index, conv in enumerate(self.phases):
            row, col = divmod(index, 2)
            # Zero padding on the side each phase reaches past the input: (left, right, top, bottom).
            padded = F.pad(x, (1 - col, col, 1 - row, row))
            outputs.append(self.activation(conv(padded)).permute(0, 2, 3, 1))  # NHWC, see module docstring
        n, h, w, c = outputs[0].shape
        # cat on the channel axis lays the phases out as stack(dim=3) would, without an Unsqueeze per phase
        # (a copy in ORT)
        interleaved = torch.cat(outputs, dim=3).reshape(n, h, w, 2, 2, c)  # (..., row phase, col phase, C)
        return interleaved.permute(0, 1, 3, 2, 4, 5).reshape(n, 2 * h, 2 * w, c).permute(0, 3, 1, 2)


class SubPixelConv2d(nn.Module):
    """One 3x3 conv computing the four phases as channels + pixel shuffle(2)."""

    fx_leaf = True  # see rewrites/graph.py

    def __init__(self, phases: PhaseKernels, activation: nn.Module | None = None) -> None:
        super().__init__()
        self.activation = activation if activation is not None else nn.Identity()
        out_channels, in_channels = phases.channels
        self.conv = nn.Conv2d(in_channels, 4 * out_channels, 3, padding=1, bias=phases.bias is not None)
        with torch.no_grad():
            self.conv.weight.zero_()
            for (row, col), kernel in phases.kernels.items():
                # pixel_shuffle reads channel c * 4 + (row * 2 + col) as phase (row, col) of channel c.
                self.conv.weight[row * 2 + col :: 4, :, row : row + 2, col : col + 2] = kernel
            if phases.bias is not None:
                self.conv.bias.copy_(phases.bias.repeat_interleave(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.activation(self.conv(x)), 2)


class BlockConv2d(nn.Module):
    """One 4x4 stride-2 conv computing a 4x4 block of outputs per position as channels + pixel shuffle(4).

    Output rows 4I..4I+3 are phases (0, 1, 0, 1) of input rows 2I, 2I, 2I+1, 2I+1, so they read input rows
    2I-1..2I+2: a 4-row window at stride 2 (padding 1), in which output row p's 2x2 kernel starts at row
    p // 2 + p % 2; the same holds for columns.
    """

    fx_leaf = True  # see rewrites/graph.py

    def __init__(self, phases: PhaseKernels, activation: nn.Module | None = None) -> None:
        super().__init__()
        self.activation = activation if activation is not None else nn.Identity()
        out_channels, in_channels = phases.channels
        self.conv = nn.Conv2d(in_channels, 16 * out_channels, 4, stride=2, padding=1, bias=phases.bias is not None)
        with torch.no_grad():
            self.conv.weight.zero_()
            for p in range(4):
                for q in range(4):
                    top, left = p // 2 + p % 2, q // 2 + q % 2
                    # pixel_shuffle(4) reads channel c * 16 + (p * 4 + q) as output (4I + p, 4J + q) of channel c.
                    self.conv.weight[p * 4 + q :: 16, :, top : top + 2, left : left + 2] = phases.kernels[(p % 2, q % 2)]
            if phases.bias is not None:
                self.conv.bias.copy_(phases.bias.repeat_interleave(16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.activation(self.conv(x)), 4)


def install_upsampling(graph_module: fx.GraphModule, node: fx.Node, phases: PhaseKernels, grid: fx.Node) -> None:
    """Put the cheapest form of `phases` in place of the module `node` calls, and move inside it a ReLU that
    alone reads `node`. `grid` is the node whose output is the input grid (its size decides the form)."""
    modules = dict(graph_module.named_modules())
    relu = sole_relu_user(node, modules)
    shape = output_shape(grid)
    form = upsampling_module(phases, nn.ReLU() if relu is not None else None, shape[2:] if shape else None)
    replace_module(graph_module, node.target, form)
    if relu is not None:
        relu.replace_all_uses_with(node)
        graph_module.graph.erase_node(relu)


def upsampling_module(phases: PhaseKernels, activation: nn.Module | None, input_size: tuple[int, int] | None) -> nn.Module:
    """The cheapest exact form for ORT's int8 kernels (see module docstring). The block form needs an even
    input size (its stride-2 windows cover pairs of input rows); `input_size` None means unknown."""
    forms = [PhaseConv2d, SubPixelConv2d]
    if input_size is not None and all(size % 2 == 0 for size in input_size):
        forms.append(BlockConv2d)
    out_channels, _ = phases.channels
    return min(forms, key=lambda form: _cost(form, out_channels))(phases, activation)


def _cost(form: type[nn.Module], out_channels: int) -> int:
    """Multiply-accumulates per input pixel and input channel, output channels rounded up to a block."""
    if form is PhaseConv2d:
        return 4 * 4 * padded_channels(out_channels)  # 4 phases, 2x2 taps, C each
    if form is SubPixelConv2d:
        return 9 * padded_channels(4 * out_channels)  # 3x3 taps, 4C outputs
    return 16 * padded_channels(16 * out_channels) // 4  # 4x4 taps, 16C outputs, on a quarter of the positions


def padded_channels(channels: int) -> int:
    """Output channels rounded up to what ORT's int8 kernels compute anyway."""
    return math.ceil(channels / CHANNEL_BLOCK) * CHANNEL_BLOCK


def _conv(kernel: torch.Tensor, bias: torch.Tensor | None) -> nn.Conv2d:
    out_channels, in_channels = kernel.shape[:2]
    conv = nn.Conv2d(in_channels, out_channels, 2, bias=bias is not None)
    with torch.no_grad():
        conv.weight.copy_(kernel)
        if bias is not None:
            conv.bias.copy_(bias)
    return conv
