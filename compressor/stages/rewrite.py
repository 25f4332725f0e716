"""The rewrite stage: apply the exact graph rewrites the target's runtime needs, then prove they are exact."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
from pydantic import Field

from compressor.errors import CompressorError, first_line
from compressor.stages.base import StageConfig, StageResult

# Seed offset for the exactness check, so it never reuses the parity check's latents.
_CHECK_SEED_OFFSET = 7_000


class RewriteConfig(StageConfig):
    """Run rewrites by name (see compressor/rewrites); by default the ones the target lists."""

    kind: Literal["rewrite"] = "rewrite"
    passes: list[str] | None = Field(None, description="Rewrites to run, in order; null means the target's list.")
    tolerance: float = Field(1e-4, description="Largest output change, relative to the output's magnitude, a rewrite may cause.")

    def run(self, model: nn.Module, ctx) -> StageResult:
        from compressor.rewrites import REWRITES

        names = self.passes if self.passes is not None else ctx.config.target.rewrites
        unknown = sorted(set(names) - set(REWRITES))
        if unknown:
            raise CompressorError(f"rewrite stage: unknown rewrite(s) {unknown}; known: {sorted(REWRITES)}")
        applied, skipped = {}, {}
        for name in names:
            try:
                model, changed = REWRITES[name](model)
            except Exception as exc:  # torch.fx cannot trace every model; the export still works without it
                skipped[name] = f"{type(exc).__name__}: {first_line(exc)}"
                continue
            applied[name] = changed
        error = _relative_change(ctx.reference, model, ctx.samples(4, _CHECK_SEED_OFFSET))
        if error > self.tolerance:
            raise CompressorError(
                f"rewrite stage: {sorted(applied)} changed the outputs by {error:.2e} (relative), above "
                f"{self.tolerance:.0e}; drop them with --set stages.rewrite.passes=[] and report a bug"
            )
        return StageResult(model=model, state={"applied": applied, "skipped": skipped}, metrics={"relative_change": error})


@torch.no_grad()
def _relative_change(reference: nn.Module, model: nn.Module, inputs: dict[str, torch.Tensor]) -> float:
    expected = reference(*inputs.values())
    actual = model(*inputs.values())
    return float((expected - actual).abs().max() / expected.abs().max().clamp_min(1e-12))
