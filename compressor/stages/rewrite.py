"""The rewrite stage: apply the exact graph rewrites the target's runtime needs, then prove they are exact.
Every model gets them, whatever it came as (see _module_graph)."""

from __future__ import annotations

import copy
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
        from compressor.rewrites.convtranspose import leftover_convtransposes

        names = self.passes if self.passes is not None else ctx.config.target.rewrites
        check_rewrite_names(names, "rewrite stage")
        if not names:
            return StageResult(model=model, state={"applied": {}, "skipped": {}})
        example = tuple(ctx.samples(2, REWRITE_CHECK_SEED_OFFSET).values())  # shapes for shape-bound rewrites
        incoming = copy.deepcopy(model)  # what the rewrites must reproduce (the user's model, or the pruned one)
        model, graph, unreadable = _module_graph(model, example)
        if unreadable:
            # Neither fx nor torch.export can read the model; the export may still work without rewrites.
            log.warning("rewrite: skipped %s: %s", names, unreadable)
            return StageResult(model=model, state={"applied": {}, "skipped": {name: unreadable for name in names}})
        applied = {}
        for name in names:
            model, applied[name] = REWRITES[name](model, example)
        error = _relative_change(incoming, model, ctx.samples(4, REWRITE_CHECK_SEED_OFFSET))
        if error > self.tolerance:
            raise CompressorError(
                f"rewrite stage: {sorted(applied)} changed the outputs by {error:.2e} (relative), above "
                f"{self.tolerance:.0e}; drop them with --set stages.rewrite.passes=[] and report a bug"
            )
        # A ConvTranspose left behind matters only where decompose_convtranspose was asked for (ONNX Runtime has no
        # int8 kernel for it); TensorRT and LiteRT run it as it is.
        leftover = leftover_convtransposes(model) if "decompose_convtranspose" in names else {}
        state = {"graph": graph, "applied": applied, "skipped": {}, "not_rewritten": leftover}
        return StageResult(model=model, state=state, metrics={"relative_change": error})


def check_rewrite_names(names: list[str], where: str) -> None:
    """Refuse unknown rewrite names while resolving the config, before any work (and in --dry-run)."""
    from compressor.rewrites import REWRITES

    unknown = sorted(set(names) - set(REWRITES))
    if unknown:
        raise ConfigError(f"{where}: unknown rewrite(s) {unknown}; known: {sorted(REWRITES)}")


def _module_graph(model: nn.Module, example: tuple) -> tuple[nn.Module, str | None, str | None]:
    """(model, how its graph was read, None) for the rewrites, or (model, None, why not) when nothing reads it.

    torch.fx first: it keeps the user's modules as they are. TorchScript, exported programs and models with
    control flow fx refuses go through torch.export and come back as module calls (rewrites/capture.py); the
    rewrite check below compares the result with the original model at another batch size, so a capture
    that froze the batch, or anything else, fails there rather than in the release."""
    import torch

    from compressor.rewrites.capture import capture, is_exported_module
    from compressor.rewrites.graph import trace
    from compressor.rewrites.lift import FUNCTIONAL, lift_modules

    if not isinstance(model, torch.jit.ScriptModule) and not is_exported_module(model):
        try:
            traced = trace(model)  # the tracer the rewrites use
            if any(node.op == "call_function" and node.target in FUNCTIONAL for node in traced.graph.nodes):
                return lift_modules(traced), "torch.fx", None  # F.interpolate -> nn.Upsample, ...: see lift.py
            return model, "torch.fx", None
        except Exception as exc:  # fx raises many types: TraceError, TypeError, AssertionError, ...
            fx_failure = f"torch.fx: {type(exc).__name__}: {first_line(exc)}"
    else:
        fx_failure = "TorchScript" if isinstance(model, torch.jit.ScriptModule) else "exported program"
    try:
        with torch.no_grad():
            return capture(model, example), "torch.export", None
    except Exception as exc:  # torch.export's failures are as varied as fx's
        return model, None, f"{fx_failure}; torch.export: {type(exc).__name__}: {first_line(exc)}"


def _relative_change(reference: nn.Module, model: nn.Module, inputs: dict[str, torch.Tensor]) -> float:
    import torch

    with torch.no_grad():
        expected = as_output_list(reference(*inputs.values()))
        actual = as_output_list(model(*inputs.values()))
    worst = max(float((e - a).abs().max()) for e, a in zip(expected, actual))
    scale = max(float(e.abs().max()) for e in expected)
    return worst / max(scale, 1e-12)
