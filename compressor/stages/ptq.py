"""The ptq stage: post-training int8 quantization of the exported artifact, calibrated data-free on the
model card's prior (or on the user's calibration file), by the target runtime's own quantizer."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from compressor.errors import ConfigError
from compressor.stages.base import StageConfig, StageResult

# Seed offset for calibration latents, so they never coincide with the parity or benchmark latents.
CALIBRATION_SEED_OFFSET = 3_000
QUANTIZED_ARTIFACT = "model.onnx"


class PTQConfig(StageConfig):
    """Quantize weights (int8, symmetric, per channel) and activations (as the target says) after export."""

    kind: Literal["ptq"] = "ptq"
    after_export: ClassVar[bool] = True
    method: Literal["minmax", "percentile", "entropy"] = Field(
        "percentile", description="Activation range calibration; percentile beat minmax and entropy on every model tried."
    )
    percentile: float = Field(99.999, gt=90, le=100, description="Percentile kept by the percentile method.")
    samples: int = Field(256, ge=16, description="Prior samples drawn for calibration (data-free).")
    batch: int = Field(16, ge=1, description="Calibration batch size.")
    calibration: str | None = Field(None, description="A .npz file or folder of them to calibrate on instead of the prior.")
    min_psnr: float = Field(30.0, description="Lowest PSNR (dB) vs the fp32 model the int8 artifact may have.")

    def run(self, model, ctx) -> StageResult:  # pragma: no cover - the pipeline calls run_on_artifact
        raise TypeError("ptq runs on the exported artifact: call run_on_artifact")

    def run_on_artifact(self, fp32: Path, ctx, runtime) -> StageResult:
        from compressor.calibration import batches, load_calibration, prior_samples

        target = ctx.config.target
        if "int8" not in target.precisions or not hasattr(runtime, "quantize"):
            raise ConfigError(
                f"ptq: target {target.name} does not run int8 (precisions {target.precisions}); "
                "drop the ptq stage from the profile or pick an int8 target"
            )
        if self.calibration:
            data = load_calibration(Path(self.calibration), ctx.card, minimum=16)
        else:
            data = prior_samples(ctx.card, self.samples, ctx.config.seed + CALIBRATION_SEED_OFFSET)
        out = fp32.parent / QUANTIZED_ARTIFACT
        runtime.quantize(fp32, out, batches(data, self.batch), target, self.method, self.percentile)
        count = len(next(iter(data.values())))
        source = self.calibration or f"prior ({count} seeded samples)"
        return StageResult(model=None, artifacts={QUANTIZED_ARTIFACT: out}, metrics={"calibration": source, "method": self.method})
