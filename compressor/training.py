"""The one training loop: distillation (distill stage), quantization-aware fine-tuning (qat stage) and the
fine-tuning between iterative pruning steps all call `train`.

A caller gives the loss of one step (it draws that step's inputs, runs teacher and student), the parameters
to train, and optionally a held-out check (higher is better, e.g. PSNR vs the teacher) and a checkpoint file.
Adam with a cosine decay to 0; every `check_every` steps the check runs, the best weights are kept, and
training stops early once `patience` checks in a row did not improve; the best weights are restored at the
end. With a checkpoint, the whole state (weights, optimizer, schedule, best so far) is written atomically
every `check_every` steps, so an interrupted run continues where it was (`resume=True`); the file carries a
fingerprint of the settings, and one written for other settings is refused.

Under torchrun (compressor/distributed.py) every rank runs this loop on its slice of each step's batch: the
gradients are averaged over the ranks before each step, so all ranks keep the same weights; rank 0 alone runs
the held-out check (its verdict is sent to all) and writes the checkpoint, and a resumed run sends rank 0's
saved state to every rank.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from compressor.distributed import world
from compressor.errors import UsageError

Progress = Callable[..., None]  # report(text, done, total), as api.Steps.progress makes it


@dataclass
class Checkpoint:
    """Where the loop's state is kept between runs, and what it must have been written for."""

    path: Path
    fingerprint: str
    resume: bool = False


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)
    checks: list[tuple[int, float]] = field(default_factory=list)  # (step, value) of each held-out check
    best: tuple[int, float] | None = None
    stopped_early: bool = False
    resumed_at: int | None = None
    seconds: float = 0.0

    def metrics(self) -> dict:
        return {
            "steps_run": len(self.losses) + (self.resumed_at or 0), "loss_first": self.losses[0] if self.losses else None,
            "loss_last": self.losses[-1] if self.losses else None, "checks": self.checks,
            "best_step": self.best[0] if self.best else None, "best_check": self.best[1] if self.best else None,
            "stopped_early": self.stopped_early, "resumed_at_step": self.resumed_at, "train_seconds": self.seconds,
        }


def train(
    modules: dict[str, nn.Module],
    step_loss: Callable[[int], torch.Tensor],
    steps: int,
    lr: float,
    *,
    check: Callable[[], float] | None = None,
    check_every: int = 0,
    patience: int | None = None,
    checkpoint: Checkpoint | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Train the trainable parameters of `modules` (by name: the student, its adapters) for `steps` steps."""
    ranks = world()
    parameters = [p for module in modules.values() for p in module.parameters() if p.requires_grad]
    ranks.broadcast_state(list(modules.values()))
    optimizer = torch.optim.Adam(parameters, lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1))
    result, start_step, stale = TrainResult(), 0, 0
    best_state = None
    if checkpoint is not None and checkpoint.resume:
        start_step, best_state, stale = _restore(checkpoint, modules, optimizer, schedule, result)
    for module in modules.values():
        module.train()
        _freeze_norm_statistics(module)
    start = time.perf_counter()
    for step in range(start_step, steps):
        loss = step_loss(step)
        optimizer.zero_grad()
        loss.backward()
        ranks.average_gradients(parameters)
        optimizer.step()
        schedule.step()
        result.losses.append(_mean_over_ranks(loss.detach()))
        done = step + 1
        if progress:
            # done/total of this session's steps (a resumed run starts part-way): the display's ETA comes from its pace
            progress(f"step {done}/{steps}, loss {result.losses[-1]:.4g}", done - start_step, steps - start_step)
        if check is not None and check_every and (done % check_every == 0 or done == steps):
            value = ranks.from_main(lambda: _checked(modules, check))  # the same verdict, so every rank stops together
            result.checks.append((done, value))
            if result.best is None or value > result.best[1]:
                result.best, best_state, stale = (done, value), _state(modules), 0
            else:
                stale += 1
            if checkpoint is not None and ranks.is_main:
                _save(checkpoint, done, modules, optimizer, schedule, result, best_state, stale)
            if patience is not None and stale >= patience:
                result.stopped_early = True
                break
    for module in modules.values():
        module.eval()
    if best_state is not None:
        for name, module in modules.items():
            module.load_state_dict(best_state[name])
    result.seconds = time.perf_counter() - start
    if checkpoint is not None and ranks.is_main:
        checkpoint.path.unlink(missing_ok=True)  # finished: nothing left to resume
    return result


def _mean_over_ranks(loss: torch.Tensor) -> float:
    """The whole batch's loss: each rank's loss is the mean over its equal slice."""
    ranks = world()
    if ranks.distributed:
        loss = loss.clone()
        torch.distributed.all_reduce(loss)
        loss /= ranks.size
    return loss.item()


def _freeze_norm_statistics(module: nn.Module) -> None:
    # BatchNorm in train mode re-estimates its statistics on each batch, which destroyed quality when fine-tuning
    # (docs/architecture.md); its affine weights still train.
    for sub in module.modules():
        if isinstance(sub, nn.modules.batchnorm._BatchNorm):
            sub.eval()


def _checked(modules: dict[str, nn.Module], check: Callable[[], float]) -> float:
    for module in modules.values():
        module.eval()
    try:
        return float(check())
    finally:
        for module in modules.values():
            module.train()
            _freeze_norm_statistics(module)


def _state(modules: dict[str, nn.Module]) -> dict[str, dict[str, torch.Tensor]]:
    return {name: copy.deepcopy(module.state_dict()) for name, module in modules.items()}


def _save(checkpoint: Checkpoint, step: int, modules, optimizer, schedule, result: TrainResult, best_state, stale: int) -> None:
    state = {
        "fingerprint": checkpoint.fingerprint, "step": step, "modules": _state(modules),
        "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "best_state": best_state,
        "best": list(result.best) if result.best else None, "checks": [list(c) for c in result.checks], "stale": stale,
    }
    checkpoint.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = checkpoint.path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, checkpoint.path)  # a run killed while saving leaves the previous checkpoint whole


def _restore(checkpoint: Checkpoint, modules, optimizer, schedule, result: TrainResult):
    """Load the checkpoint into the modules, optimizer and schedule; (next step, best weights, stale checks).
    Under torchrun rank 0 reads it and every rank gets its state (other nodes do not have the file)."""
    state = world().from_main(lambda: _read_checkpoint(checkpoint))
    for name, module in modules.items():
        module.load_state_dict(state["modules"][name])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    result.resumed_at = state["step"]
    result.best = tuple(state["best"]) if state["best"] else None
    result.checks = [tuple(c) for c in state["checks"]]
    return state["step"], state["best_state"], state["stale"]


def _read_checkpoint(checkpoint: Checkpoint) -> dict:
    if not checkpoint.path.is_file():
        raise UsageError(f"--resume: no checkpoint at {checkpoint.path} (the run finished, or never reached its first "
                         "check); run again without --resume")
    state = torch.load(checkpoint.path, weights_only=True)  # plain tensors and numbers: no pickle runs
    if state.get("fingerprint") != checkpoint.fingerprint:
        raise UsageError(f"--resume: {checkpoint.path} was written by a run with other settings or another model; "
                         "run without --resume to start over (it replaces the checkpoint)")
    return state
