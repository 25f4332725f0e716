"""The prune stage: remove whole channels (method `channels`) where the model is least sensitive.

Each channel group (layers that must shrink together, found by Torch-Pruning's dependency graph:
compressor/pruning/channels.py) keeps its strongest channels by magnitude, in counts that are multiples of
the target's `channel_multiple`. How many: `ratio` cuts every group by the same fraction; `macs` or
`parameters` is a budget (the fraction of the model's MACs or parameters to keep) that the sensitivity table
turns into per-group counts, cutting least where the output suffers most (compressor/pruning/allocate.py);
`latency` is one measured on the target's runtime (compressor/pruning/latency.py). The table goes into the
release (report.md and sensitivity.png). Layer rules with
`skip: true` keep a layer's whole group.

Pruning comes before the rewrite stage: the rewrites replace modules with forms the dependency graph does
not know (the profile is refused otherwise). The manifest's state records each group's kept channels,
which rebuild the architecture from the user's model (`compressor.pruning.channels.rebuild`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, model_validator

from compressor.errors import ConfigError
from compressor.layer_rules import LayerRule
from compressor.seeds import REWRITE_CHECK_SEED_OFFSET
from compressor.stages.base import StageConfig, StageResult
from compressor.stages.sensitivity import DEFAULT_RATIOS, DEFAULT_SAMPLES, check_ratios, record_table

if TYPE_CHECKING:
    import torch.nn as nn


class PruneConfig(StageConfig):
    """Cut channels: the same `ratio` in every group, or per-group counts that meet a `macs` or `parameters` budget."""

    kind: Literal["prune"] = "prune"
    method: Literal["channels"] = Field("channels", description="channels: remove whole channels (structured).")
    ratio: float | None = Field(None, gt=0, lt=1, description="Fraction of each group's channels removed.")
    macs: float | None = Field(None, gt=0, lt=1, description="Budget: fraction of the model's MACs to keep; "
                               "ratios per group come from the sensitivity table.")
    parameters: float | None = Field(None, gt=0, lt=1, description="Budget: fraction of the model's parameters to "
                                     "keep, allocated like macs.")
    latency: float | None = Field(None, gt=0, lt=1, description="Budget: fraction of the model's latency to keep, "
                                  "measured on the target's runtime (fp32 exports, its largest batch).")
    blocks: bool = Field(True, description="With a budget: also remove whole blocks (a residual block passes its input "
                         "through) where the sensitivity table says that costs least.")
    ratios: list[float] = Field(DEFAULT_RATIOS, description="Ratios the sensitivity table measures (macs budget).")
    samples: int = Field(DEFAULT_SAMPLES, ge=8, description="Prior samples the sensitivity table is measured on (macs budget).")
    rules: list[LayerRule] = Field(default_factory=list, description="`skip: true` keeps a layer's group whole; last match wins.")

    @model_validator(mode="after")
    def _one_amount(self) -> PruneConfig:
        if sum(amount is not None for amount in (self.ratio, self.macs, self.parameters, self.latency)) != 1:
            raise ValueError("prune: give exactly one of ratio (same cut in every group), macs, parameters or latency (a "
                             "budget: the fraction to keep), e.g. --set stages.prune.macs=0.25")
        check_ratios(self.ratios, "prune")
        return self

    changes_model: ClassVar[bool] = True

    def run(self, model: nn.Module, ctx) -> StageResult:
        from compressor.pruning.channels import PrunableGraph, prune_channels
        from compressor.summary import summarize

        check_prunable(model)
        example = tuple(ctx.samples(2, REWRITE_CHECK_SEED_OFFSET).values())
        multiple = ctx.config.target.channel_multiple
        before = summarize(model, ctx.card)
        graph = PrunableGraph(model, example, self.rules)  # reads the graph only; prune_channels cuts
        if not graph.groups:
            raise ConfigError(f"prune: no channel group can be cut in this model ({graph.skipped}); drop the prune stage")
        (counts, removed), table, measured = self._counts(model, graph, before, ctx, example)
        record = prune_channels(model, example, counts, self.rules, removed)
        after = summarize(model, ctx.card)
        not_prunable = table["not_prunable"] if table else graph.skipped
        state = {"architecture": record, "not_prunable": not_prunable, "channel_multiple": multiple}
        metrics = {
            "macs_before": before["macs_per_sample"], "macs_after": after["macs_per_sample"],
            "macs_fraction": after["macs_per_sample"] / before["macs_per_sample"],
            "parameters_before": before["parameters"], "parameters_after": after["parameters"],
            "channels": {name: f"{entry['channels']} -> {len(entry['kept'])}" for name, entry in record["groups"].items()},
            "removed_blocks": record["removed_blocks"],
            **(record_table(table, ctx) if table else {}), **measured,
        }
        return StageResult(model=model, state=state, metrics=metrics)

    def _counts(self, model, graph, summary, ctx, example) -> tuple[tuple[dict[str, int], list[str]], dict | None, dict]:
        """(Channels each group keeps, blocks removed), the sensitivity table they were allocated from (None for
        a ratio), and what a latency budget measured."""
        multiple = ctx.config.target.channel_multiple
        if self.ratio is not None:
            return ({name: group.kept_count(self.ratio, multiple) for name, group in graph.groups.items()}, []), None, {}
        from compressor.pruning.allocate import allocate
        from compressor.sensitivity import analyse

        table = analyse(model, ctx.card, ctx.config.target, ratios=self.ratios, samples=self.samples,
                        seed=ctx.config.seed, rules=self.rules, progress=ctx.progress)
        if self.latency is not None:
            from compressor.distributed import world
            from compressor.pruning.latency import allocate_for_latency

            layer_macs = {row["name"]: row["macs"] for row in summary["layers"] if row["macs"]}
            # Timed on rank 0 only under torchrun: timings differ between processes, and all must cut the same.
            allocation, measured = world().from_main(lambda: allocate_for_latency(
                model, graph, table, layer_macs, self.latency, ctx, example, self.rules, self.blocks))
            return allocation, table, measured
        budget, keep = ("macs", self.macs) if self.macs is not None else ("parameters", self.parameters)
        column = {"macs": "macs", "parameters": "params"}[budget]  # the summary's per-layer columns
        layer_costs = {row["name"]: row[column] for row in summary["layers"] if row[column]}
        return allocate(graph, table, layer_costs, keep, multiple, budget, self.blocks), table, {}


def check_prunable(model) -> None:
    """Pruning edits modules in place: TorchScript and torch.export programs are refused, with what to do."""
    import torch

    from compressor.rewrites.capture import is_exported_module

    if isinstance(model, torch.jit.ScriptModule) or is_exported_module(model):
        raise ConfigError("prune: a TorchScript or exported (.pt2) model cannot be pruned yet; load the model "
                          "from a folder or state_dict, or drop the prune stage")
