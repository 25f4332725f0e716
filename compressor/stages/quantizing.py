"""What the two quantizing stages (ptq, qat) share: their common settings and where calibration data comes from."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from compressor.errors import ConfigError
from compressor.layer_rules import LayerRule
from compressor.stages.base import StageConfig

if TYPE_CHECKING:
    import numpy as np


class QuantizingStage(StageConfig):
    """Settings every quantizing stage takes; `--calibration` sets `calibration` on whichever the profile has."""

    quantizes: ClassVar[bool] = True
    calibration: str | None = Field(None, description="A .npz file or folder of them to calibrate on instead of the prior.")
    samples: int = Field(256, ge=16, description="Prior samples drawn for calibration (data-free).")
    min_psnr: float = Field(30.0, description="Lowest PSNR (dB) vs the fp32 model the int8 artifact may have.")
    rules: list[LayerRule] = Field(default_factory=list, description="Per-layer precision rules; the last match wins.")
    calibrate_on: Literal["sampling", "prior"] = Field(
        "sampling",
        description="Data-free calibration inputs. sampling: what the model's own sampling loops feed it (every "
        "timestep of a diffusion model); prior: each input drawn from its prior (a random timestep per sample). "
        "The same for a one-call model.",
    )

    def check_target(self, ctx) -> None:
        target = ctx.config.target
        if "int8" not in target.precisions:
            raise ConfigError(
                f"{self.kind}: target {target.name} does not run int8 (precisions {target.precisions}); "
                f"drop the {self.kind} stage from the profile or pick an int8 target"
            )

    def user_calibration(self, ctx) -> dict[str, np.ndarray] | None:
        """The user's calibration inputs (checked against the model card), or None to calibrate on the prior."""
        from compressor.calibration import load_calibration

        return load_calibration(Path(self.calibration), ctx.card) if self.calibration else None

    def data_free_inputs(self, ctx, count: int, offset: int) -> dict:
        """`count` data-free calibration inputs (tensors by input name), as `calibrate_on` says."""
        return ctx.model_inputs(count, offset) if self.calibrate_on == "sampling" else ctx.samples(count, offset)

    def data_free_source(self, ctx) -> str:
        """How the data-free calibration inputs were made, for the manifest."""
        steps = ctx.sampler.steps
        if self.calibrate_on == "prior" or steps == 1:
            return f"prior ({self.samples} seeded samples)"
        return f"sampling ({self.samples} model inputs along {-(-self.samples // steps)} sampling loops of {steps} steps)"
