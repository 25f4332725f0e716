"""What every stage shares: a frozen config that knows how to run itself, and the result it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import torch.nn as nn

    from compressor.context import RunContext
    from compressor.quantization import QuantizationPlan


@dataclass
class StageResult:
    """What a stage hands back: the new model plus what the manifest records about the change; a quantizing
    stage also hands the runtime its quantization plan."""

    model: nn.Module
    plan: QuantizationPlan | None = None
    state: dict[str, Any] = field(default_factory=dict)  # replayable record of architecture changes
    metrics: dict[str, Any] = field(default_factory=dict)


class StageConfig(BaseModel):
    """Base of every stage config: frozen, unknown keys rejected, `kind` names the stage."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: str
    # A quantizing stage (ptq, qat) ends the torch side: its plan tells the runtime how to quantize the export,
    # so it comes last in a profile, and a profile has at most one.
    quantizes: ClassVar[bool] = False
    # A stage whose model computes something other than the user's model, beyond exact rewrites and rounding
    # (pruning, training, a student): the release then keeps the user's original as its fp32 baseline and
    # ships the torch weights as the last such stage left them (student.safetensors).
    changes_model: ClassVar[bool] = False

    def run(self, model: nn.Module, ctx: RunContext) -> StageResult:  # pragma: no cover - abstract
        raise NotImplementedError
