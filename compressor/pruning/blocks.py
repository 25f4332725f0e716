"""Layer pruning: remove whole blocks (a ResNet block, a UNet's extra residual block) by letting their first
input pass straight through.

A block is a submodule that holds conv or linear layers (but not all of the model's), whose output has the
shape of its first input, and which is called once per forward pass. For a residual block, x + f(x), the
pass-through drops f; for any other block it is usually a large change, which the sensitivity table shows
(PSNR when only that block is removed). The prune stage removes the blocks whose removal alone costs least,
before it cuts channels.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

_WEIGHTED = (nn.modules.conv._ConvNd, nn.Linear)


class PassThrough(nn.Module):
    """What a removed block becomes: returns its first input (extra inputs, e.g. a timestep embedding, unused)."""

    def forward(self, x, *args, **kwargs):
        return x


def removable_blocks(model: nn.Module, example: tuple[torch.Tensor, ...]) -> list[str]:
    """Blocks (see the module docstring) whose removal leaves a model that runs with the same output shapes."""
    from compressor.pruning.channels import forward_fails

    weighted = {name for name, module in model.named_modules() if isinstance(module, _WEIGHTED)}
    shapes, calls, handles, inside = {}, {}, [], {}
    for name, module in model.named_modules():
        inside[name] = {layer for layer in weighted if layer.startswith(f"{name}.")}
        if not name or isinstance(module, _WEIGHTED) or not inside[name] or inside[name] == weighted:
            continue
        handles.append(module.register_forward_hook(lambda mod, args, out, name=name: _seen(shapes, calls, name, args, out)))
    try:
        with torch.no_grad():
            model(*example)
    finally:
        for handle in handles:
            handle.remove()
    found = []
    for name in shapes:
        if calls[name] != 1 or not shapes[name] or _wrapped(name, shapes, inside):
            continue
        trial = copy.deepcopy(model)
        remove_blocks(trial, [name])
        if forward_fails(model, trial, example) is None:
            found.append(name)
    return found


def remove_blocks(model: nn.Module, names: list[str]) -> None:
    """Replace each named block by a pass-through, in place."""
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, PassThrough())


def _wrapped(name: str, shapes: dict, inside: dict) -> bool:
    """Whether a block is all there is to its parent block (a ResNet block around its `conv_block`): only the
    parent is a candidate, since passing the inner one through would leave the parent computing x + x."""
    parent = name.rpartition(".")[0]
    while parent:
        if shapes.get(parent) and inside[parent] == inside[name]:
            return True
        parent = parent.rpartition(".")[0]
    return False


def _seen(shapes: dict, calls: dict, name: str, args: tuple, out) -> None:
    calls[name] = calls.get(name, 0) + 1
    first = args[0] if args else None
    shapes[name] = isinstance(first, torch.Tensor) and isinstance(out, torch.Tensor) and first.shape == out.shape
