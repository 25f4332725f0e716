"""The distill stage: train the student (the pruned model, or a smaller architecture the user gives) to
generate what the frozen original generates.

Data-free: every step draws fresh seeded samples from the model card's prior (or takes batches of the user's
`calibration` file). The loss is the output's L1 + MSE distance to the teacher's, plus intermediate feature
matching (as GAN Compression and OMGD do): for each conv/linear layer the two models share by name, the
student's activation goes through a learned 1x1 adapter to the teacher's width and is compared with MSE
relative to the teacher activation's variance. Nothing in the loss uses Inception or FD-surrogate features:
the network that judges quality is never trained against.

Every `check_every` steps the PSNR vs the teacher on held-out latents is measured; the best weights are kept
and training stops after `patience` checks without improvement. The loop (compressor/training.py) writes a
checkpoint at each check next to the release (OUT/.<target>.state/), so `--resume` continues an
interrupted run; the release itself is only written when the whole run finishes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from compressor.errors import ConfigError
from compressor.modelcard import as_output_list
from compressor.seeds import DISTILL_CHECK_SEED_OFFSET, DISTILL_TRAIN_SEED_OFFSET
from compressor.stages.base import StageConfig, StageResult

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

class DistillConfig(StageConfig):
    """Distil the frozen original (teacher) into the model entering this stage, or into `student`."""

    kind: Literal["distill"] = "distill"
    steps: int = Field(3000, ge=0, description="Training steps at most (early stopping may end sooner).")
    batch: int = Field(64, ge=1, description="Samples per step.")
    lr: float = Field(1e-3, gt=0, description="Adam's starting learning rate (cosine decay to 0).")
    features: bool = Field(True, description="Match intermediate activations of same-named conv/linear layers too.")
    feature_weight: float = Field(1.0, ge=0, description="Weight of the feature-matching loss beside the output loss.")
    student: str | None = Field(None, description="A model folder or `module:factory` to train instead of the "
                                "incoming model (its outputs must have the teacher's shapes).")
    calibration: str | None = Field(None, description="A .npz file or folder of them to train on instead of the prior.")
    check_every: int = Field(200, ge=1, description="Steps between held-out checks (and checkpoints).")
    check_samples: int = Field(256, ge=8, description="Held-out latents each check runs.")
    patience: int | None = Field(5, ge=1, description="Stop after this many checks without improvement (null: never).")

    changes_model: ClassVar[bool] = True

    def run(self, model: nn.Module, ctx) -> StageResult:
        import torch

        from compressor.distillation import FeatureAdapters, Recorder, output_loss
        from compressor.distributed import world
        from compressor.training import Checkpoint, train

        ranks = world()
        ranks.check_batch(self.batch, "stages.distill.batch")
        student = self._student(model, ctx)
        teacher = ctx.reference
        adapters = FeatureAdapters(teacher, student, self._inputs(ctx, DISTILL_TRAIN_SEED_OFFSET, 2)) if self.features else None
        held_out = self._inputs(ctx, DISTILL_CHECK_SEED_OFFSET, self.check_samples)
        with torch.no_grad():
            expected = as_output_list(teacher(*held_out))[0]
        data = self._user_batches(ctx)

        def step_loss(step: int) -> torch.Tensor:
            inputs = ranks.batch_slice(data(step) if data else self._inputs(ctx, DISTILL_TRAIN_SEED_OFFSET + step, self.batch))
            with torch.no_grad(), Recorder(teacher, adapters.layers if adapters else []) as seen:
                targets = as_output_list(teacher(*inputs))
            with Recorder(student, adapters.layers if adapters else []) as got:
                outputs = as_output_list(student(*inputs))
            loss = output_loss(outputs, targets)
            if adapters:
                loss = loss + self.feature_weight * adapters.loss(got.values, seen.values)
            return loss

        def check() -> float:
            return _psnr(expected, student, held_out, ctx)

        modules = {"student": student, **({"adapters": adapters} if adapters else {})}
        checkpoint = Checkpoint(self._checkpoint_path(ctx), self._fingerprint(ctx, student), ctx.resume) if ctx.state_dir else None
        before = check()
        result = train(modules, step_loss, self.steps, self.lr, check=check, check_every=self.check_every,
                       patience=self.patience, checkpoint=checkpoint, progress=ctx.progress)
        for parameter in student.parameters():
            parameter.requires_grad_(False)
        metrics = {"psnr_db_before": before, "psnr_db_after": check(), "matched_layers": adapters.layers if adapters else [],
                   **result.metrics()}
        state = {"student": self.student} if self.student else {}
        return StageResult(model=student.eval(), state=state, metrics=metrics)

    def _student(self, model: nn.Module, ctx) -> nn.Module:
        import torch

        if self.student is None:
            if isinstance(model, torch.jit.ScriptModule):
                raise ConfigError("distill: a TorchScript model cannot be trained as it is; load the model from a folder "
                                  "or state_dict, or give a student (--set stages.distill.student=...)")
            student = model
        else:
            student = _load_student(self.student, ctx)
        for parameter in student.parameters():
            parameter.requires_grad_(True)
        return student

    def _user_batches(self, ctx):
        """step -> inputs from the user's calibration file (cycled), or None to draw from the prior."""
        if not self.calibration:
            return None
        import torch

        from compressor.calibration import batches, load_calibration

        feeds = [tuple(torch.from_numpy(a) for a in feed.values()) for feed in batches(load_calibration(Path(self.calibration), ctx.card), self.batch)]
        return lambda step: feeds[step % len(feeds)]

    @staticmethod
    def _inputs(ctx, offset: int, batch: int) -> tuple[torch.Tensor, ...]:
        return tuple(ctx.model_inputs(batch, offset).values())

    @staticmethod
    def _checkpoint_path(ctx) -> Path:
        return ctx.state_dir / "distill.pt"

    def _fingerprint(self, ctx, student: nn.Module) -> str:
        shapes = {name: list(p.shape) for name, p in student.state_dict().items()}
        text = json.dumps([ctx.fingerprint, self.model_dump(mode="json"), shapes], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


def _load_student(source: str, ctx) -> nn.Module:
    """The user's student: a model folder (its compressor.yaml) or `module:factory` (called with no arguments)."""
    import importlib

    import torch

    from compressor.checkpoint import load_checkpoint

    if Path(source).exists():
        student = load_checkpoint(Path(source)).model
    elif ":" in source:
        module_name, _, factory = source.partition(":")
        try:
            student = getattr(importlib.import_module(module_name), factory)()
        except (ImportError, AttributeError, TypeError) as exc:
            raise ConfigError(f"distill.student: cannot make {source} ({type(exc).__name__}: {exc}); give an importable "
                              "module:factory that takes no arguments, or a model folder") from exc
    else:
        raise ConfigError(f"distill.student: {source} is neither a folder nor module:factory; fix the path")
    if isinstance(student, torch.jit.ScriptModule):
        raise ConfigError(f"distill.student: {source} is TorchScript, which cannot be trained; give the model's code")
    inputs = tuple(ctx.samples(2, DISTILL_CHECK_SEED_OFFSET).values())
    with torch.no_grad():
        try:
            got = [tuple(t.shape) for t in as_output_list(student(*inputs))]
        except Exception as exc:  # the student's own code
            raise ConfigError(f"distill.student: {source} does not run on the model card's inputs ({type(exc).__name__}: {exc})") from exc
        want = [tuple(t.shape) for t in as_output_list(ctx.reference(*inputs))]
    if got != want:
        raise ConfigError(f"distill.student: {source} outputs shapes {got}, the teacher {want}; the student must "
                          "generate what the teacher does")
    return student.float()


def _psnr(expected: torch.Tensor, student: nn.Module, inputs: tuple, ctx) -> float:
    import torch

    from compressor.evaluate.paired import data_range_of, psnr

    with torch.no_grad():
        actual = as_output_list(student(*inputs))[0].numpy()
    reference = expected.numpy()
    return psnr(reference, actual, data_range_of(ctx.card.output_range, reference))
