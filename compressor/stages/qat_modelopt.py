"""The qat stage's quantizer for TensorRT targets: NVIDIA ModelOpt's torch quantization (`mtq`).

Why not NNCF, which the CPU targets use: TensorRT's explicit quantization wants signed int8 activations with
zero point 0 and ConvTranspose weight scales per input channel (axis 0). NNCF's hardware configurations
refuse forcing signed activations (a tensor after a ReLU gets an unsigned grid), and NNCF puts ConvTranspose
scales on the output channels. ModelOpt's INT8 configuration is TensorRT's own scheme: signed per-tensor
activations, per-channel weights (axis 0 for ConvTranspose too), float biases. It runs on the CPU as plain
torch fake quantization (no extension is built), and its quantizers export as QuantizeLinear /
DequantizeLinear through torch's TorchScript-based ONNX exporter. Scales stay fixed after calibration (its
learned-scale mode covers only 4-bit formats); fine-tuning adapts the weights and biases to them.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from compressor.quiet import quieted

if TYPE_CHECKING:
    import torch
    import torch.nn as nn


def quantize(model: nn.Module, calibration: list[tuple[torch.Tensor, ...]]) -> tuple[nn.Module, list[str]]:
    """ModelOpt's int8 fake-quantized `model` (changed in place), calibrated (max) on `calibration`; and the
    names of the layers it quantized, in module order."""
    import torch

    mtq = _import_mtq()

    def forward_loop(quantized: nn.Module) -> None:
        with torch.no_grad():
            for inputs in calibration:
                quantized(*inputs)

    with quiet():  # it prints "Inserted N quantizers" and warns about plugins for other frameworks
        quantized = mtq.quantize(model, copy.deepcopy(mtq.INT8_DEFAULT_CFG), forward_loop)
    layers = [name for name, module in quantized.named_modules()
              if getattr(getattr(module, "weight_quantizer", None), "is_enabled", False)]
    return quantized, layers


def keep_in_float(quantized: nn.Module, layers: list[str]) -> None:
    """Turn off the input and weight quantizers of these layers: they run in float."""
    mtq = _import_mtq()
    for layer in layers:
        mtq.disable_quantizer(quantized, f"{layer}.*_quantizer")


def quiet():
    return quieted(("modelopt",), stderr=True)


def _import_mtq():
    with quiet():
        import modelopt.torch.quantization as mtq
    return mtq
