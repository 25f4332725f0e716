"""RunContext: what every stage may read during a run (seed, work folder, frozen reference model, model card)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from compressor.checkpoint import eval_mode
from compressor.config import ResolvedConfig
from compressor.modelcard import ModelCard, sample_inputs


@dataclass
class RunContext:
    """Read-only facts of a run. Stages report back only through their StageResult."""

    config: ResolvedConfig
    card: ModelCard
    work_dir: Path
    reference: nn.Module = field(repr=False)

    @classmethod
    def create(cls, model: nn.Module, card: ModelCard, config: ResolvedConfig, work_dir: Path) -> RunContext:
        # A frozen copy: stages may change `model` in place; the reference stays the user's original.
        # Callers run it under torch.no_grad() (TorchScript parameters refuse requires_grad_ changes).
        reference = eval_mode(copy.deepcopy(model))
        return cls(config=config, card=card, work_dir=work_dir, reference=reference)

    def samples(self, batch: int, offset: int = 0) -> dict[str, torch.Tensor]:
        """Seeded prior samples; `offset` keeps uses apart (parity vs calibration never share latents)."""
        return sample_inputs(self.card, batch, self.config.seed + offset)
