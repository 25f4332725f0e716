"""The one training loop: deterministic, early stopping on the held-out check, and resumable."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from compressor.errors import UsageError
from compressor.training import Checkpoint, train


def _task(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Linear(4, 1)
    teacher = nn.Linear(4, 1)

    def step_loss(step: int) -> torch.Tensor:
        x = torch.randn(16, 4, generator=torch.Generator().manual_seed(step))
        return nn.functional.mse_loss(model(x), teacher(x).detach())

    return model, step_loss


def test_the_same_seed_trains_to_the_same_weights():
    first, loss = _task()
    train({"m": first}, loss, 30, 1e-2)
    second, loss = _task()
    train({"m": second}, loss, 30, 1e-2)
    torch.testing.assert_close(first.weight, second.weight, rtol=0, atol=0)


def test_training_stops_after_patience_checks_without_improvement_and_keeps_the_best_weights():
    model, loss = _task()
    values = iter([1.0, 3.0, 2.0, 2.5, 2.9, 5.0])
    seen = {}

    def check() -> float:
        value = next(values)
        seen[value] = model.weight.detach().clone()
        return value

    result = train({"m": model}, loss, 100, 1e-2, check=check, check_every=5, patience=3)
    assert result.stopped_early and result.best == (10, 3.0) and len(result.losses) == 25
    torch.testing.assert_close(model.weight, seen[3.0])


def test_an_interrupted_run_resumes_where_it_stopped_and_ends_where_an_uninterrupted_one_does(tmp_path):
    whole, loss = _task()
    train({"m": whole}, loss, 40, 1e-2, check=lambda: 0.0, check_every=10, patience=None)

    interrupted, loss = _task()

    def dying(step: int) -> torch.Tensor:
        if step == 25:
            raise KeyboardInterrupt
        return loss(step)

    checkpoint = Checkpoint(tmp_path / "state.pt", "settings-a")
    with pytest.raises(KeyboardInterrupt):
        train({"m": interrupted}, dying, 40, 1e-2, check=lambda: 0.0, check_every=10, patience=None, checkpoint=checkpoint)
    assert checkpoint.path.is_file()
    resumed, loss = _task(seed=5)  # other starting weights: the checkpoint replaces them
    result = train({"m": resumed}, loss, 40, 1e-2, check=lambda: 0.0, check_every=10, patience=None,
                   checkpoint=Checkpoint(checkpoint.path, "settings-a", resume=True))
    assert result.resumed_at == 20 and len(result.losses) == 20
    torch.testing.assert_close(resumed.weight, whole.weight)
    assert not checkpoint.path.exists()  # finished: nothing left to resume


def test_resume_refuses_a_checkpoint_of_other_settings_and_a_missing_one(tmp_path):
    model, loss = _task()
    path = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        train({"m": model}, lambda step: (_ for _ in ()).throw(KeyboardInterrupt) if step == 12 else loss(step), 40, 1e-2,
              check=lambda: 0.0, check_every=10, checkpoint=Checkpoint(path, "settings-a"))
    with pytest.raises(UsageError, match="written by a run with other settings"):
        train({"m": model}, loss, 40, 1e-2, check=lambda: 0.0, check_every=10, checkpoint=Checkpoint(path, "settings-b", resume=True))
    with pytest.raises(UsageError, match="no checkpoint at"):
        train({"m": model}, loss, 40, 1e-2, checkpoint=Checkpoint(tmp_path / "none.pt", "x", resume=True))
