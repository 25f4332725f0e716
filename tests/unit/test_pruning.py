"""Structured pruning on Torch-Pruning's graph: which layers shrink together, GroupNorm, outputs, rebuild,
the MACs allocation and the prune stage's config."""

from __future__ import annotations

import copy

import pytest
import torch
from pydantic import ValidationError

from compressor.errors import CompressorError, ConfigError
from compressor.layer_rules import LayerRule
from compressor.pruning.channels import PrunableGraph, prune_channels, rebuild
from compressor.stages.prune import PruneConfig
from compressor.testing.models import (
    AttentionDecoder,
    DCGANGenerator,
    ResnetGenerator,
    ShapeBranchDecoder,
    TinyDecoder,
    TinyGenerator,
    UNetGenerator,
    randomized,
)


def _example(model) -> tuple[torch.Tensor, ...]:
    shapes = {AttentionDecoder: (4, 8, 8), DCGANGenerator: (100, 1, 1), ResnetGenerator: (3, 32, 32), UNetGenerator: (3, 32, 32),
              ShapeBranchDecoder: (4, 8, 8), TinyDecoder: (4,), TinyGenerator: (8,)}
    torch.manual_seed(1)
    return (torch.randn(2, *shapes[type(model)]),)


def test_groups_of_a_dcgan_follow_the_layers_that_shrink_together():
    model = DCGANGenerator(ngf=8).eval()
    graph = PrunableGraph(model, _example(model))
    assert graph.groups["main.0"].layers == ["main.0", "main.1", "main.3"]  # conv out, its BatchNorm, the next conv in
    assert graph.skipped == {"main.12": "its channels are a model output"}


@pytest.mark.parametrize("cls", [DCGANGenerator, ResnetGenerator, UNetGenerator, TinyDecoder, AttentionDecoder])
def test_pruning_every_group_keeps_the_model_running_and_rebuild_replays_it(cls):
    model = cls().eval()
    example = _example(model)
    original = copy.deepcopy(model)
    rules = [LayerRule(match="project", skip=True)]  # TinyDecoder views its projection to a fixed width
    graph = PrunableGraph(model, example, rules)
    counts = {name: group.kept_count(0.5, 4) for name, group in graph.groups.items()}
    record = prune_channels(model, example, counts, rules)
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in original.parameters())
    with torch.no_grad():
        assert model(*example).shape == original(*example).shape
    rebuilt = rebuild(copy.deepcopy(original), example, record)
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(*example), model(*example))


def test_groupnorm_loses_whole_groups_and_the_kept_groups_compute_what_they_did():
    model = TinyDecoder(channels=16).eval()  # GroupNorm(4, 8): groups of 2 channels
    example = _example(model)
    graph = PrunableGraph(model, example)
    assert graph.groups["blocks.1"].unit == 2
    inputs = {}
    model.blocks[2].register_forward_hook(lambda mod, args, out: inputs.update(before=(args[0], out)))
    with torch.no_grad():
        model(*example)
    kept = graph.keep_strongest("blocks.1", 4)
    graph.prune("blocks.1", kept)
    norm = model.blocks[2]
    assert (norm.num_channels, norm.num_groups) == (4, 2)
    x, out = inputs["before"]
    with torch.no_grad():
        torch.testing.assert_close(norm(x[:, kept]), out[:, kept])  # the statistics of the groups kept are unchanged


def test_a_rule_keeps_a_group_whole():
    model = DCGANGenerator(ngf=8).eval()
    graph = PrunableGraph(model, _example(model), [LayerRule(match="main.4", skip=True)])
    assert "main.3" not in graph.groups and graph.skipped["main.3"] == "rule 0 (match 'main.4') on main.4"


def test_a_group_whose_cut_breaks_the_forward_pass_is_named_with_the_rule_that_skips_it():
    model = TinyGenerator(channels=16).eval()  # its forward views to self.channels, a fixed number
    example = _example(model)
    with pytest.raises(CompressorError, match=r"group 'project' breaks the model .*\{match: 'project', skip: true\}"):
        prune_channels(model, example, {"project": 8})


