"""Rewrite a ConvTranspose2d that reads a 1x1 feature map (the first layer of the classic DCGAN generator,
ConvTranspose2d(nz, C, 4, 1, 0) on z viewed as nz x 1 x 1) into a Linear and a reshape.

On a 1x1 input every output pixel (o, i, j) is sum_c x[c] * W[c, o, i, j] + b[o]: one matrix product with
a (C_in, C_out*kh*kw) matrix. ONNX Runtime has no int8 ConvTranspose kernel, but runs a Gemm as an int8
QGemm (docs/architecture.md, 'int8 on ORT CPU'). Whether the input is 1x1 is a fact about shapes, so this rewrite
traces the model with example inputs.
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


class LinearConvTranspose1x1(nn.Module):
    """ConvTranspose2d(padding 0) on a 1x1 input as Linear(C_in -> C_out*kh*kw) + reshape to (C_out, kh, kw)."""

    fx_leaf = True  # see rewrites/graph.py

    def __init__(self, layer: nn.ConvTranspose2d) -> None:
        super().__init__()
        in_channels, out_channels, kh, kw = layer.weight.shape
        self.out_shape = (out_channels, kh, kw)
        self.linear = nn.Linear(in_channels, out_channels * kh * kw, bias=layer.bias is not None)
        with torch.no_grad():
            self.linear.weight.copy_(layer.weight.reshape(in_channels, -1).t())
            if layer.bias is not None:
                self.linear.bias.copy_(layer.bias.repeat_interleave(kh * kw))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1)).reshape(-1, *self.out_shape)


def convtranspose_1x1_to_linear(model: nn.Module, example: tuple) -> tuple[nn.Module, list[str]]:
    """Replace every single-use ConvTranspose2d with padding 0 whose input is 1x1 in `example`."""
    graph_module = traced_with_shapes(model, example)
    changed = []
    for node, layer in single_calls(graph_module, _rewritable):
        shape = input_shape(node)
        if shape is None or len(shape) != 4 or shape[2:] != (1, 1):
            continue
        replace_module(graph_module, node.target, LinearConvTranspose1x1(layer))
        changed.append(node.target)
    return finish(graph_module), changed


def _rewritable(module: nn.Module) -> bool:
    return (
        type(module) is nn.ConvTranspose2d
        and module.padding == (0, 0)
        and module.output_padding == (0, 0)
        and module.dilation == (1, 1)
        and module.groups == 1
    )
