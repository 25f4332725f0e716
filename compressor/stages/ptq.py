"""The ptq stage: post-training int8 quantization of the exported artifact, calibrated data-free on the
model card's prior (or on the user's calibration file), by the target runtime's own quantizer.

Mixed precision: layer rules (`rules: [{match: "blocks.8*", precision: fp32}]`, last match wins) keep
chosen layers in float, and `auto_precision` measures each layer's quantization sensitivity (the PSNR of
the output when only that layer is quantized) and keeps the most sensitive layers in float, one at a time,
until the whole model reaches `min_psnr`. The manifest records every layer's precision and why.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from compressor.budgets import FINAL_ARTIFACT
from compressor.errors import ConfigError
from compressor.layer_rules import LayerRule, describe_plan, precision_plan
from compressor.seeds import CALIBRATION_SEED_OFFSET, SENSITIVITY_SEED_OFFSET
from compressor.stages.base import StageConfig, StageResult

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("compressor")

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
    rules: list[LayerRule] = Field(default_factory=list, description="Per-layer precision rules; the last match wins.")
    auto_precision: bool = Field(False, description="Keep the most sensitive layers in float until min_psnr is met.")

    def run_on_artifact(self, fp32: Path, model, ctx, runtime) -> StageResult:
        target = ctx.config.target
        if "int8" not in target.precisions or not hasattr(runtime, "quantize"):
            raise ConfigError(
                f"ptq: target {target.name} does not run int8 (precisions {target.precisions}); "
                "drop the ptq stage from the profile or pick an int8 target"
            )
        feeds, source = self._calibration(ctx)
        quantize = _Quantizer(fp32, feeds, runtime, self, target)
        self._check_graph(quantize)
        plan, ruled = precision_plan(quantize.layers, self.rules, "ptq.rules", target)
        sensitivity = {}
        if self.auto_precision:  # layers a rule placed explicitly are the user's call, not auto's
            sensitivity = quantize.keep_sensitive_layers_in_float(plan, ruled, ctx, self.min_psnr)
        out = quantize.to(fp32.parent / FINAL_ARTIFACT, {layer for layer, (p, _) in plan.items() if p != "int8"})
        quantize.calibration_cache.unlink(missing_ok=True)  # not part of the release
        described = describe_plan(plan)
        state = {"layers": described["layers"], "sensitivity_psnr_db": sensitivity}
        metrics = {"calibration": source, "method": self.method, "int8_layers": described["int8_layers"],
                   "precision": described["precision"]}
        return StageResult(model=None, state=state, artifacts={FINAL_ARTIFACT: out}, metrics=metrics)

    def _check_graph(self, quantize: _Quantizer) -> None:
        """Say so when the graph defeats what ptq is for, instead of shipping a quietly worse artifact."""
        if not quantize.layers and (self.rules or self.auto_precision):
            raise ConfigError(
                "ptq: the export records no module names (e.g. a TorchScript input), so rules and auto_precision "
                "cannot find layers; drop them, or load the model from a folder or state_dict"
            )
        transposed = [node.name for node in quantize.graph.graph.node if node.op_type == "ConvTranspose"]
        if transposed:
            log.warning(
                "ptq: %d ConvTranspose node(s) were not rewritten (%s); ONNX Runtime has no int8 kernel for them, "
                "so they run in fp32 between Q/DQ nodes and may make int8 slower than fp32",
                len(transposed), ", ".join(transposed[:3]),
            )

    def _calibration(self, ctx) -> tuple[list[dict[str, np.ndarray]], str]:
        from compressor.calibration import batches, load_calibration, prior_samples

        if self.calibration:
            return batches(load_calibration(Path(self.calibration), ctx.card), self.batch), self.calibration
        data = prior_samples(ctx.card, self.samples, ctx.config.seed + CALIBRATION_SEED_OFFSET)
        return batches(data, self.batch), f"prior ({self.samples} seeded samples)"


class _Quantizer:
    """Quantizes the fp32 export with a chosen set of layers kept in float, and measures the result."""

    def __init__(self, fp32: Path, feeds: list[dict[str, np.ndarray]], runtime, config: PTQConfig, target) -> None:
        import onnx

        from compressor.runtimes.onnx_layers import compute_layers

        self.fp32, self.feeds, self.runtime, self.config, self.target = fp32, feeds, runtime, config, target
        # auto_precision quantizes many times: calibrate once (the ranges do not depend on the float layers)
        self.calibration_cache = fp32.parent / "calibration-cache.json"
        self.calibration_cache.unlink(missing_ok=True)
        self.graph = onnx.load(str(fp32))
        self.layers = compute_layers(self.graph)

    def to(self, out: Path, float_layers: set[str]) -> Path:
        from compressor.runtimes.onnx_layers import nodes_of

        exclude = nodes_of(self.graph, float_layers)
        method, percentile = self.config.method, self.config.percentile
        return self.runtime.quantize(
            self.fp32, out, self.feeds, self.target, method, percentile, exclude, calibration_cache=self.calibration_cache
        )

    def keep_sensitive_layers_in_float(self, plan: dict, ruled: set[str], ctx, min_psnr: float) -> dict[str, float]:
        """Per-layer sensitivity, then move int8 layers to fp32, most sensitive first, until min_psnr holds.
        Updates `plan` in place; returns each layer's PSNR when it alone is quantized."""
        from compressor.evaluate.paired import data_range_of, psnr

        inputs = {name: t.numpy() for name, t in ctx.samples(32, SENSITIVITY_SEED_OFFSET).items()}
        reference = self.runtime.load(self.fp32, self.target)(inputs)[0]
        value_range = data_range_of(next(iter(ctx.card.outputs.values())).range, reference)
        scratch = self.fp32.parent / "sensitivity.onnx"

        def quality(float_layers: set[str]) -> float:
            output = self.runtime.load(self.to(scratch, float_layers), self.target)(inputs)[0]
            return psnr(reference, output, value_range)

        candidates = [layer for layer, (precision, _) in plan.items() if precision == "int8" and layer not in ruled]
        layers = set(plan)
        sensitivity = {layer: quality(layers - {layer}) for layer in candidates}
        kept_float = {layer for layer, (precision, _) in plan.items() if precision != "int8"}
        for layer in sorted(candidates, key=sensitivity.get):  # lowest PSNR alone = most sensitive
            if quality(kept_float) >= min_psnr:
                break
            kept_float.add(layer)
            plan[layer] = ("fp32", f"auto: most sensitive left (PSNR {sensitivity[layer]:.1f} dB when alone int8)")
        scratch.unlink(missing_ok=True)
        return sensitivity
