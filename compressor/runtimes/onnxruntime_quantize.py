"""Post-training int8 quantization of an ONNX model for ONNX Runtime's CPU execution provider.

onnxruntime.quantization.quantize_static does the work: it emits the QDQ form whose Q/DQ pairs ORT fuses
into QLinearConv / QGemm, with the activation type this runtime runs fast (uint8 activations with int8
per-channel weights on x86; signed int8 activations are left unfused and run slower than fp32, docs/architecture.md).
NNCF would quantize the torch graph instead, but emits signed int8 activations for this runtime and needs
a re-typing pass afterwards; ORT's own quantizer is the shorter, exact path here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from compressor.config import Target
from compressor.quiet import quieted

_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}
# Ops ORT CPU runs only in float (no int8 kernel): normalizations.
_FLOAT_ONLY = {"InstanceNormalization", "LayerNormalization", "GroupNormalization"}
# Elementwise math and reshapes that typically follow one (GroupNorm's affine, SiLU = Sigmoid * x, ...).
_ELEMENTWISE = {
    "Reshape", "Squeeze", "Unsqueeze", "Mul", "Add", "Sub", "Div", "Sigmoid", "Tanh", "Relu", "LeakyRelu",
    "Elu", "Softplus", "Erf", "Pow", "Sqrt", "HardSigmoid", "HardSwish",
}


def quantize(
    fp32: Path, out: Path, batches: list[dict[str, np.ndarray]], target: Target, method: str, percentile: float,
    exclude: Sequence[str] = (), calibration_cache: Path | None = None, progress=None,
) -> Path:
    """Write the int8 QDQ model calibrated on `batches`; nodes named in `exclude` stay in float. Concat inputs
    then share their output's scale, and value-moving ops run on uint8 (onnx/qdq.py: share_concat_scales,
    quantize_layout_ops). With `calibration_cache`, the tensor
    ranges are computed once and reused by later calls (they do not depend on `exclude`)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from compressor.runtimes.onnx import qdq as onnx_qdq

    rules = target.quantization
    graph = onnx.load(str(fp32)).graph
    exclude = [*exclude, *float_tails(graph), *phase_arguments(graph)]
    with _quiet_root_logger():
        quantize_static(
            str(fp32),
            str(out),
            calibration_reader(batches, progress),
            quant_format=QuantFormat.QDQ,
            per_channel=rules.weight_per_channel,
            reduce_range=rules.weight_bits == 7,  # ORT's 7-bit weights (see QuantizationRules.weight_bits)
            activation_type=QuantType.QUInt8 if rules.activations == "uint8" else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(exclude),
            calibration_cache_path=str(calibration_cache) if calibration_cache else None,
            calibrate_method=getattr(CalibrationMethod, _METHODS[method]),
            extra_options={
                "ActivationSymmetric": rules.activation_symmetric,
                "WeightSymmetric": True,
                "CalibPercentile": percentile,
            },
        )
    graph = onnx.load(str(out))
    changed = onnx_qdq.share_concat_scales(graph)
    changed += onnx_qdq.quantize_layout_ops(graph)
    if changed:
        onnx.save(graph, str(out))
    return out


def float_tails(graph) -> list[str]:
    """Names of the float-only ops (normalizations) and of the elementwise nodes that run on their outputs, up
    to the next other op: left out of quantization, the whole chain runs in float and is quantized once at its
    end. Quantized, each elementwise node becomes its own int8 op between Q/DQ pairs (QLinearMul, QLinearAdd,
    QLinearSigmoid...): one more rounding per op (the VAE demo's int8 artifact was 1.2 dB further from torch)
    and no fewer passes over memory than the float chain ORT fuses (QuickGelu for SiLU)."""
    from compressor.runtimes.onnx.graph import readers

    reading = readers(graph)
    frontier = [node for node in graph.node if node.op_type in _FLOAT_ONLY]
    tails = [node.name for node in frontier]
    while frontier:
        node = frontier.pop()
        for output in node.output:
            for reader in reading.get(output, []):
                if reader.op_type in _ELEMENTWISE and reader.name not in tails:
                    tails.append(reader.name)
                    frontier.append(reader)
    return tails


_WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def phase_arguments(graph) -> list[str]:
    """Names of the nodes that compute the argument of a Sin or Cos (a diffusion model's timestep embedding:
    t x frequencies, t up to 999): left out of quantization. A periodic function turns an error in its argument
    into an error as large as its whole output range: uint8 steps of 4 radians over [0, 1000] leave sin(t f) noise,
    and the digits-ddpm demo's int8 UNet was 26 dB from torch (the float path costs nothing: a [batch, 64] tensor).
    The walk up stops at weighted layers: they stay quantized as usual."""
    from compressor.runtimes.onnx.graph import producers

    making = producers(graph)
    frontier = [node for node in graph.node if node.op_type in ("Sin", "Cos")]
    names: list[str] = []
    while frontier:
        node = frontier.pop()
        for tensor in node.input:
            producer = making.get(tensor)
            if producer is None or producer.name in names or producer.op_type in ("Sin", "Cos", *_WEIGHTED):
                continue
            names.append(producer.name)
            frontier.append(producer)
    return names


def calibration_reader(batches: list[dict[str, np.ndarray]], progress=None):
    """The CalibrationDataReader quantize_static wants, over a list of feeds; `progress(text, done, total)` is told
    as each feed is handed over."""
    from onnxruntime.quantization import CalibrationDataReader

    class Feeds(CalibrationDataReader):
        """Hands quantize_static one calibration feed at a time."""

        def __init__(self) -> None:
            self._feeds = iter(batches)
            self._handed = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            feed = next(self._feeds, None)
            if feed is not None and progress:
                self._handed += 1
                progress(f"calibration {self._handed}/{len(batches)} batches", self._handed, len(batches))
            return feed

    return Feeds()


def _quiet_root_logger():
    """quantize_static logs advice ("consider pre-processing") on the root logger and prints calibration
    progress; our graph is already shape-inferred and optimized by the exporter, so keep the CLI clean."""
    return quieted(("",))
