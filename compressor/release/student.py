"""The pruned (and distilled) torch model a release ships beside its artifacts, so a user can fine-tune further.

`student.safetensors` holds its weights under the original module names; `student.json` the record that
rebuilds its architecture from the user's model (`compressor.pruning.channels.rebuild`): for each channel
group, the channels kept (`architecture` is null when the shapes are the user's: magnitude pruning or
distillation alone; `student` names a student architecture the user gave), plus every layer's resulting
weight shape as a check.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

WEIGHTS = "student.safetensors"
RECORD = "student.json"


def write_student(out: Path, state: dict[str, torch.Tensor], record: dict[str, Any]) -> list[Path]:
    """Write the student's weights and architecture record into the release folder `out`; returns both paths."""
    from safetensors.torch import save_file

    # safetensors refuses tensors that share memory or are views; plain contiguous copies are what it stores.
    tensors = {name: tensor.detach().contiguous().clone() for name, tensor in state.items()}
    save_file(tensors, str(out / WEIGHTS))
    shapes = {name: list(tensor.shape) for name, tensor in tensors.items()}
    (out / RECORD).write_text(json.dumps({**record, "weights": WEIGHTS, "shapes": shapes}, indent=2) + "\n")
    return [out / WEIGHTS, out / RECORD]
