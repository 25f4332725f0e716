"""What `compressor inspect` shows: parameters, MACs, fp32 size, and a per-layer table.

MACs come from torch's own FlopCounterMode (multiply-accumulates = FLOPs / 2), attributed to the
leaf module that ran them; output shapes come from forward hooks on a batch-1 forward pass.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from compressor.modelcard import ModelCard, sample_inputs


def summarize(model: nn.Module, card: ModelCard) -> dict[str, Any]:
    """Model totals and one row per leaf layer (name, type, output shape, params, MACs), for a batch of 1."""
    inputs = tuple(sample_inputs(card, 1, seed=0).values())
    shapes = _output_shapes(model, inputs)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*inputs)
    macs = _macs_by_module(counter)
    layers = [
        {
            "name": name,
            "type": type(module).__name__,
            "output_shape": shapes.get(name),
            "params": sum(p.numel() for p in module.parameters(recurse=False)),
            "macs": macs.get(name, 0),
        }
        for name, module in model.named_modules()
        if name and not any(True for _ in module.children())
    ]
    parameters = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    return {
        "name": card.name,
        "family": card.family,
        "parameters": parameters,
        "macs_per_sample": int(counter.get_total_flops() // 2),
        "fp32_bytes": parameters * 4 + buffers,
        "layers": layers,
    }


def _output_shapes(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> dict[str, list[int]]:
    shapes: dict[str, list[int]] = {}
    handles = []
    for name, module in model.named_modules():
        if name and not isinstance(module, torch.jit.ScriptModule):  # scripted modules take no hooks
            handles.append(module.register_forward_hook(_recorder(name, shapes)))
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def _recorder(name: str, shapes: dict[str, list[int]]):
    def hook(module, args, output):
        if isinstance(output, torch.Tensor):
            shapes[name] = list(output.shape)

    return hook


def _macs_by_module(counter: FlopCounterMode) -> dict[str, int]:
    """FlopCounterMode keys are '<RootClass>.<module path>'; strip the root and halve FLOPs to MACs."""
    macs = {}
    for key, per_op in counter.get_flop_counts().items():
        if key == "Global" or "." not in key:
            continue
        macs[key.split(".", 1)[1]] = int(sum(per_op.values()) // 2)
    return macs


def format_table(summary: dict[str, Any]) -> list[list[str]]:
    """Rows for a text table, numbers formatted for people."""
    return [
        [row["name"], row["type"], str(row["output_shape"] or "-"), f"{row['params']:,}", f"{row['macs']:,}"]
        for row in summary["layers"]
    ]
