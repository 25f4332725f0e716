"""Sensitivity analysis: how much each layer group can lose before the output suffers.

For every prunable channel group (compressor/pruning/channels.py) and each ratio, only that group is cut
(its weakest channels by magnitude); every whole block (compressor/pruning/blocks.py) is removed alone; for
every conv/linear layer and each precision the target runs below fp32, only that layer is rounded to it.
Each setting is scored on what the model generates from seeded start states through the model card's sampler
(the whole denoising loop of a diffusion model, so a layer's error is weighed by how it compounds over the steps)
against the unchanged model's images, computed once: PSNR
and the FD-surrogate, and FID when asked (an Inception extractor passed in: about 4 images/s on 2 cores,
so it multiplies the cost; on the few samples a table uses it ranks settings on the same latents and is not
comparable with published FIDs). The cost is one generation of the samples (sampler steps x forward passes)
per layer x setting; torchrun shares the settings out across processes (compressor/distributed.py). Results
are cached by a hash of the model's weights and the settings, so a second run (or the
prune stage allocating ratios from the table) is instant.

The quantization column is simulated in torch: weights rounded per output channel (symmetric, the target's
weight bits), the layer's input rounded per tensor (asymmetric uint8 or symmetric int8, as the target runs
them, range from the samples); fp16 rounds both to half precision. It ranks layers; the runtime's own
quantizer and parity check decide the shipped numbers.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
import torch.nn as nn

from compressor.cache import cache_dir
from compressor.distributed import model_hash, world
from compressor.errors import CompressorError
from compressor.evaluate.paired import data_range_of, psnr
from compressor.modelcard import sample_inputs
from compressor.sampler import generate_all, sampler_for, torch_call
from compressor.seeds import SENSITIVITY_SEED_OFFSET

if TYPE_CHECKING:
    from compressor.config import Target
    from compressor.evaluate.features import FeatureExtractor
    from compressor.layer_rules import LayerRule
    from compressor.modelcard import ModelCard

# 2: groups whose cut breaks the forward pass are not prunable; 3: whole blocks removed; 4: FID, attention heads;
# 5: a model with a sampler (diffusion) is scored on the images of its whole loop
CACHE_VERSION = 5
_QUANTIZABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)


def analyse(
    model: nn.Module, card: ModelCard, target: Target, *, ratios: list[float], samples: int, seed: int,
    rules: list[LayerRule] = (), progress: Callable[..., None] | None = None, fid: FeatureExtractor | None = None,
) -> dict[str, Any]:
    """The sensitivity table of `model` (cached): {"channels": {group: {...}}, "precision": {layer: {...}}, ...};
    with `fid` (Inception features) every row also carries the FID of its outputs against the unchanged model's."""
    settings = {
        "version": CACHE_VERSION, "ratios": sorted(ratios), "samples": samples, "seed": seed,
        "multiple": target.channel_multiple, "precisions": _quantized_precisions(target),
        "weight_bits": target.quantization.weight_bits, "activations": target.quantization.activations,
        "rules": [rule.model_dump(mode="json") for rule in rules], "card": card.model_dump(mode="json"),
        "fid": fid.sha256 if fid is not None else None,
    }
    path = cache_dir("sensitivity") / f"{_model_hash(model, settings)}.json"
    ranks = world()
    cached = ranks.from_main(lambda: json.loads(path.read_text()) if path.is_file() else None)  # one answer for all ranks
    if cached is not None:
        return {**cached, "cached": True}
    table = _measure(model, card, target, settings, rules, progress or (lambda text, done=None, total=None: None), fid)
    if ranks.is_main:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(table))
        os.replace(tmp, path)
    return {**table, "cached": False}


