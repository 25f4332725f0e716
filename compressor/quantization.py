"""Quantization plans: what a quantizing stage (ptq, qat) decides, for a runtime to turn into its artifacts.

The stages never write files in a runtime's format. ptq gathers calibration data and the precision rules
into a `CalibrationPlan`, which each runtime hands to its own quantizer (ONNX Runtime's `quantize_static`,
ModelOpt for TensorRT); qat fine-tunes a fake-quantized torch model and hands it over as a
`FakeQuantizedPlan`, which each runtime exports as Q/DQ in the form its kernels want.

`choose_precisions` is the mixed-precision search every runtime shares: layer rules first (last match
wins), then, in auto mode, per-layer sensitivity measured through the runtime's own quantizer and runner,
keeping the most sensitive layers in float until the whole model reaches `min_psnr`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from compressor.errors import ConfigError
from compressor.layer_rules import LayerRule, describe_plan, precision_plan

if TYPE_CHECKING:
    import numpy as np
    import torch.nn as nn


@dataclass(frozen=True)
class CalibrationPlan:
    """ptq's plan: calibrate the runtime's quantizer on `feeds`; layers as `rules` (and `auto_precision`) say."""

    feeds: list[dict[str, np.ndarray]] = field(repr=False)
    source: str  # where the feeds came from, for the manifest
    method: str  # minmax / percentile / entropy
    percentile: float
    rules: list[LayerRule]
    auto_precision: bool
    min_psnr: float
    probe: dict[str, np.ndarray] = field(repr=False)  # inputs on which auto_precision measures sensitivity
    bias_correction: bool = False  # match fp32's output channel means layer by layer (runtimes/onnx/bias_correction.py)
    float_io: str | None = None  # why the model's input and output layers stay float; None: they are int8 as usual
    stage: str = "ptq"

    def describe(self) -> dict[str, Any]:
        return {"stage": self.stage, "calibration": self.source, "method": self.method}


@dataclass(frozen=True)
class FakeQuantizedPlan:
    """qat's plan: `model` carries its quantizers (torch fake-quantize ops); `layers` is each layer's precision."""

    model: nn.Module = field(repr=False)
    layers: dict[str, tuple[str, str]]  # layer -> (precision, why)
    min_psnr: float
    stage: str = "qat"

    def describe(self) -> dict[str, Any]:
        return {"stage": self.stage}


QuantizationPlan = CalibrationPlan | FakeQuantizedPlan

# (float layers -> path of the quantized artifact written with them kept in float)
Quantize = Callable[[set[str], Path], Path]
# (artifact path -> its first output on the plan's probe inputs; the fp32 artifact gives the reference)
Probe = Callable[[Path], "np.ndarray"]


def choose_precisions(
    plan: CalibrationPlan, layers: list[str], target, float_precision: str, quantize: Quantize, probe: Probe, fp32: Path,
    value_range: tuple[float, float] | None, io_layers: list[str] = (),
) -> dict[str, Any]:
    """Each layer's precision and why (rules, the model's input/output layers `io_layers` when the plan keeps them
    float, then auto sensitivity, measured against the `fp32` artifact).
    Returns `describe_plan`'s record plus `sensitivity_psnr_db` (each candidate layer's PSNR when it alone is
    int8; empty unless auto)."""
    if not layers and (plan.rules or plan.auto_precision):
        raise ConfigError(
            f"{plan.stage}: the export records no module names (e.g. a TorchScript input), so rules and auto_precision "
            "cannot find layers; drop them, or load the model from a folder or state_dict"
        )
    precisions, ruled = precision_plan(layers, plan.rules, f"{plan.stage}.rules", target, float_precision)
    if plan.float_io:  # under the user's rules: a rule that placed one of them still decides
        for layer in set(io_layers) & set(precisions) - ruled:
            precisions[layer] = (float_precision, plan.float_io)
        ruled |= set(io_layers)
    sensitivity = {}
    if plan.auto_precision:  # layers a rule placed explicitly are the user's call, not auto's
        sensitivity = _keep_sensitive_layers_in_float(precisions, ruled, plan, float_precision, quantize, probe,
                                                      fp32, value_range)
    return {**describe_plan(precisions), "sensitivity_psnr_db": sensitivity}


def as_quantized(described: dict[str, Any], int8: set[str], float_precision: str) -> dict[str, Any]:
    """The `choose_precisions` record corrected by what the artifact really holds (`int8`: its int8 layers): a
    runtime's quantizer may keep layers in float on its own (ModelOpt keeps narrow convs and GEMVs for TensorRT
    speed), and the manifest must say what ships, not what was asked."""
    plan = {layer: (entry["precision"], entry["reason"]) for layer, entry in described["layers"].items()}
    for layer, (precision, _) in plan.items():
        if precision == "int8" and layer not in int8:
            plan[layer] = (float_precision, "kept in float by the runtime's quantizer")
    return {**described, **describe_plan(plan)}


def float_layers(described: dict[str, Any]) -> set[str]:
    """The layers a `choose_precisions` record keeps out of int8."""
    return {layer for layer, entry in described["layers"].items() if entry["precision"] != "int8"}


def _keep_sensitive_layers_in_float(
    precisions: dict[str, tuple[str, str]], ruled: set[str], plan: CalibrationPlan, float_precision: str,
    quantize: Quantize, probe: Probe, fp32: Path, value_range,
) -> dict[str, float]:
    """Per-layer sensitivity, then move int8 layers to float, most sensitive first, until min_psnr holds.
    Updates `precisions` in place; returns each candidate's PSNR when it alone is quantized."""
    from compressor.evaluate.paired import data_range_of, psnr

    reference = probe(fp32)
    data_range = data_range_of(value_range, reference)
    scratch = fp32.parent / "sensitivity.onnx"

    def quality(kept_float: set[str]) -> float:
        return psnr(reference, probe(quantize(kept_float, scratch)), data_range)

    candidates = [layer for layer, (precision, _) in precisions.items() if precision == "int8" and layer not in ruled]
    every = set(precisions)
    sensitivity = {layer: quality(every - {layer}) for layer in candidates}
    kept_float = {layer for layer, (precision, _) in precisions.items() if precision != "int8"}
    for layer in sorted(candidates, key=sensitivity.get):  # lowest PSNR alone = most sensitive
        if quality(kept_float) >= plan.min_psnr:
            break
        kept_float.add(layer)
        precisions[layer] = (float_precision, f"auto: most sensitive left (PSNR {sensitivity[layer]:.1f} dB when alone int8)")
    scratch.unlink(missing_ok=True)
    return sensitivity
