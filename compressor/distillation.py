"""Feature matching for distillation: record activations of named layers, and learned 1x1 adapters that map
a narrower student's activations to the teacher's width (as GAN Compression and OMGD do)."""

from __future__ import annotations

import torch
import torch.nn as nn

_MATCHED = (nn.modules.conv._ConvNd, nn.Linear)


def output_loss(outputs: list[torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor:
    """L1 + MSE between the student's and the teacher's outputs, summed over outputs: L1 keeps fine detail
    (MSE alone blurs), MSE weighs the large errors PSNR punishes."""
    return sum(nn.functional.l1_loss(o, t) + nn.functional.mse_loss(o, t) for o, t in zip(outputs, targets))


class Recorder:
    """Forward hooks that keep the outputs of the named layers during one forward pass."""

    def __init__(self, model: nn.Module, layers: list[str]):
        wanted = set(layers)
        self.modules = {name: module for name, module in model.named_modules() if name in wanted}
        self.values: dict[str, torch.Tensor] = {}
        self.handles = []

    def __enter__(self) -> Recorder:
        for name, module in self.modules.items():
            self.handles.append(module.register_forward_hook(lambda mod, args, out, name=name: self.values.__setitem__(name, out)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()


def matched_layers(teacher: nn.Module, student: nn.Module, inputs: tuple) -> dict[str, tuple[int, int, int]]:
    """Conv/linear layers both models have by name, except the last (its output is what the output loss
    compares), whose outputs agree in every axis but the channels: name -> (student width, teacher width, rank)."""
    teacher_names = dict(teacher.named_modules())
    shared = [name for name, module in student.named_modules() if isinstance(module, _MATCHED) and name in teacher_names]
    with torch.no_grad(), Recorder(teacher, shared) as seen:
        teacher(*inputs)
    with torch.no_grad(), Recorder(student, shared) as got:
        student(*inputs)
    found = {}
    for name in shared[:-1]:
        t, s = seen.values.get(name), got.values.get(name)
        if isinstance(t, torch.Tensor) and isinstance(s, torch.Tensor) and t.dim() in (2, 4) and t.dim() == s.dim():
            if t.shape[0] == s.shape[0] and t.shape[2:] == s.shape[2:]:
                found[name] = (s.shape[1], t.shape[1], t.dim())
    return found


def _adapter(student_width: int, teacher_width: int, rank: int) -> nn.Module:
    if student_width == teacher_width:
        return nn.Identity()  # a layer pruning left whole is compared as it is
    return nn.Conv2d(student_width, teacher_width, 1) if rank == 4 else nn.Linear(student_width, teacher_width)


class FeatureAdapters(nn.Module):
    """A learned 1x1 map per matched layer from the student's activation to the teacher's width; `loss` is the
    mean over layers of MSE relative to the teacher activation's variance (layers of any scale count alike)."""

    def __init__(self, teacher: nn.Module, student: nn.Module, inputs: tuple, seed: int = 0):
        super().__init__()
        found = matched_layers(teacher, student, inputs)
        self.layers = list(found)
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)  # the same adapters for the same models: training is deterministic for a seed
        self.maps = nn.ModuleDict({name.replace(".", "_"): _adapter(s, t, rank) for name, (s, t, rank) in found.items()})
        torch.random.set_rng_state(generator_state)

    def loss(self, student_values: dict[str, torch.Tensor], teacher_values: dict[str, torch.Tensor]) -> torch.Tensor:
        total = torch.zeros(())
        for name in self.layers:
            target = teacher_values[name]
            mapped = self.maps[name.replace(".", "_")](student_values[name])
            total = total + nn.functional.mse_loss(mapped, target) / target.var().clamp_min(1e-8)
        return total / max(len(self.layers), 1)
