"""RunContext: what every stage may read during a run (seed, work folder, frozen reference model, model card)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

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
    # Where a stage keeps what must outlive a failed run (a training checkpoint), and whether to continue from it.
    state_dir: Path | None = None
    resume: bool = False
    fingerprint: str = ""  # the input checkpoint's and the resolved config's hashes: what a saved state was made for
    progress: Callable[[str], None] = field(default=lambda detail: None, repr=False)  # the running stage's progress text

    @classmethod
    def create(
        cls, model: nn.Module, card: ModelCard, config: ResolvedConfig, work_dir: Path, *, state_dir: Path | None = None,
        resume: bool = False, input_sha256: str = "",
    ) -> RunContext:
        # A frozen copy: stages may change `model` in place; the reference stays the user's original.
        # Callers run it under torch.no_grad() (TorchScript parameters refuse requires_grad_ changes).
        reference = eval_mode(copy.deepcopy(model))
        fingerprint = f"{input_sha256}:{config.sha256()}"
        return cls(config=config, card=card, work_dir=work_dir, reference=reference, state_dir=state_dir, resume=resume,
                   fingerprint=fingerprint)

    def samples(self, batch: int, offset: int = 0) -> dict[str, torch.Tensor]:
        """Seeded prior samples; `offset` keeps uses apart (parity vs calibration never share latents)."""
        return sample_inputs(self.card, batch, self.config.seed + offset)
