"""Rewrite a 2x nearest-neighbour Upsample followed by a 3x3 convolution (the upsampling block of most VAE
decoders and many GAN generators) into convolutions over the input grid that do 4/9 of the work.

After a 2x nearest upsample, output pixel (2i + a, 2j + b) of a 3x3 conv (padding 1) reads input rows
(i-1, i, i) through kernel rows (0, 1, 2) for a = 0, and (i, i, i+1) for a = 1; the repeated input rows
can be summed into one tap. So each output phase is a 2x2 conv on the original grid, the same structure
as a stride-2 transposed conv (rewrites/phases.py): 4 taps per output pixel instead of 9, and the
Resize, which ONNX Runtime runs in float, disappears. Exact: only kernel taps are added.
"""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn

from compressor.rewrites.graph import finish, replace_module, single_calls, traced_with_shapes
from compressor.rewrites.phases import PhaseKernels, install_upsampling

# For output row phase a: which 3x3 kernel rows are summed into each of the two input rows it reads.
PHASE_TAP_SUMS = {0: [[0], [1, 2]], 1: [[0, 1], [2]]}


def upsample_conv_to_phases(model: nn.Module, example: tuple) -> tuple[nn.Module, list[str]]:
    """Replace each Conv2d(3x3, stride 1, padding 1) whose input is a 2x nearest Upsample it alone reads
    (and a ReLU that alone reads the conv) with its phase form; the names changed are the convs'."""
    return _upsample_convs(model, example, lambda graph_module, node, phases, grid: install_upsampling(
        graph_module, node, phases, grid=grid))


def upsample_conv_to_convtranspose(model: nn.Module, example: tuple) -> tuple[nn.Module, list[str]]:
    """Replace the same pairs with one ConvTranspose2d(4, 2, 1) computing the same four phase kernels: for
    runtimes with a fast int8 deconvolution (LiteRT's XNNPACK), which then does 4/9 of the conv's work and no
    Resize, where the phase forms above would add ops (see targets/mobile-arm.yaml)."""
    from compressor.rewrites.convtranspose import phases_as_convtranspose

    return _upsample_convs(model, example, lambda graph_module, node, phases, grid: replace_module(
        graph_module, node.target, phases_as_convtranspose(phases)))


def _upsample_convs(model: nn.Module, example: tuple, install) -> tuple[nn.Module, list[str]]:
    """Put `install(graph_module, conv node, its phase kernels, the upsample's input)` in place of each pair."""
    graph_module = traced_with_shapes(model, example)
    modules = dict(graph_module.named_modules())
    changed = []
    for node, conv in single_calls(graph_module, _is_conv3x3):
        upsample = node.args[0]
        if not _is_nearest_2x(upsample, modules):
            continue
        install(graph_module, node, conv3x3_after_upsample_phases(conv), upsample.args[0])
        node.args = (upsample.args[0],)
        graph_module.graph.erase_node(upsample)
        changed.append(node.target)
    return finish(graph_module), changed


def conv3x3_after_upsample_phases(conv: nn.Conv2d) -> PhaseKernels:
    """The four 2x2 phase kernels of a 3x3 conv that reads a 2x nearest upsample."""
    weight = conv.weight.detach()

    def kernel(row: int, col: int) -> torch.Tensor:
        rows = torch.stack([weight[:, :, taps, :].sum(dim=2) for taps in PHASE_TAP_SUMS[row]], dim=2)
        return torch.stack([rows[:, :, :, taps].sum(dim=3) for taps in PHASE_TAP_SUMS[col]], dim=3)

    bias = conv.bias.detach() if conv.bias is not None else None
    return PhaseKernels({(a, b): kernel(a, b) for a in (0, 1) for b in (0, 1)}, bias)


def _is_conv3x3(module: nn.Module | None) -> bool:
    return (
        type(module) is nn.Conv2d
        and module.kernel_size == (3, 3)
        and module.stride == (1, 1)
        and module.padding in ((1, 1), "same")
        and module.dilation == (1, 1)
        and module.groups == 1
        and module.padding_mode == "zeros"
    )


def _is_nearest_2x(node: fx.Node | None, modules: dict[str, nn.Module]) -> bool:
    """A single-reader call of nn.Upsample(scale_factor=2, mode='nearest') on one tensor."""
    if not isinstance(node, fx.Node) or node.op != "call_module" or len(node.users) != 1 or len(node.args) != 1:
        return False
    module = modules.get(node.target)
    if type(module) is not nn.Upsample or module.mode != "nearest" or module.size is not None:
        return False
    scale = module.scale_factor
    return all(float(s) == 2.0 for s in scale) if isinstance(scale, tuple) else float(scale) == 2.0
