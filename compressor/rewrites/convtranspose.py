"""Rewrite ConvTranspose2d(kernel 4, stride 2, padding 1), the upsampling layer of most generators, into
ordinary stride-1 convolutions that CPU runtimes execute fast (ONNX Runtime has no int8 ConvTranspose
kernel: a quantized one runs in fp32 between extra Q/DQ nodes, DESIGN.md).

Each output pixel (2i + a, 2j + b) of such a layer depends on a 2x2 window of input pixels through a
fixed 2x2 slice of the kernel, one slice per output phase (a, b). So the layer is exactly:

- four 2x2 convolutions, one per phase, each with its own asymmetric zero padding, executing only the
  useful multiply-accumulates (a 3x3 "sub-pixel" conv would do 2.25x the work), followed by an interleave
  written in channels-last order so that ONNX Runtime's NHWC layout pass cancels its transposes; an
  activation that follows (ReLU) is applied per phase, where a quantized runtime fuses it into the conv;
- or, for layers with few output channels (an image head: 1 or 3 channels), one 3x3 conv producing the
  four phases as channels, then a pixel shuffle: an N=1..3 matrix product per phase would be slow.
"""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from compressor.rewrites.graph import finish, replace_module, single_calls, trace

# Kernel rows (or columns) used by output phase 0 and 1, in the order of the input rows they multiply:
# phase 0 reads input rows (m-1, m) through kernel rows (3, 1); phase 1 reads (m, m+1) through (2, 0).
PHASE_TAPS = {0: [3, 1], 1: [2, 0]}
# Up to this many output channels, the single 3x3 conv + pixel shuffle form is used.
FEW_OUTPUT_CHANNELS = 4


class PhaseConvTranspose2d(nn.Module):
    """ConvTranspose2d(k=4, s=2, p=1) as four 2x2 stride-1 convs (one per output phase) and an interleave."""

    fx_leaf = True  # see rewrites/graph.py

    def __init__(self, layer: nn.ConvTranspose2d, activation: nn.Module | None = None) -> None:
        super().__init__()
        self.activation = activation if activation is not None else nn.Identity()
        self.phases = nn.ModuleList(_phase_conv(layer, a, b) for a in (0, 1) for b in (0, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = []
        for index, conv in enumerate(self.phases):
            row, col = divmod(index, 2)
            # Zero padding on the side each phase reaches past the input: (left, right, top, bottom).
            padded = F.pad(x, (1 - col, col, 1 - row, row))
            outputs.append(self.activation(conv(padded)).permute(0, 2, 3, 1))  # NHWC, see module docstring
        n, h, w, c = outputs[0].shape
        interleaved = torch.stack(outputs, dim=3).reshape(n, h, w, 2, 2, c)  # (..., row phase, col phase, C)
        return interleaved.permute(0, 1, 3, 2, 4, 5).reshape(n, 2 * h, 2 * w, c).permute(0, 3, 1, 2)


class SubPixelConvTranspose2d(nn.Module):
    """ConvTranspose2d(k=4, s=2, p=1) as one 3x3 conv computing the four phases as channels + pixel shuffle."""

    fx_leaf = True  # see rewrites/graph.py

    def __init__(self, layer: nn.ConvTranspose2d, activation: nn.Module | None = None) -> None:
        super().__init__()
        self.activation = activation if activation is not None else nn.Identity()
        out_channels = layer.out_channels
        self.conv = nn.Conv2d(layer.in_channels, 4 * out_channels, 3, padding=1, bias=layer.bias is not None)
        with torch.no_grad():
            self.conv.weight.zero_()
            for row in (0, 1):
                for col in (0, 1):
                    phase = _phase_kernel(layer.weight, row, col)  # (C_out, C_in, 2, 2)
                    # pixel_shuffle reads channel c * 4 + (row * 2 + col) as phase (row, col) of channel c.
                    self.conv.weight[row * 2 + col :: 4, :, row : row + 2, col : col + 2] = phase
            if layer.bias is not None:
                self.conv.bias.copy_(layer.bias.repeat_interleave(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.activation(self.conv(x)), 2)


def decompose_convtranspose(model: nn.Module, example: tuple | None = None) -> tuple[nn.Module, list[str]]:
    """Replace every ConvTranspose2d(4, 2, 1) (and a ReLU that alone reads it) with its exact conv form."""
    graph_module = trace(model)
    modules = dict(graph_module.named_modules())
    changed = []
    # single_calls leaves alone a layer called twice, or with output_size
    for node, layer in single_calls(graph_module, _decomposable):
        relu = _sole_relu_user(node, modules)
        form = SubPixelConvTranspose2d if layer.out_channels <= FEW_OUTPUT_CHANNELS else PhaseConvTranspose2d
        replace_module(graph_module, node.target, form(layer, nn.ReLU() if relu is not None else None))
        if relu is not None:
            relu.replace_all_uses_with(node)
            graph_module.graph.erase_node(relu)
        changed.append(node.target)
    return finish(graph_module), changed


def _decomposable(module: nn.Module) -> bool:
    return (
        type(module) is nn.ConvTranspose2d
        and module.kernel_size == (4, 4)
        and module.stride == (2, 2)
        and module.padding == (1, 1)
        and module.output_padding == (0, 0)
        and module.dilation == (1, 1)
        and module.groups == 1
        and module.padding_mode == "zeros"
    )


def _sole_relu_user(node: fx.Node, modules: dict[str, nn.Module]) -> fx.Node | None:
    users = list(node.users)
    if len(users) != 1:
        return None
    user = users[0]
    is_module_relu = user.op == "call_module" and type(modules.get(user.target)) is nn.ReLU
    is_function_relu = user.op == "call_function" and user.target in (F.relu, torch.relu)
    if (is_module_relu or is_function_relu) and not user.kwargs.get("inplace", False):
        return user
    return None


def _phase_kernel(weight: torch.Tensor, row: int, col: int) -> torch.Tensor:
    """The 2x2 slice of a (C_in, C_out, 4, 4) transposed-conv kernel that phase (row, col) uses, as a
    (C_out, C_in, 2, 2) ordinary conv kernel."""
    return weight[:, :, PHASE_TAPS[row], :][:, :, :, PHASE_TAPS[col]].permute(1, 0, 2, 3)


def _phase_conv(layer: nn.ConvTranspose2d, row: int, col: int) -> nn.Conv2d:
    conv = nn.Conv2d(layer.in_channels, layer.out_channels, 2, bias=layer.bias is not None)
    with torch.no_grad():
        conv.weight.copy_(_phase_kernel(layer.weight, row, col))
        if layer.bias is not None:
            conv.bias.copy_(layer.bias)
    return conv
