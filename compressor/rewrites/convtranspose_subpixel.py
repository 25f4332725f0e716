"""Any ConvTranspose2d (kernel k, stride s, padding p, output_padding) as one stride-1 convolution that computes
the s*s output phases as channels, a pixel shuffle and a crop: the sub-pixel form. The common (4, 2, 1) layer
has cheaper dedicated forms (convtranspose.py); this one covers every other configuration generators use,
such as ResNet generators' (3, 2, 1, output_padding 1), so that no ConvTranspose is left to run in fp32 on
ONNX Runtime, which has no int8 kernel for it.

Along one axis, output o = s*m + r (phase r) of a transposed conv reads kernel taps t = s*j + c_r with
c_r = (r + p) mod s, at input positions m + d_r - j with d_r = (r + p) // s. Every phase therefore reads a
window of consecutive input positions ending at m + d_r; one correlation whose window spans all phases' windows
(offsets lo..hi), with each phase's taps placed at their offsets and zeros elsewhere, computes all phases at
once. Exact: the kernel's values are only moved.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class SubPixelConvTranspose2d(nn.Module):
    """Pad, one conv with s*s*C_out channels, pixel_shuffle(s), crop to the transposed conv's output size."""

    fx_leaf = True  # see rewrites/graph.py

    def __init__(self, layer: nn.ConvTranspose2d, activation: nn.Module | None = None) -> None:
        super().__init__()
        # An elementwise activation commutes with the shuffle and crop: applied on the conv's output, where a
        # quantized runtime fuses it.
        self.activation = activation if activation is not None else nn.Identity()
        self.stride = layer.stride[0]
        (self.lo_h, kernel_h, taps_h), (self.lo_w, kernel_w, taps_w) = (
            _phase_taps(layer.kernel_size[axis], layer.stride[axis], layer.padding[axis]) for axis in (0, 1)
        )
        self.extra = [layer.kernel_size[a] + layer.output_padding[a] - 2 * layer.padding[a] - layer.stride[a] for a in (0, 1)]
        in_channels, out_channels = layer.in_channels, layer.out_channels
        s = self.stride
        self.conv = nn.Conv2d(in_channels, s * s * out_channels, (kernel_h, kernel_w), bias=layer.bias is not None)
        weight = layer.weight.detach()  # (C_in, C_out, k_h, k_w)
        with torch.no_grad():
            self.conv.weight.zero_()
            for r_h, column_h in enumerate(taps_h):
                for r_w, column_w in enumerate(taps_w):
                    for q_h, t_h in column_h:
                        for q_w, t_w in column_w:
                            # pixel_shuffle reads channel c * s*s + (r_h * s + r_w) as phase (r_h, r_w) of channel c
                            self.conv.weight[r_h * s + r_w :: s * s, :, q_h, q_w] = weight[:, :, t_h, t_w].T
            if layer.bias is not None:
                self.conv.bias.copy_(layer.bias.detach().repeat_interleave(s * s))
        self.kernel = (kernel_h, kernel_w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stride
        height, width = x.shape[-2:]
        out_h, out_w = (height - 1) * s + s + self.extra[0], (width - 1) * s + s + self.extra[1]
        blocks_h, blocks_w = math.ceil(out_h / s), math.ceil(out_w / s)
        # Window of output block m: input positions m + lo .. m + lo + kernel - 1, zero outside the input
        pad_h = (-self.lo_h, blocks_h - 1 + self.lo_h + self.kernel[0] - height)
        pad_w = (-self.lo_w, blocks_w - 1 + self.lo_w + self.kernel[1] - width)
        y = F.pixel_shuffle(self.activation(self.conv(F.pad(x, (*pad_w, *pad_h)))), s)
        return y[:, :, :out_h, :out_w]


def subpixel_supported(layer: nn.Module) -> str | None:
    """None if `layer` has a sub-pixel form, else why not (the manifest lists it as skipped with this)."""
    if type(layer) is not nn.ConvTranspose2d:
        return "not a plain nn.ConvTranspose2d"
    if layer.groups != 1:
        return f"groups={layer.groups} (grouped transposed convs are not decomposed)"
    if layer.dilation != (1, 1):
        return f"dilation={layer.dilation} (dilated transposed convs are not decomposed)"
    if layer.padding_mode != "zeros":
        return f"padding_mode={layer.padding_mode!r}"
    if layer.stride[0] != layer.stride[1]:
        return f"stride={layer.stride} differs per axis (pixel_shuffle takes one factor)"
    if layer.stride == (1, 1):
        return "stride 1 (an ordinary conv with a flipped kernel; ORT's int8 ConvTranspose is not needed, left as is)"
    return None


def _phase_taps(kernel: int, stride: int, padding: int) -> tuple[int, int, list[list[tuple[int, int]]]]:
    """(lo, window, taps): the window's first input offset and size along one axis, and per phase r the list of
    (window index, kernel tap) pairs it uses."""
    reads = []
    for r in range(stride):
        first_tap, last_offset = (r + padding) % stride, (r + padding) // stride
        reads.append([(last_offset - j, stride * j + first_tap) for j in range(math.ceil(max(kernel - first_tap, 0) / stride))])
    offsets = [offset for phase in reads for offset, _ in phase] or [0]
    lo, hi = min(offsets), max(offsets)
    return lo, hi - lo + 1, [[(offset - lo, tap) for offset, tap in phase] for phase in reads]
