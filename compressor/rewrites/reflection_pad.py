"""Rewrite ReflectionPad2d (image-to-image generators: CycleGAN, pix2pix, style transfer) into two index
gathers on a channels-last view.

ONNX Runtime's CPU kernel for Pad(mode=reflect) is slow and float-only (docs/architecture.md, 'int8 on ORT CPU'); a
Gather only moves values, so it runs on int8 tensors between Q/DQ pairs and its channels-last form lets
ORT's NHWC layout pass cancel the transposes around the convolutions. The indices depend on the spatial
size, so this rewrite traces the model with example inputs and applies where that size is fixed.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from compressor.rewrites.graph import (
    finish,
    input_shape,
    replace_module,
    single_calls,
    traced_with_shapes,
)


class GatherReflectionPad2d(nn.Module):
    """ReflectionPad2d for one input height and width, as row and column gathers on an NHWC view."""

    fx_leaf = True  # see rewrites/graph.py

    def __init__(self, padding: tuple[int, int, int, int], height: int, width: int) -> None:
        super().__init__()
        left, right, top, bottom = padding
        self.register_buffer("rows", _reflected(height, top, bottom), persistent=False)
        self.register_buffer("cols", _reflected(width, left, right), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nhwc = x.permute(0, 2, 3, 1)
        return nhwc.index_select(1, self.rows).index_select(2, self.cols).permute(0, 3, 1, 2)


def _reflected(size: int, before: int, after: int) -> torch.Tensor:
    """Source index of each padded position: reflection without repeating the edge, as ReflectionPad2d."""
    positions = torch.arange(-before, size + after)
    return torch.where(positions < 0, -positions, torch.where(positions >= size, 2 * (size - 1) - positions, positions))


def reflection_pad_to_gather(model: nn.Module, example: tuple) -> tuple[nn.Module, list[str]]:
    """Replace every single-use ReflectionPad2d whose input size is known from `example`."""
    graph_module = traced_with_shapes(model, example)
    changed = []
    for node, layer in single_calls(graph_module, lambda module: type(module) is nn.ReflectionPad2d):
        shape = input_shape(node)
        if shape is None or len(shape) != 4:
            continue
        replace_module(graph_module, node.target, GatherReflectionPad2d(tuple(layer.padding), shape[2], shape[3]))
        changed.append(node.target)
    return finish(graph_module), changed
