"""The ptq stage: post-training int8 quantization, calibrated data-free on the model card's prior (or on the
user's calibration file), done by the target runtime's own quantizer on its export.

The stage itself only gathers what the quantizer needs into a `CalibrationPlan` (calibration feeds, the
method, layer rules, auto mode); the runtime turns it into its artifact (compressor/quantization.py).

Mixed precision: layer rules (`rules: [{match: "blocks.8*", precision: fp32}]`, last match wins) keep
chosen layers in float, and `auto_precision` measures each layer's quantization sensitivity (the PSNR of
the output when only that layer is quantized) and keeps the most sensitive layers in float, one at a time,
until the whole model reaches `min_psnr`. The manifest records every layer's precision and why.

For a model sampled in several steps (diffusion), the layers on its inputs and output stay float
(`io_layers: auto`). On ONNX Runtime, every model's final file then has its biases corrected so each layer's
output channel means match fp32's (`bias_correction`, runtimes/onnx/bias_correction.py).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from compressor.quantization import CalibrationPlan
from compressor.seeds import CALIBRATION_SEED_OFFSET, SENSITIVITY_SEED_OFFSET
from compressor.stages.base import StageResult
from compressor.stages.quantizing import QuantizingStage


class PTQConfig(QuantizingStage):
    """Quantize weights (int8, symmetric, per channel) and activations (as the target says) after export."""

    kind: Literal["ptq"] = "ptq"
    method: Literal["minmax", "percentile", "entropy"] = Field(
        "percentile", description="Activation range calibration; percentile beat minmax and entropy on every model tried."
    )
    percentile: float = Field(99.999, gt=90, le=100, description="Percentile kept by the percentile method.")
    batch: int = Field(16, ge=1, description="Calibration batch size.")
    auto_precision: bool = Field(False, description="Keep the most sensitive layers in float until min_psnr is met.")
    io_layers: Literal["auto", "int8", "float"] = Field(
        "auto", description="Precision of the layers that read a model input or write a model output (a UNet's "
        "conv_in, time-embedding input and conv_out). auto: float for a model sampled in several steps, whose output "
        "is fed back into its input at every step (digits-ddpm, benchmarks/diffusion_calibration.py: FID delta +0.56 "
        "with them float, +2.80 int8); int8 for a one-call model. Layer rules still override it.",
    )
    bias_correction: bool = Field(
        True, description="Move each int8 Conv/Gemm bias so its output channel means on the calibration inputs match "
        "fp32's (ONNX Runtime; TensorRT and LiteRT releases record that it was not applied).",
    )

    def run(self, model, ctx) -> StageResult:
        from compressor.calibration import batches

        self.check_target(ctx)
        data, source = self.user_calibration(ctx), self.calibration
        if data is None:
            inputs = self.data_free_inputs(ctx, self.samples, CALIBRATION_SEED_OFFSET)
            data, source = {name: t.numpy() for name, t in inputs.items()}, self.data_free_source(ctx)
        probe = {name: t.numpy() for name, t in ctx.model_inputs(32, SENSITIVITY_SEED_OFFSET).items()}
        plan = CalibrationPlan(
            feeds=batches(data, self.batch), source=source, method=self.method, percentile=self.percentile,
            rules=self.rules, auto_precision=self.auto_precision, min_psnr=self.min_psnr, probe=probe,
            bias_correction=self.bias_correction, float_io=self.float_io(ctx),
        )
        return StageResult(model=model, plan=plan, metrics={"calibration": source, "method": self.method})

    def float_io(self, ctx) -> str | None:
        """Why the input and output layers stay float (the manifest's reason), or None when they are int8."""
        if self.io_layers == "float":
            return "input/output layer (ptq.io_layers: float)"
        steps = ctx.sampler.steps
        if self.io_layers == "auto" and steps > 1:
            return f"input/output layer of a {steps}-step sampler (ptq.io_layers: auto)"
        return None
