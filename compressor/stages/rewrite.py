"""The rewrite stage: apply the exact graph rewrites the target's runtime needs, then prove they are exact."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from compressor.errors import CompressorError, ConfigError, first_line
from compressor.modelcard import as_output_list
from compressor.seeds import REWRITE_CHECK_SEED_OFFSET
from compressor.stages.base import StageConfig, StageResult

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

log = logging.getLogger("compressor")



class RewriteConfig(StageConfig):
    """Run rewrites by name (see compressor/rewrites); by default the ones the target lists."""

    kind: Literal["rewrite"] = "rewrite"
    passes: list[str] | None = Field(None, description="Rewrites to run, in order; null means the target's list.")
    tolerance: float = Field(1e-4, description="Largest output change, relative to the output's magnitude, a rewrite may cause.")

    def run(self, model: nn.Module, ctx) -> StageResult:
        from compressor.rewrites import REWRITES

        names = self.passes if self.passes is not None else ctx.config.target.rewrites
        check_rewrite_names(names, "rewrite stage")
        untraceable = _why_untraceable(model) if names else None
        if untraceable:
            # Rewrites work on torch.fx graphs; the export still works without them, so say so and go on.
            log.warning("rewrite: skipped %s: torch.fx cannot trace this model (%s)", names, untraceable)
            return StageResult(model=model, state={"applied": {}, "skipped": {name: untraceable for name in names}})
        applied = {}
        example = tuple(ctx.samples(2, REWRITE_CHECK_SEED_OFFSET).values())  # shapes for shape-bound rewrites
        for name in names:
            model, applied[name] = REWRITES[name](model, example)
        error = _relative_change(ctx.reference, model, ctx.samples(4, REWRITE_CHECK_SEED_OFFSET))
        if error > self.tolerance:
            raise CompressorError(
                f"rewrite stage: {sorted(applied)} changed the outputs by {error:.2e} (relative), above "
                f"{self.tolerance:.0e}; drop them with --set stages.rewrite.passes=[] and report a bug"
            )
        return StageResult(model=model, state={"applied": applied, "skipped": {}}, metrics={"relative_change": error})


def check_rewrite_names(names: list[str], where: str) -> None:
    """Refuse unknown rewrite names while resolving the config, before any work (and in --dry-run)."""
    from compressor.rewrites import REWRITES

    unknown = sorted(set(names) - set(REWRITES))
    if unknown:
        raise ConfigError(f"{where}: unknown rewrite(s) {unknown}; known: {sorted(REWRITES)}")


def _why_untraceable(model: nn.Module) -> str | None:
    from compressor.rewrites.graph import trace

    try:
        trace(model)  # the tracer the rewrites use
    except Exception as exc:  # fx raises many types: TraceError, AssertionError for TorchScript, ...
        return f"{type(exc).__name__}: {first_line(exc)}"
    return None


def _relative_change(reference: nn.Module, model: nn.Module, inputs: dict[str, torch.Tensor]) -> float:
    import torch

    with torch.no_grad():
        expected = as_output_list(reference(*inputs.values()))
        actual = as_output_list(model(*inputs.values()))
    worst = max(float((e - a).abs().max()) for e, a in zip(expected, actual))
    scale = max(float(e.abs().max()) for e in expected)
    return worst / max(scale, 1e-12)
