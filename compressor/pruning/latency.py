"""A pruning budget on latency: the channel allocation whose fp32 export runs in at most a given fraction of
the user's model's time on the target's runtime, at the target's largest benchmark batch.

Latency does not fall in step with MACs (memory-bound layers, fixed costs per call), so it is measured: the
MACs budget starts at the latency fraction, the pruned and the original models are exported and timed in
interleaved rounds on this machine, and the MACs budget is scaled by (wanted / measured) until the measured
fraction meets the budget. Each probe costs an export and a few seconds of timing. Only a runtime that runs
here can be timed: TensorRT latency exists only on the device, so its targets take a `macs` budget.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch.nn as nn

from compressor.errors import ConfigError
from compressor.pruning.allocate import allocate
from compressor.pruning.channels import PrunableGraph, prune_channels

PROBES = 5  # measured allocations at most; each one scales the MACs budget by wanted / measured
ROUNDS = 5  # interleaved timing rounds per probe (drift on a shared machine hits both models alike)


def allocate_for_latency(
    model: nn.Module, graph: PrunableGraph, table: dict[str, Any], layer_macs: dict[str, int], keep: float, ctx,
    example: tuple, rules, blocks: bool = False,
) -> tuple[tuple[dict[str, int], list[str]], dict[str, Any]]:
    """(Channels to keep per group, blocks removed) so the measured latency fraction is at most `keep`; and
    what was measured."""
    from compressor.runtimes import runtime_for

    runtime = runtime_for(ctx.config.target)
    if runtime.left_for_the_device():
        raise ConfigError(f"prune: a latency budget is measured on the target's runtime, and {ctx.config.target.name}'s "
                          "runs only on the device; give stages.prune.macs instead")
    multiple, macs_keep, probes = ctx.config.target.channel_multiple, keep, []
    with tempfile.TemporaryDirectory() as scratch:
        original = _runner(runtime, model, ctx, Path(scratch) / "original.onnx")
        for _ in range(PROBES):
            try:
                allocation = allocate(graph, table, layer_macs, macs_keep, multiple, blocks=blocks)
            except ConfigError as exc:  # even the smallest allocation keeps more MACs than this probe asks
                raise ConfigError(f"prune: the latency budget {keep:.2f} needs fewer MACs than any allocation keeps (measured "
                                  f"{_tried(probes)}); raise stages.prune.latency or lower target.channel_multiple") from exc
            trial = copy.deepcopy(model)
            prune_channels(trial, example, allocation[0], rules, allocation[1])
            fraction = _fraction(original, _runner(runtime, trial, ctx, Path(scratch) / "pruned.onnx"), ctx)
            probes.append({"macs_budget": macs_keep, "latency_fraction": fraction})
            if fraction <= keep:
                return allocation, {"latency_probes": probes, "batch": max(ctx.config.target.benchmark.batch_sizes)}
            macs_keep *= keep / fraction
    raise ConfigError(f"prune: the latency budget {keep:.2f} was not met in {PROBES} measured allocations ({_tried(probes)}); "
                      "raise stages.prune.latency, or give stages.prune.macs")


def _runner(runtime, model: nn.Module, ctx, path: Path):
    from compressor.runtimes.base import Artifact
    from compressor.runtimes.onnx.export import export_onnx

    export_onnx(model, ctx.card, path, opset=runtime.options.opset)
    return runtime.load(Artifact(path, "onnx", "fp32", "final"))


def _fraction(original, pruned, ctx) -> float:
    """Median over interleaved rounds of (pruned / original) latency at the target's largest batch."""
    from compressor.evaluate.latency import time_callable
    from compressor.seeds import BENCHMARK_SEED_OFFSET

    settings = ctx.config.target.benchmark
    batch = max(settings.batch_sizes)
    feeds = {name: t.numpy() for name, t in ctx.samples(batch, BENCHMARK_SEED_OFFSET).items()}
    runs = max(settings.runs // ROUNDS, 3)
    ratios = []
    for _ in range(ROUNDS):
        base = time_callable(lambda: original(feeds), settings.warmup, runs)["median_ms"]
        cut = time_callable(lambda: pruned(feeds), settings.warmup, runs)["median_ms"]
        ratios.append(cut / base)
    return float(np.median(ratios))


def _tried(probes: list[dict[str, float]]) -> str:
    return ", ".join(f"{p['latency_fraction']:.2f}x at MACs {p['macs_budget']:.2f}" for p in probes) or "nothing"
