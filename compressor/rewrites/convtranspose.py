"""Rewrite ConvTranspose2d(kernel 4, stride 2, padding 1), the upsampling layer of most generators (and, through
convtranspose_subpixel.py, every other strided configuration), into
ordinary stride-1 convolutions that CPU runtimes execute fast (ONNX Runtime has no int8 ConvTranspose
kernel: a quantized one runs in fp32 between extra Q/DQ nodes, docs/architecture.md).

Each output pixel (2i + a, 2j + b) of such a layer depends on a 2x2 window of input pixels through a
fixed 2x2 slice of the kernel, one slice per output phase (a, b); `rewrites/phases.py` runs the four
slices in the form that suits the layer's output channels. A ReLU that alone reads the layer moves inside,
where a quantized runtime fuses it into the convolutions.
"""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn

from compressor.rewrites.convtranspose_subpixel import SubPixelConvTranspose2d, subpixel_supported
from compressor.rewrites.graph import finish, replace_module, single_calls, sole_relu_user, trace, traced_with_shapes
from compressor.rewrites.phases import PhaseKernels, install_upsampling

# Kernel rows (or columns) used by output phase 0 and 1, in the order of the input rows they multiply:
# phase 0 reads input rows (m-1, m) through kernel rows (3, 1); phase 1 reads (m, m+1) through (2, 0).
PHASE_TAPS = {0: [3, 1], 1: [2, 0]}
# Output channels up to which narrow_convtranspose_to_conv rewrites a layer: RGB and grayscale image heads.
NARROW_CHANNELS = 4


def decompose_convtranspose(model: nn.Module, example: tuple | None = None) -> tuple[nn.Module, list[str]]:
    """Replace every ConvTranspose2d (and a ReLU that alone reads it) with its exact conv form: (4, 2, 1) with
    the forms of phases.py, any other strided one with the sub-pixel form. With `example` inputs the input
    sizes are known, which the cheapest form for 1-2 channels needs. `leftover_convtransposes` says why a
    layer was left."""
    graph_module = traced_with_shapes(model, example) if example is not None else trace(model)
    changed = []
    # single_calls leaves alone a layer called twice, or with output_size
    for node, layer in single_calls(graph_module, lambda module: subpixel_supported(module) is None):
        if _decomposable(layer):
            install_upsampling(graph_module, node, convtranspose_phases(layer), grid=node.args[0])
        else:
            relu = sole_relu_user(node, dict(graph_module.named_modules()))
            replace_module(graph_module, node.target, SubPixelConvTranspose2d(layer, nn.ReLU() if relu is not None else None))
            if relu is not None:
                relu.replace_all_uses_with(node)
                graph_module.graph.erase_node(relu)
        changed.append(node.target)
    return finish(graph_module), changed


def narrow_convtranspose_to_conv(model: nn.Module, example: tuple | None = None) -> tuple[nn.Module, list[str]]:
    """Only the ConvTranspose2d(4, 2, 1) layers with at most NARROW_CHANNELS output channels (image heads) become
    one conv + pixel shuffle (the cheaper of phases.py's sub-pixel and block forms); wider ones stay.

    For runtimes with an int8 deconvolution of their own (LiteRT's XNNPACK): it is fast on wide layers, where
    the phase forms only add ops, but a 1-channel head wastes it. On the DCGAN demo (64 -> 1 channels, as a 4x4
    stride-2 conv to 16 channels + pixel shuffle(4)) the int8 model ran in 0.155 ms against 0.185 ms without
    this rewrite, and with ONNX Runtime's decompositions of every layer in 0.205 ms (benchmarks/litert_mobile.py)."""
    graph_module = traced_with_shapes(model, example) if example is not None else trace(model)
    changed = []
    for node, layer in single_calls(graph_module, lambda module: _decomposable(module) and module.out_channels <= NARROW_CHANNELS):
        install_upsampling(graph_module, node, convtranspose_phases(layer), grid=node.args[0])
        changed.append(node.target)
    return finish(graph_module), changed


def leftover_convtransposes(model: nn.Module) -> dict[str, str]:
    """Each ConvTranspose2d still in `model`, with why no rewrite took it (for the manifest's skipped list)."""
    calls = {}
    if isinstance(model, fx.GraphModule):
        for node in model.graph.nodes:
            if node.op == "call_module":
                calls.setdefault(node.target, []).append(node)
    leftovers = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.ConvTranspose2d):
            continue
        reason = subpixel_supported(module)
        if reason is None and len(calls.get(name, [])) > 1:
            reason = "called from more than one place (one replacement would serve every call)"
        elif reason is None:
            reason = "called with output_size, or outside the traced graph"
        leftovers[name] = reason
    return leftovers


def convtranspose_phases(layer: nn.ConvTranspose2d) -> PhaseKernels:
    """The four 2x2 phase kernels of a (C_in, C_out, 4, 4) transposed conv, as ordinary conv kernels."""
    weight = layer.weight.detach()

    def kernel(row: int, col: int) -> torch.Tensor:
        return weight[:, :, PHASE_TAPS[row], :][:, :, :, PHASE_TAPS[col]].permute(1, 0, 2, 3)

    bias = layer.bias.detach() if layer.bias is not None else None
    return PhaseKernels({(a, b): kernel(a, b) for a in (0, 1) for b in (0, 1)}, bias)


def phases_as_convtranspose(phases: PhaseKernels) -> nn.ConvTranspose2d:
    """The ConvTranspose2d(4, 2, 1) whose phase kernels are `phases` (the inverse of convtranspose_phases)."""
    out_channels, in_channels = phases.channels
    layer = nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1, bias=phases.bias is not None)
    with torch.no_grad():
        for (row, col), kernel in phases.kernels.items():
            for r, tap_row in enumerate(PHASE_TAPS[row]):
                for c, tap_col in enumerate(PHASE_TAPS[col]):
                    layer.weight[:, :, tap_row, tap_col] = kernel[:, :, r, c].t()
        if phases.bias is not None:
            layer.bias.copy_(phases.bias)
    return layer


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
