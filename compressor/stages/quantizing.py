"""What the two quantizing stages (ptq, qat) share: their common settings and where calibration data comes from."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

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
