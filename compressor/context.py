"""RunContext: what every stage may read during a run (seed, work folder, frozen reference model, model card,
and the sampler that says how the model makes images)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from compressor.checkpoint import eval_mode
from compressor.config import ResolvedConfig
from compressor.modelcard import ModelCard, sample_inputs
from compressor.sampler import Sampler, sampler_for, torch_call, trajectory_inputs


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
    input_sha256: str = ""  # the input checkpoint's hash: what names the reference model's cached sample features
    progress: Callable[..., None] = field(default=lambda text, done=None, total=None: None, repr=False)  # report(text, done, total)
    _trajectories: dict = field(default_factory=dict, repr=False)  # model_inputs already recorded, by (count, offset)

    @cached_property
    def sampler(self) -> Sampler:
        """How the model makes images (from its card)."""
        return sampler_for(self.card)

    @classmethod
    def create(
        cls, model: nn.Module, card: ModelCard, config: ResolvedConfig, work_dir: Path, *, state_dir: Path | None = None,
        resume: bool = False, input_sha256: str = "",
    ) -> RunContext:
        # A frozen copy: stages may change `model` in place; the reference stays the user's original.
        # Callers run it under torch.no_grad() (TorchScript parameters refuse requires_grad_ changes).
        reference = eval_mode(copy.deepcopy(model))
        fingerprint = f"{input_sha256}:{config.sha256()}"
        # What stages make with torch's global generator (a fresh student, adapters) is seeded too: a rerun, or
        # another torchrun rank, starts from the same weights.
        torch.manual_seed(config.seed)
        return cls(config=config, card=card, work_dir=work_dir, reference=reference, state_dir=state_dir, resume=resume,
                   fingerprint=fingerprint, input_sha256=input_sha256)

    def samples(self, batch: int, offset: int = 0) -> dict[str, torch.Tensor]:
        """Seeded prior samples; `offset` keeps uses apart (parity vs calibration never share latents)."""
        return sample_inputs(self.card, batch, self.config.seed + offset)

    def model_inputs(self, count: int, offset: int = 0) -> dict[str, torch.Tensor]:
        """`count` inputs of single model calls as sampling really produces them, for everything that feeds the
        model one call at a time (calibration, distillation, QAT, pruning, the auto-precision probe): prior samples for a one-step
        model; for a diffusion model, the inputs the reference model's own sampling loops gave it at every step."""
        if self.sampler.steps == 1:
            return self.samples(count, offset)
        key = (count, offset)
        if key not in self._trajectories:
            recorded = trajectory_inputs(self.sampler, torch_call(self.reference), count, self.config.seed + offset,
                                         progress=self.progress)
            if len(self._trajectories) >= 8:  # training asks for a new batch every step: keep only the recent ones
                self._trajectories.pop(next(iter(self._trajectories)))
            self._trajectories[key] = {name: torch.from_numpy(array) for name, array in recorded.items()}
        return self._trajectories[key]
