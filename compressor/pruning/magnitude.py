"""Magnitude pruning: zero the smallest weights of conv and linear layers, in place; the shapes stay.

- unstructured: the `sparsity` fraction of weights with the smallest magnitude, under one threshold for all
  layers (`global`) or the same fraction in each layer (`layer`);
- 2:4: in every run of four weights along the input channels (for each output channel and kernel position),
  the two smallest, the pattern TensorRT runs on the sparse tensor cores of Ampere GPUs and Jetson Orin.
  Only convolutions and linear layers whose input channels are a multiple of 4 can take it (TensorRT's sparse
  kernels are for those); the others are listed with the reason.

The masks are held by torch.nn.utils.prune (a forward pre-hook multiplies the weight by its mask), so
fine-tuning between iterative steps keeps the zeros; `make_permanent` writes the masked weights back.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.utils.prune as torch_prune

_CONV_OR_LINEAR = (nn.modules.conv._ConvNd, nn.Linear)
_TWO_FOUR = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)  # what TensorRT's sparse kernels cover


def prunable_layers(model: nn.Module, pattern: str, skip: set[str] = frozenset()) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """(name -> layer the pattern can prune, name -> why another conv/linear layer is left dense)."""
    layers, left = {}, {}
    for name, module in model.named_modules():
        if not isinstance(module, _CONV_OR_LINEAR) or getattr(module, "weight", None) is None:
            continue
        if name in skip:
            left[name] = "a skip rule"
        elif pattern == "2:4" and not isinstance(module, _TWO_FOUR):
            left[name] = f"{type(module).__name__}: TensorRT's 2:4 kernels are for convolutions and linear layers"
        elif pattern == "2:4" and _input_axis_size(module) % 4:
            left[name] = f"{_input_axis_size(module)} input channels per group, not a multiple of 4"
        else:
            layers[name] = module
    return layers, left


def magnitude_masks(layers: dict[str, nn.Module], sparsity: float, scope: str, pattern: str) -> dict[str, torch.Tensor]:
    """A keep-mask (1 = kept) per layer, from the magnitudes of its current (already masked) weights."""
    weights = {name: _current_weight(module) for name, module in layers.items()}
    if pattern == "2:4":
        return {name: two_four_mask(weight, layers[name]) for name, weight in weights.items()}
    if scope == "layer":
        return {name: _smallest_zeroed(weight.abs(), _threshold(weight.abs().flatten(), sparsity)) for name, weight in weights.items()}
    everything = torch.cat([weight.abs().flatten() for weight in weights.values()])
    threshold = _threshold(everything, sparsity)
    return {name: _smallest_zeroed(weight.abs(), threshold) for name, weight in weights.items()}


def two_four_mask(weight: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """Keep the two largest of every four consecutive input-channel weights (per output channel and position)."""
    moved = weight.abs().movedim(1, -1)  # [out, *kernel, in]: runs of four along the input channels
    runs = moved.reshape(-1, 4)
    keep = torch.zeros_like(runs)
    keep.scatter_(1, runs.topk(2, dim=1).indices, 1.0)
    return keep.reshape(moved.shape).movedim(-1, 1).contiguous()


def is_two_four(weight: torch.Tensor) -> bool:
    """Whether every run of four input-channel weights holds at least two zeros (what TensorRT checks)."""
    if weight.dim() < 2 or weight.shape[1] % 4:
        return False
    runs = weight.detach().movedim(1, -1).reshape(-1, 4)
    return bool(((runs == 0).sum(dim=1) >= 2).all())


def two_four_layers(model: nn.Module) -> list[str]:
    """Conv and linear layers whose weights are in the 2:4 pattern (an engine built with sparsity can use them)."""
    return [name for name, module in model.named_modules()
            if isinstance(module, _TWO_FOUR) and getattr(module, "weight", None) is not None and is_two_four(module.weight)]


def apply_masks(layers: dict[str, nn.Module], masks: dict[str, torch.Tensor]) -> None:
    """Hold each mask on its layer (replacing an earlier one: the new mask was computed from the masked weights)."""
    for name, module in layers.items():
        if torch_prune.is_pruned(module):
            torch_prune.remove(module, "weight")
        torch_prune.custom_from_mask(module, "weight", masks[name])


def make_permanent(layers: dict[str, nn.Module]) -> None:
    """Write the masked weights into `weight` and drop the masks' hooks and buffers."""
    for module in layers.values():
        if torch_prune.is_pruned(module):
            torch_prune.remove(module, "weight")


def schedule(sparsity: float, iterations: int) -> list[float]:
    """Sparsity after each of `iterations` steps on the cubic schedule (Zhu and Gupta, 2017): big cuts first,
    while the weights have the most slack, small ones at the end."""
    return [sparsity * (1 - (1 - step / iterations) ** 3) for step in range(1, iterations + 1)]


def _current_weight(module: nn.Module) -> torch.Tensor:
    """The weight the next forward pass will use: under a mask, `weight` is only refreshed by that pass, so after
    an optimizer step it is the product of the trained original and the mask that counts."""
    if torch_prune.is_pruned(module):
        return (module.weight_orig * module.weight_mask).detach()
    return module.weight.detach()


def _input_axis_size(module: nn.Module) -> int:
    return module.weight.shape[1]


def _threshold(magnitudes: torch.Tensor, sparsity: float) -> float:
    count = int(round(sparsity * magnitudes.numel()))
    return float(magnitudes.kthvalue(count).values) if count else -1.0


def _smallest_zeroed(magnitudes: torch.Tensor, threshold: float) -> torch.Tensor:
    return (magnitudes > threshold).to(magnitudes.dtype)
