"""The ptq stage: post-training int8 quantization, calibrated data-free on the model card's prior (or on the
user's calibration file), done by the target runtime's own quantizer on its export.

The stage itself only gathers what the quantizer needs into a `CalibrationPlan` (calibration feeds, the
method, layer rules, auto mode); the runtime turns it into its artifact (compressor/quantization.py).

Mixed precision: layer rules (`rules: [{match: "blocks.8*", precision: fp32}]`, last match wins) keep
chosen layers in float, and `auto_precision` measures each layer's quantization sensitivity (the PSNR of
the output when only that layer is quantized) and keeps the most sensitive layers in float, one at a time,
until the whole model reaches `min_psnr`. The manifest records every layer's precision and why.
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
        )
        return StageResult(model=model, plan=plan, metrics={"calibration": source, "method": self.method})