def test_attention_loses_whole_heads_and_the_kept_heads_compute_what_they_did():
    model = randomized(AttentionDecoder(width=32, heads=4)).eval()  # heads of 8 channels
    example, masked = _example(model), copy.deepcopy(model)
    graph = PrunableGraph(model, example)
    group = graph.groups["attn.to_q"]
    assert (group.layers, group.unit, group.heads) == (["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0"], 8, ("attn", "heads"))
    assert group.kept_count(0.5, 8) == 16 and group.kept_count(0.6, 16) == 16  # whole heads, in the target's multiple
    kept = graph.keep_strongest("attn.to_q", 16)
    assert len(kept) == 16 and all(kept[i] % 8 == 0 and kept[i:i + 8] == list(range(kept[i], kept[i] + 8)) for i in (0, 8))
    graph.prune("attn.to_q", kept)
    assert model.attn.heads == 2 and model.attn.to_q.out_features == model.attn.to_out[0].in_features == 16
    with torch.no_grad():
        masked.attn.to_out[0].weight[:, sorted(set(range(32)) - set(kept))] = 0  # what the two removed heads added
        torch.testing.assert_close(model(*example), masked(*example))


def test_attention_whose_code_ignores_its_heads_attribute_stays_whole():
    model = AttentionDecoder(width=32, heads=4, literal_heads=True).eval()
    graph = PrunableGraph(model, _example(model))
    assert "attn.to_q" not in graph.groups and "changes what the other heads compute" in graph.skipped["attn.to_q"]
    model = ShapeBranchDecoder().eval()  # no head attribute at all
    assert PrunableGraph(model, _example(model)).skipped["to_q"].startswith("its channels are attention heads: only whole heads")


def test_kept_counts_are_multiples_of_the_target_and_of_the_groupnorm_unit():
    model = TinyDecoder(channels=32).eval()  # GroupNorm(4, 16): groups of 4
    group = PrunableGraph(model, _example(model)).groups["blocks.1"]
    assert [group.kept_count(r, 8) for r in (0.25, 0.5, 0.75, 0.99)] == [16, 8, 8, 8]
    assert group.kept_count(0.5, 3) == 12  # lcm(unit 4, multiple 3)


@pytest.mark.parametrize("settings, message", [
    ({"ratio": 1.0}, "less than 1"),
    ({"ratio": 0.0}, "greater than 0"),
    ({}, "exactly one of ratio"),
    ({"ratio": 0.5, "macs": 0.5}, "exactly one of ratio"),
    ({"macs": 0.5, "parameters": 0.5}, "exactly one of ratio"),
    ({"macs": 0.5, "latency": 0.5}, "exactly one of ratio"),
    ({"macs": 0.5, "ratios": [0.5, 1.5]}, "strictly between 0 and 1"),
])
def test_prune_settings_are_checked(settings, message):
    with pytest.raises(ValidationError, match=message):
        PruneConfig(**settings)


def test_the_allocation_meets_a_macs_budget_from_the_sensitivity_table():
    from compressor.config import resolve
    from compressor.modelcard import ModelCard
    from compressor.pruning.allocate import allocate
    from compressor.sensitivity import analyse
    from compressor.summary import summarize
    from compressor.testing.models import card_dict

    model = DCGANGenerator(nz=16, ngf=16).eval()
    card = ModelCard.model_validate(card_dict("dcgan", 16) | {"inputs": {"z": {"shape": [16, 1, 1], "prior": "normal"}},
                                                                "outputs": {"image": {"shape": [3, 64, 64], "range": [-1, 1]}}})
    target = resolve("cpu").target
    example = (torch.randn(2, 16, 1, 1),)
    table = analyse(model, card, target, ratios=[0.25, 0.5, 0.75], samples=16, seed=0)
    summary = summarize(model, card)
    layer_macs = {row["name"]: row["macs"] for row in summary["layers"] if row["macs"]}
    graph = PrunableGraph(model, example)
    counts, removed = allocate(graph, table, layer_macs, 0.4, 16)
    assert removed == []  # blocks=False
    prune_channels(model, example, counts)
    assert summarize(model, card)["macs_per_sample"] <= 0.4 * summary["macs_per_sample"]
    with pytest.raises(ConfigError, match=r"no allocation keeps only 1% of the MACs.*raise stages.prune.macs to at least"):
        allocate(PrunableGraph(DCGANGenerator(nz=16, ngf=16).eval(), example), table, layer_macs, 0.01, 16)


