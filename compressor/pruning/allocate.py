"""Per-group pruning ratios (and whole blocks removed) under a budget on MACs or parameters, allocated from
the sensitivity table.

Each group's cost of cutting to `k` channels is the output error the table measured when only that group
was cut (as mean squared error relative to the signal, 10^(-PSNR/10); errors of small independent changes
roughly add), interpolated between the measured ratios. Its saving is what the model's MACs (or parameters)
drop by, estimated per layer as its cost x (input channels kept) x (output channels kept). Greedily, the cut
with the least error per unit saved is taken, one channel step at a time, until the estimate meets the budget.
Removing a whole block is one more kind of step: its error is the table's for that block alone, its saving
the cost of every layer inside it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from compressor.errors import ConfigError
from compressor.pruning.channels import PrunableGraph


def allocate(
    graph: PrunableGraph, table: dict[str, Any], layer_costs: dict[str, int], keep: float, multiple: int, budget: str = "macs",
    blocks: bool = False,
) -> tuple[dict[str, int], list[str]]:
    """Channels to keep per group, and (with `blocks`) whole blocks to remove, so the estimated cost (per-layer
    MACs or parameters, named by `budget`) is at most `keep` of the model's."""
    import math

    total = sum(layer_costs.values())
    removable = list(table.get("blocks", {})) if blocks else []
    removed: list[str] = []
    # A group missing from the table could not be cut there (it breaks the forward pass): it stays whole.
    cuttable = {name: group for name, group in graph.groups.items() if name in table["channels"]}
    steps = {name: math.lcm(group.unit, multiple) for name, group in cuttable.items()}
    kept = {name: group.channels for name, group in graph.groups.items()}
    floor = {name: min(steps[name], group.channels) for name, group in cuttable.items()}
    estimate = _estimator(graph, layer_costs)
    current = estimate(kept, removed)
    while current > keep * total:
        best = None
        for name, group in cuttable.items():
            if kept[name] - steps[name] < floor[name]:
                continue
            trial = {**kept, name: kept[name] - steps[name]}
            saved = current - estimate(trial, removed)
            if saved <= 0:  # e.g. every layer of the group is inside a removed block
                continue
            cost = _error(table, name, group.channels, trial[name]) - _error(table, name, group.channels, kept[name])
            if best is None or cost / saved < best[0]:
                best = (cost / saved, name, trial, removed)
        for block in removable:
            if any(_nested(block, other) for other in removed):
                continue
            saved = current - estimate(kept, [*removed, block])
            cost = 10 ** (-table["blocks"][block]["psnr_db"] / 10)
            if saved > 0 and (best is None or cost / saved < best[0]):
                best = (cost / saved, block, kept, [*removed, block])
        if best is None:
            raise ConfigError(
                f"prune: no allocation keeps only {keep:.0%} of the {_WORDS[budget]}: cutting every prunable group to "
                f"{multiple} channels still keeps {current / total:.0%}; raise stages.prune.{budget} to at least "
                f"{math.ceil(current / total * 100) / 100:.2f} or lower target.channel_multiple"
            )
        kept, removed = best[2], best[3]
        current = estimate(kept, removed)
    return {name: count for name, count in kept.items() if name in cuttable}, removed


def _nested(block: str, other: str) -> bool:
    """The same block, or one inside the other (removing the outer one removes the inner)."""
    return block == other or block.startswith(f"{other}.") or other.startswith(f"{block}.")


_WORDS = {"macs": "MACs", "parameters": "parameters"}


def _error(table: dict[str, Any], name: str, channels: int, kept: int) -> float:
    """Relative squared error when only group `name` keeps `kept` of its `channels`, interpolated."""
    if kept >= channels:
        return 0.0
    settings = table["channels"][name]["settings"].values()
    points = sorted([(channels, 0.0)] + [(row["kept"], 10 ** (-row["psnr_db"] / 10)) for row in settings])
    xs, ys = zip(*points)
    # below the smallest count measured: the error there, grown as the cut deepens
    return float(np.interp(kept, xs, ys, left=ys[0] * xs[0] / max(kept, 1)))


def _estimator(graph: PrunableGraph, layer_costs: dict[str, int]):
    """Cost of a channel allocation: each layer's cost scaled by the kept fraction of its input and output channels."""
    names = {module: name for name, module in graph.model.named_modules()}
    scales: dict[str, list[tuple[str, str]]] = {}  # layer -> [(group, "in" | "out")]
    for name, group in graph.groups.items():
        module, handler = group.root
        whole = graph.graph.get_pruning_group(module, handler, list(range(group.channels)))
        for dep, _ in whole:
            layer = names.get(dep.target.module)
            if layer is not None:
                side = "in" if "in_channels" in dep.handler.__name__ else "out"
                scales.setdefault(layer, []).append((name, side))
    channels = {name: group.channels for name, group in graph.groups.items()}

    def estimate(kept: dict[str, int], removed: list[str] = ()) -> float:
        total = 0.0
        for layer, cost in layer_costs.items():
            if any(layer.startswith(f"{block}.") for block in removed):
                continue  # inside a removed block: it no longer runs
            factor = 1.0
            for group, _side in {entry for entry in scales.get(layer, [])}:
                factor *= kept[group] / channels[group]
            total += cost * factor
        return total

    return estimate
