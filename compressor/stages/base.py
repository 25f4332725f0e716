"""What every stage shares: a frozen config that knows how to run itself, and the result it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import torch.nn as nn

    from compressor.context import RunContext


@dataclass
class StageResult:
    """What a stage hands back: the new model plus what the manifest records about the change."""

    model: nn.Module
    state: dict[str, Any] = field(default_factory=dict)  # replayable record of architecture changes
    metrics: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, Path] = field(default_factory=dict)


class StageConfig(BaseModel):
    """Base of every stage config: frozen, unknown keys rejected, `kind` names the stage."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: str
    # Stages that make the final artifact (the runtime's own quantizer, QAT's QDQ export) rather than a new
    # torch model set this and implement run_on_artifact(fp32_artifact, model, ctx, runtime): they run after
    # the fp32 export, and get the torch model that was exported too.
    after_export: ClassVar[bool] = False

    def run(self, model: nn.Module, ctx: RunContext) -> StageResult:  # pragma: no cover - abstract
        raise NotImplementedError
