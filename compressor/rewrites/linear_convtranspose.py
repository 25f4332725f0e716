"""Rewrite the projection Linear of a generator (Linear(nz -> C*H*W) then a view to (C, H, W)) into a
ConvTranspose2d with an (H, W) kernel and stride on z seen as nz x 1 x 1, plus the part of the bias that
varies across the H*W positions.

The two compute the same products; what changes is what an int8 quantizer sees. Per-channel weight scales
follow a layer's output channels: the Linear has C*H*W of them (4,096 on the DCGAN demo), each stored in the
`.tflite` with a float scale and an int64 zero point, for the weight and again for the int32 bias, about
100 kB: without this rewrite the demo's int8 file is 0.287x its fp32 size. As a transposed convolution the
layer has C channels, its rows of one channel share a scale as BatchNorm folding made them do anyway, and
the file is 0.259x (benchmarks/litert_mobile.py). The stride equals the kernel so litert-torch keeps it a TRANSPOSE_CONV (with stride 1 it lowers it to
a padded CONV_2D doing 16x the work). A bias that differs between positions of a channel, which a Linear
may have, is kept exactly as a constant added after the convolution. This is the inverse of
convtranspose_1x1_to_linear, which ONNX Runtime wants because it has no int8 ConvTranspose.
"""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn

from compressor.rewrites.graph import finish, output_shape, replace_module, single_calls, traced_with_shapes

_RESHAPES = {"view", "reshape", "unflatten"}


class ConvTransposeLinear(nn.Module):
    """Linear(nz -> C*H*W) as ConvTranspose2d(nz, C, (H, W), stride (H, W)) on a 1x1 map, flattened back to
    [B, C*H*W] so whatever reshaped the Linear's output reads the same values."""

    fx_leaf = True  # see rewrites/graph.py

    def __init__(self, linear: nn.Linear, channels: int, height: int, width: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(linear.in_features, channels, (height, width), stride=(height, width),
                                       bias=linear.bias is not None)
        with torch.no_grad():
            # Linear row c*H*W + i*W + j is output pixel (c, i, j): W_conv[k, c, i, j] = W_lin[c*H*W + i*W + j, k].
            self.conv.weight.copy_(linear.weight.reshape(channels, height, width, -1).permute(3, 0, 1, 2))
            spatial = None
            if linear.bias is not None:
                bias = linear.bias.reshape(channels, height, width)
                if torch.equal(bias, bias[:, :1, :1].expand_as(bias)):  # one value per channel: the conv's own bias
                    self.conv.bias.copy_(bias[:, 0, 0])
                else:  # the channel's mean in the conv, the rest (small, centred) added after it
                    self.conv.bias.copy_(bias.mean((1, 2)))
                    spatial = bias - bias.mean((1, 2), keepdim=True)
        self.register_buffer("spatial_bias", spatial)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x[:, :, None, None])
        if self.spatial_bias is not None:
            y = y + self.spatial_bias
        return y.flatten(1)


def linear_to_convtranspose(model: nn.Module, example: tuple) -> tuple[nn.Module, list[str]]:
    """Replace every single-use Linear on a 2-D input whose only reader reshapes it to (B, C, H, W), H*W > 1."""
    graph_module = traced_with_shapes(model, example)
    changed = []
    for node, layer in single_calls(graph_module, lambda module: type(module) is nn.Linear):
        shape = _image_shape(node)
        if shape is None:
            continue
        replace_module(graph_module, node.target, ConvTransposeLinear(layer, *shape))
        changed.append(node.target)
    return finish(graph_module), changed


def _image_shape(node: fx.Node) -> tuple[int, int, int] | None:
    """(C, H, W) when `node` reads [B, nz] and its one reader reshapes its [B, C*H*W] output to [B, C, H, W]."""
    source = node.args[0]
    in_shape = output_shape(source) if isinstance(source, fx.Node) else None
    users = list(node.users)
    if in_shape is None or len(in_shape) != 2 or len(users) != 1:
        return None
    reader = users[0]
    if reader.op != "call_method" or reader.target not in _RESHAPES:
        return None
    shape = output_shape(reader)
    if shape is None or len(shape) != 4 or shape[2] * shape[3] == 1:
        return None
    return shape[1], shape[2], shape[3]