def test_the_allocation_meets_a_parameters_budget_too():
    from compressor.config import resolve
    from compressor.modelcard import ModelCard
    from compressor.pruning.allocate import allocate
    from compressor.sensitivity import analyse
    from compressor.summary import summarize
    from compressor.testing.models import card_dict

    model = DCGANGenerator(nz=16, ngf=16).eval()
    card = ModelCard.model_validate(card_dict("dcgan", 16) | {"inputs": {"z": {"shape": [16, 1, 1], "prior": "normal"}},
                                                                "outputs": {"image": {"shape": [3, 64, 64], "range": [-1, 1]}}})
    example = (torch.randn(2, 16, 1, 1),)
    table = analyse(model, card, resolve("cpu").target, ratios=[0.25, 0.5, 0.75], samples=16, seed=0)
    summary = summarize(model, card)
    layer_params = {row["name"]: row["params"] for row in summary["layers"] if row["params"]}
    counts, _ = allocate(PrunableGraph(model, example), table, layer_params, 0.5, 16, "parameters")
    prune_channels(model, example, counts)
    assert summarize(model, card)["parameters"] <= 0.5 * summary["parameters"]
    with pytest.raises(ConfigError, match=r"keeps only 1% of the parameters.*raise stages.prune.parameters to at least"):
        allocate(PrunableGraph(DCGANGenerator(nz=16, ngf=16).eval(), example), table, layer_params, 0.01, 16, "parameters")


def test_prune_must_come_before_the_rewrites():
    from compressor.config import Profile

    with pytest.raises(ValidationError, match=r"\['prune'\] must come before the rewrite stage"):
        Profile(name="p", stages=[{"kind": "rewrite"}, {"kind": "prune", "ratio": 0.5}])
    with pytest.raises(ValidationError, match=r"\['sensitivity'\] must come before the rewrite stage"):
        Profile(name="p", stages=[{"kind": "rewrite"}, {"kind": "sensitivity"}])


def test_a_block_that_barely_matters_is_removed_whole_and_the_record_rebuilds_it():
    from compressor.config import resolve
    from compressor.modelcard import ModelCard
    from compressor.pruning.allocate import allocate
    from compressor.sensitivity import analyse
    from compressor.summary import summarize
    from compressor.testing.models import ResnetGenerator, card_dict, randomized

    model = randomized(ResnetGenerator(width=16, blocks=2)).eval()
    with torch.no_grad():
        model.model[8].conv_block[5].weight.mul_(1e-3)  # the second residual block now adds almost nothing
    card = ModelCard.model_validate(card_dict("resnet", 3) | {"inputs": {"image": {"shape": [3, 32, 32], "prior": "normal"}},
                                                               "outputs": {"translated": {"shape": [3, 32, 32], "range": [-1, 1]}}})
    example = (torch.randn(2, 3, 32, 32),)
    table = analyse(model, card, resolve("cpu").target, ratios=[0.5], samples=16, seed=0)
    assert set(table["blocks"]) == {"model.7", "model.8"}  # the residual blocks, not the conv_block inside each
    assert table["blocks"]["model.8"]["psnr_db"] > table["blocks"]["model.7"]["psnr_db"] + 15
    summary = summarize(model, card)
    layer_macs = {row["name"]: row["macs"] for row in summary["layers"] if row["macs"]}
    counts, removed = allocate(PrunableGraph(model, example), table, layer_macs, 0.8, 16, blocks=True)
    assert removed == ["model.8"]
    original = copy.deepcopy(model)
    record = prune_channels(model, example, counts, removed_blocks=removed)
    assert summarize(model, card)["macs_per_sample"] <= 0.8 * summary["macs_per_sample"]
    rebuilt = rebuild(copy.deepcopy(original), example, record)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
