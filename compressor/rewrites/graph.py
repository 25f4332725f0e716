"""Helpers every torch.fx rewrite shares: swap a submodule in place, and tidy a graph after editing it."""

from __future__ import annotations

import torch.fx as fx
import torch.nn as nn


def replace_module(root: nn.Module, qualified_name: str, new: nn.Module) -> None:
    parent_name, _, child = qualified_name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def finish(graph_module: fx.GraphModule) -> fx.GraphModule:
    """Check the edited graph, drop modules nothing calls any more, and regenerate forward()."""
    graph_module.graph.lint()
    graph_module.delete_all_unused_submodules()
    graph_module.recompile()
    return graph_module