def _measure(model: nn.Module, card: ModelCard, target: Target, settings: dict, rules, progress, fid) -> dict[str, Any]:
    from compressor.evaluate.fd_surrogate import RandomConvFeatures
    from compressor.evaluate.frechet import frechet_distance_of_features
    from compressor.pruning.blocks import removable_blocks, remove_blocks
    from compressor.pruning.channels import PrunableGraph, forward_fails
    from compressor.summary import summarize

    start = time.perf_counter()
    seed = settings["seed"] + SENSITIVITY_SEED_OFFSET
    sampler = sampler_for(card)
    begin = sampler.start(settings["samples"], seed)

    def generated(trial: nn.Module) -> np.ndarray:  # what `trial` makes from the same start states and noise
        return generate_all(sampler, torch_call(trial), begin, settings["samples"], seed)

    example = tuple(sample_inputs(card, 2, seed).values())  # one call's inputs: shapes for the dependency graph
    model = copy.deepcopy(model).eval()
    reference = generated(model)
    value_range = data_range_of(sampler.range, reference)
    features = RandomConvFeatures() if _images(sampler, reference) else None
    unit_range = sampler.range or (float(reference.min()), float(reference.max()))
    reference_features = _features(features, reference, unit_range) if features is not None else None  # once, not per setting
    if fid is not None and features is None:
        raise CompressorError(f"FID needs image outputs; this model's first output has shape {list(reference.shape[1:])}: "
                              "drop --fid (PSNR and the FD-surrogate still rank the layers)")
    reference_fid = _features(fid, reference, unit_range) if fid is not None else None
    base_macs = summarize(model, card)["macs_per_sample"]
    try:
        found = PrunableGraph(copy.deepcopy(model), example, rules)
        groups, not_prunable = found.groups, dict(found.skipped)
    except CompressorError as exc:  # Torch-Pruning could not map the graph (its time limit): the other rows still count
        groups, not_prunable = {}, {"all channel groups": exc.message}
    layers = [name for name, module in model.named_modules() if isinstance(module, _QUANTIZABLE)]
    candidates = removable_blocks(model, example)
    jobs = [("channels", name, ratio) for name in groups for ratio in settings["ratios"]]
    jobs += [("blocks", name, None) for name in candidates] + [("precision", layer, p) for layer in layers for p in settings["precisions"]]
    ranks = world()
    mine = ranks.shard(range(len(jobs)))  # under torchrun each rank measures its share of the settings
    done = 0

    def score(outputs: np.ndarray) -> dict[str, float]:
        nonlocal done
        done += 1
        share = f" (this process's share of {len(jobs)})" if ranks.distributed else ""
        progress(f"{done}/{len(mine)} settings{share}", done, len(mine))  # the display adds the time left
        row = {"psnr_db": psnr(reference, outputs, value_range)}
        if features is not None:
            row["fd_surrogate"] = frechet_distance_of_features(reference_features, _features(features, outputs, unit_range))
        if fid is not None:
            row["fid"] = frechet_distance_of_features(reference_fid, _features(fid, outputs, unit_range))
        return row

    def measure(kind: str, name: str, setting) -> dict[str, Any]:
        if kind == "channels":
            kept = groups[name].kept_count(setting, settings["multiple"])
            pruned = copy.deepcopy(model)
            graph = PrunableGraph(pruned, example, rules, check_heads=False)  # `name` comes from the checked graph
            graph.prune(name, graph.keep_strongest(name, kept))
            failure = forward_fails(model, pruned, example)
            if failure:  # the user's code fixes a width the graph cannot see (e.g. a view to a stored channel count)
                return {"failure": f"cutting it breaks the forward pass ({failure}); skip rule: {{match: '{name}', skip: true}}"}
            macs = summarize(pruned, card)["macs_per_sample"]
            return {"kept": kept, "macs_fraction": macs / base_macs, **score(generated(pruned))}
        if kind == "blocks":
            trial = copy.deepcopy(model)
            remove_blocks(trial, [name])
            return {"macs_fraction": summarize(trial, card)["macs_per_sample"] / base_macs, **score(generated(trial))}
        return score(_quantized_outputs(model, name, setting, target, generated))

    rows = {index: measure(*jobs[index]) for index in mine}
    rows = {index: row for part in ranks.gather(rows) for index, row in part.items()}
    channels, blocks, precision = {}, {}, {}
    for index, (kind, name, setting) in enumerate(jobs):
        row = rows[index]
        if kind == "channels" and name not in not_prunable:
            if "failure" in row:
                not_prunable[name] = row["failure"]
                channels.pop(name, None)
            else:
                entry = channels.setdefault(name, {"channels": groups[name].channels, "layers": groups[name].layers, "settings": {}})
                entry["settings"][str(setting)] = row
        elif kind == "blocks":
            blocks[name] = row
        elif kind == "precision":
            precision.setdefault(name, {})[setting] = row
    return {
        "settings": {k: v for k, v in settings.items() if k != "card"}, "base_macs": base_macs,
        "channels": channels, "not_prunable": not_prunable, "blocks": blocks, "precision": precision,
        "seconds": time.perf_counter() - start,
    }


