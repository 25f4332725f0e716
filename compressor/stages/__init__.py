"""The list of stages, written out once. A profile's `stages:` entries are validated against this union."""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Discriminator, Field, Tag

from compressor.stages.distill import DistillConfig
from compressor.stages.prune import PruneConfig
from compressor.stages.prune_magnitude import MagnitudePruneConfig
from compressor.stages.ptq import PTQConfig
from compressor.stages.qat import QATConfig
from compressor.stages.rewrite import RewriteConfig
from compressor.stages.sensitivity import SensitivityConfig


def _prune_method(value) -> str:
    """The prune stage's method picks its config class; without one it cuts channels."""
    method = value.get("method") if isinstance(value, dict) else getattr(value, "method", None)
    return method or "channels"


PruneStageConfig = Annotated[
    Union[Annotated[PruneConfig, Tag("channels")], Annotated[MagnitudePruneConfig, Tag("magnitude")]],
    Discriminator(_prune_method),
]
STAGE_CONFIGS = (SensitivityConfig, PruneStageConfig, DistillConfig, RewriteConfig, PTQConfig, QATConfig)

AnyStageConfig = Annotated[Union[STAGE_CONFIGS], Field(discriminator="kind")]
