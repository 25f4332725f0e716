"""Finding the torch module behind each op of a `.tflite` from litert-torch's tensor names (pure Python: no
LiteRT needed), in the forms those names take for plain modules, torch.fx GraphModules and fused ops."""

from __future__ import annotations

import torch.nn as nn

from compressor.runtimes.litert_graph import _layer_of, module_scopes, uniquely_named

CONV = "torch.nn.modules.conv.Conv2d"
SEQ = "torch.nn.modules.container.Sequential"


class TwoBlocks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Sequential(nn.Conv2d(4, 4, 3), nn.ReLU())
        self.down = nn.Sequential(nn.Conv2d(4, 4, 3), nn.ReLU())
        self.head = nn.Conv2d(4, 1, 1)


def test_module_scopes_spell_each_level_as_litert_torch_does():
    scopes = module_scopes(TwoBlocks())
    assert scopes["up.0"] == [f"{SEQ}_up", f"{CONV}_0"] and scopes["head"] == [f"{CONV}_head"]


def test_a_full_path_picks_the_module_among_same_named_ones():
    scopes = module_scopes(TwoBlocks())
    root = f"{__name__}.TwoBlocks"
    assert _layer_of(f"{root}/{SEQ}_down/{CONV}_0;2", scopes) == "down.0"
    assert _layer_of(f"{SEQ}_up/{CONV}_0;", scopes) == "up.0"


def test_a_fused_op_belongs_to_the_first_module_it_names():
    scopes = module_scopes(TwoBlocks())
    assert _layer_of(f"{CONV}_head;;{SEQ}_up/{CONV}_0;", scopes) == "head"


def test_a_path_without_the_container_level_is_ambiguous_between_twins_and_unique_otherwise():
    scopes = module_scopes(TwoBlocks())  # a GraphModule calls `up.0` directly: one level, `...Conv2d_0`
    assert _layer_of(f"{CONV}_0;", scopes) == ""
    del scopes["down.0"]
    assert _layer_of(f"{CONV}_0;", scopes) == "up.0"


def test_a_tensor_of_no_module_has_no_layer():
    assert _layer_of("serving_default_output_0_output;", module_scopes(TwoBlocks())) == ""


def test_a_graphmodule_is_converted_under_flat_names_that_no_two_blocks_share():
    import torch.fx as fx

    traced = fx.symbolic_trace(_Called())
    flat = uniquely_named(traced)
    assert {node.target for node in flat.graph.nodes if node.op == "call_module"} == {"up__0", "up__1", "down__0", "down__1", "head"}
    scopes = module_scopes(traced)
    assert scopes["up.0"] == [f"{CONV}_up__0"] and scopes["down.0"] == [f"{CONV}_down__0"]
    assert _layer_of(f"{CONV}_down__0;3", scopes) == "down.0"


class _Called(TwoBlocks):
    def forward(self, x):
        return self.head(self.down(self.up(x)))
