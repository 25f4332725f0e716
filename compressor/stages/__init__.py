"""The list of stages, written out once. A profile's `stages:` entries are validated against this union."""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from compressor.stages.distill import DistillConfig
from compressor.stages.prune import PruneConfig
from compressor.stages.ptq import PTQConfig
from compressor.stages.qat import QATConfig
from compressor.stages.rewrite import RewriteConfig
from compressor.stages.sensitivity import SensitivityConfig

STAGE_CONFIGS = (SensitivityConfig, PruneConfig, DistillConfig, RewriteConfig, PTQConfig, QATConfig)

AnyStageConfig = Annotated[Union[STAGE_CONFIGS], Field(discriminator="kind")]
