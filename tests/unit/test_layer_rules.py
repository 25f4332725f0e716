"""Layer rules: globs on module names, the last match wins, a rule that matches nothing is named."""

from __future__ import annotations

import logging

import onnx
import torch

from compressor.layer_rules import LayerRule, apply_rules
from compressor.modelcard import ModelCard
from compressor.rewrites import decompose_convtranspose, fold_batchnorm
from compressor.runtimes.onnx.export import export_onnx
from compressor.runtimes.onnx.layers import compute_layers, io_layers, node_layers, nodes_of
from compressor.testing.models import TimestepUNet, TinyGenerator, card_dict, randomized

LAYERS = ["project", "blocks.2", "blocks.5", "head.conv"]


def test_last_matching_rule_wins():
    rules = [LayerRule(match="blocks.*", precision="fp32"), LayerRule(match="blocks.5", precision="int8")]
    chosen = apply_rules(LAYERS, rules, "ptq.rules")
    assert {layer: rule.precision for layer, (rule, _) in chosen.items()} == {"blocks.2": "fp32", "blocks.5": "int8"}
    assert chosen["blocks.5"][1] == 1


def test_rule_matching_nothing_is_named_in_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="compressor"):
        chosen = apply_rules(LAYERS, [LayerRule(match="decoder.*", skip=True)], "ptq.rules")
    assert chosen == {}
    assert "rule 0 (match 'decoder.*') matches no layer" in caplog.text and "blocks.2" in caplog.text


def test_exported_nodes_map_back_to_module_names(tmp_path):
    model = randomized(TinyGenerator())
    rewritten, _ = decompose_convtranspose(fold_batchnorm(model)[0])
    card = ModelCard.model_validate(card_dict("tiny", 8))
    graph = onnx.load(str(export_onnx(rewritten, card, tmp_path / "m.onnx", opset=20)))
    assert compute_layers(graph) == ["project", "blocks.2", "blocks.5"]
    layers = node_layers(graph)
    convs_of_blocks2 = [n.name for n in graph.graph.node if n.op_type == "Conv" and layers[n.name] == "blocks.2"]
    assert len(convs_of_blocks2) == 4  # the four output phases of the rewritten ConvTranspose
    assert set(convs_of_blocks2) <= set(nodes_of(graph, {"blocks.2"}))
    assert not set(convs_of_blocks2) & set(nodes_of(graph, {"blocks.5", "project"}))


def test_nested_modules_keep_their_full_name(tmp_path):
    """The exporter lists every enclosing module's full name; the layer is the innermost one."""

    class Inner(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(2, 3, 3)

        def forward(self, x):
            return self.conv(x)

    class Outer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(Inner(), torch.nn.ReLU())

        def forward(self, x):
            return self.body(x)

    card = ModelCard.model_validate({"inputs": {"x": {"shape": [2, 8, 8]}}})
    graph = onnx.load(str(export_onnx(Outer().eval(), card, tmp_path / "m.onnx", opset=20)))
    assert compute_layers(graph) == ["body.0.conv"]


def test_io_layers_are_the_first_and_last_weighted_layers_on_every_input_and_output(tmp_path):
    """A UNet: conv_in (the sample), the timestep embedding's first Linear (past Sin/Cos) and conv_out; a GAN:
    its first and last layers; nothing in between."""
    unet_card = ModelCard.model_validate({
        "inputs": {"sample": {"shape": [1, 16, 16]}, "timestep": {"shape": [], "dtype": "int64", "prior": "integers",
                                                                "range": [0, 999]}},
    })
    unet = onnx.load(str(export_onnx(TimestepUNet(channels=1, width=16).eval(), unet_card, tmp_path / "u.onnx", opset=20)))
    assert sorted(io_layers(unet)) == ["conv_in", "conv_out", "time_mlp.0"]
    card = ModelCard.model_validate(card_dict("tiny", 8))
    gan = onnx.load(str(export_onnx(randomized(TinyGenerator()), card, tmp_path / "g.onnx", opset=20)))
    assert sorted(io_layers(gan)) == ["blocks.5", "project"]


def test_io_layers_follow_a_residual_past_its_add(tmp_path):
    """out = x + second(relu(first(x))): both convs touch an input or an output through elementwise ops only."""

    class Residual(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.first, self.middle, self.second = (torch.nn.Conv2d(2, 2, 3, padding=1) for _ in range(3))

        def forward(self, x):
            return x + self.second(torch.relu(self.middle(torch.relu(self.first(x)))))

    card = ModelCard.model_validate({"inputs": {"x": {"shape": [2, 8, 8]}}})
    graph = onnx.load(str(export_onnx(Residual().eval(), card, tmp_path / "r.onnx", opset=20)))
    assert sorted(io_layers(graph)) == ["first", "second"]
