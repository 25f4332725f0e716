"""The sensitivity stage: measure the sensitivity table (compressor/sensitivity.py) of the model entering it
and put it in the release (the manifest, report.md's table and the heatmap `sensitivity.png`), without
changing the model. The prune stage with a `macs` budget measures and records the same table itself; this
stage is for a release that should show the table without pruning (or before a `ratio` prune).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from compressor.layer_rules import LayerRule
from compressor.stages.base import StageConfig, StageResult

if TYPE_CHECKING:
    import torch.nn as nn

DEFAULT_RATIOS = [0.25, 0.5, 0.75]  # fractions of a group's channels cut, one setting each
DEFAULT_SAMPLES = 64  # prior samples per setting: enough to rank layers, seconds per model on 2 cores


class SensitivityConfig(StageConfig):
    """Measure how much each channel group and layer can change before the output suffers; the model passes unchanged."""

    kind: Literal["sensitivity"] = "sensitivity"
    ratios: list[float] = Field(DEFAULT_RATIOS, description="Fractions of each group's channels cut, one at a time.")
    samples: int = Field(DEFAULT_SAMPLES, ge=8, description="Prior samples each setting is scored on.")
    rules: list[LayerRule] = Field(default_factory=list, description="`skip: true` leaves a layer's group out of the table.")
    fid: bool = Field(False, description="Also score every setting with FID (Inception weights as for quality; slow).")

    @field_validator("ratios")
    @classmethod
    def _ratios_inside(cls, ratios: list[float]) -> list[float]:
        return check_ratios(ratios, "sensitivity")

    def run(self, model: nn.Module, ctx) -> StageResult:
        from compressor.evaluate.reference_stats import make_extractor
        from compressor.sensitivity import analyse

        fid = make_extractor("inception", ctx.config.profile.quality.fid_weights) if self.fid else None
        table = analyse(model, ctx.card, ctx.config.target, ratios=self.ratios, samples=self.samples,
                        seed=ctx.config.seed, rules=self.rules, progress=ctx.progress, fid=fid)
        return StageResult(model=model, metrics=record_table(table, ctx))


def check_ratios(ratios: list[float], stage: str) -> list[float]:
    if not ratios or any(not 0 < r < 1 for r in ratios):
        raise ValueError(f"{stage}: ratios {ratios} must be a non-empty list of fractions strictly between 0 and 1")
    return ratios


def record_table(table: dict[str, Any], ctx) -> dict[str, Any]:
    """The stage metrics that carry a sensitivity table into the report, after drawing its heatmap into the release."""
    from compressor.release.sensitivity_view import HEATMAP_FILE, write_heatmap

    write_heatmap(table, ctx.work_dir / HEATMAP_FILE)
    return {"sensitivity": table, "heatmap": HEATMAP_FILE}
