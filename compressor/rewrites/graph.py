"""Helpers every torch.fx rewrite shares: swap a submodule in place, and tidy a graph after editing it."""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F


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


class _KeepRewrittenModules(fx.Tracer):
    """Modules a rewrite put in (they set `fx_leaf = True`) stay single calls when a later rewrite traces the
    model again, so their names, which layer rules and reports use, survive."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return getattr(module, "fx_leaf", False) or super().is_leaf_module(module, qualified_name)


def trace(model: nn.Module) -> fx.GraphModule:
    """torch.fx trace for rewrites (see _KeepRewrittenModules)."""
    tracer = _KeepRewrittenModules()
    graph = tracer.trace(model)
    return fx.GraphModule(tracer.root, graph, model.__class__.__name__)


def traced_with_shapes(model: nn.Module, example: tuple) -> fx.GraphModule:
    """Trace `model` and record on each node the shape of its output for `example` (node.meta['tensor_meta']),
    for rewrites that hold only for particular shapes (a 1x1 input, a fixed spatial size)."""
    from torch.fx.passes.shape_prop import ShapeProp

    graph_module = trace(model)
    ShapeProp(graph_module).propagate(*example)
    return graph_module


def input_shape(node: fx.Node) -> tuple[int, ...] | None:
    """Shape of the first argument of `node`, as recorded by traced_with_shapes (None if unknown)."""
    source = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
    return output_shape(source) if source is not None else None


def output_shape(node: fx.Node) -> tuple[int, ...] | None:
    """Shape of `node`'s output, as recorded by traced_with_shapes (None if unknown or not one tensor)."""
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def single_calls(graph_module: fx.GraphModule, accept) -> list[tuple[fx.Node, nn.Module]]:
    """(node, module) for each call of a module `accept(module)` approves that a rewrite may replace: called
    from one place only (one replacement would otherwise serve every call) with one positional input."""
    modules = dict(graph_module.named_modules())
    calls = [node.target for node in graph_module.graph.nodes if node.op == "call_module"]
    return [
        (node, modules[node.target])
        for node in graph_module.graph.nodes
        if node.op == "call_module" and accept(modules[node.target])
        and calls.count(node.target) == 1 and len(node.args) == 1 and not node.kwargs
    ]


def sole_relu_user(node: fx.Node, modules: dict[str, nn.Module]) -> fx.Node | None:
    """The ReLU (module or function, not in place) that is the only reader of `node`'s output, if any: a
    rewrite may apply it inside the module it puts in, where a quantized runtime fuses it."""
    users = list(node.users)
    if len(users) != 1:
        return None
    user = users[0]
    is_module_relu = user.op == "call_module" and type(modules.get(user.target)) is nn.ReLU
    is_function_relu = user.op == "call_function" and user.target in (F.relu, torch.relu)
    if (is_module_relu or is_function_relu) and not user.kwargs.get("inplace", False):
        return user
    return None