def _quantized_precisions(target: Target) -> list[str]:
    return [p for p in ("int8", "fp16") if p in target.precisions]


def _images(sampler, outputs: np.ndarray) -> bool:
    from compressor.evaluate.images import is_image_batch

    return is_image_batch(outputs.shape) and sampler.image_declared is not False


def _features(extractor, images: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """Features (FD-surrogate or Inception) of a batch of outputs."""
    from compressor.evaluate.features import extract
    from compressor.evaluate.images import to_unit_rgb

    return extract(extractor, to_unit_rgb(images, value_range))


def _quantized_outputs(model: nn.Module, layer: str, precision: str, target: Target, generated) -> np.ndarray:
    """What the model generates with only `layer`'s weights and input rounded to `precision` (module docstring)."""
    module = dict(model.named_modules())[layer]
    original = module.weight.data.clone()
    rules = target.quantization
    if precision == "fp16":
        module.weight.data = original.half().float()
        round_input = lambda x: x.half().float()  # noqa: E731
    else:
        module.weight.data = _fake_quant_weight(original, module, rules.weight_bits)
        round_input = _activation_rounder(model, module, generated, symmetric=rules.activations == "int8")
    handle = module.register_forward_pre_hook(lambda mod, args: (round_input(args[0]), *args[1:]))
    try:
        return generated(model)
    finally:
        handle.remove()
        module.weight.data = original


def _fake_quant_weight(weight: torch.Tensor, module: nn.Module, bits: int) -> torch.Tensor:
    axis = 1 if isinstance(module, nn.modules.conv._ConvTransposeNd) else 0  # output channels
    levels = 2 ** (bits - 1) - 1
    dims = [d for d in range(weight.dim()) if d != axis]
    scale = weight.abs().amax(dim=dims, keepdim=True).clamp_min(1e-12) / levels
    return (weight / scale).round().clamp(-levels, levels) * scale


def _activation_rounder(model: nn.Module, module: nn.Module, generated, symmetric: bool):
    """Round a layer's input to the range it takes over a whole generation (every step of a diffusion loop)."""
    seen = []
    handle = module.register_forward_pre_hook(lambda mod, args: seen.append((float(args[0].min()), float(args[0].max()))))
    try:
        generated(model)
    finally:
        handle.remove()
    low, high = min(s[0] for s in seen), max(s[1] for s in seen)
    if symmetric:
        scale, zero, qmin, qmax = max(abs(low), abs(high)) / 127 or 1.0, 0.0, -127, 127
    else:
        low, high = min(low, 0.0), max(high, 0.0)
        scale = (high - low) / 255 or 1.0
        zero, qmin, qmax = round(-low / scale), 0, 255
    return lambda x: ((x / scale).round() + zero).clamp(qmin, qmax).sub(zero) * scale


def _model_hash(model: nn.Module, settings: dict) -> str:
    """The cache key: the settings, the architecture and every weight (a pruned model hashes differently)."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    digest.update(model_hash(model).encode())
    return digest.hexdigest()[:32]
