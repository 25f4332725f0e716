"""Rewrite Linear -> view(B, C, H, W) [-> activation] (how most generators turn z into their first feature
map) so that the Linear writes channels-last and the activation runs on the Linear's output.

Two costs go away on ONNX Runtime CPU, whose quantized convolutions run channels-last (docs/architecture.md):
- the Linear's rows are reordered to (H, W, C), so the reshape gives NHWC directly and the transpose to
  NCHW that follows cancels against the one ORT's NHWC pass puts before the first conv (a copy of the whole
  feature map otherwise);
- an elementwise activation commutes with the reshape, so it moves onto the Linear's output, where a
  quantizer gives the Gemm and the activation one output scale; left after the reshape it makes the
  quantized graph dequantize, reshape and quantize again.
The rows are only permuted: the outputs are the same numbers.
"""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn

from compressor.rewrites.graph import (
    finish,
    output_shape,
    replace_module,
    traced_with_shapes,
)

_RESHAPES = {"view", "reshape", "unflatten"}
# Elementwise activations (as modules) that may move across a reshape.
_ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Hardtanh)


class ChannelsLastLinear(nn.Linear):
    """Linear with rows in (H, W, C) order, an optional activation, and a view to NCHW through NHWC. A Linear
    itself, so the layer keeps its name for layer rules, reports and quantizers."""

    fx_leaf = True  # see rewrites/graph.py

    def __init__(self, linear: nn.Linear, shape: tuple[int, int, int], activation: nn.Module | None) -> None:
        super().__init__(linear.in_features, linear.out_features, bias=linear.bias is not None)
        channels, height, width = shape
        self.shape = (height, width, channels)
        self.activation = activation if activation is not None else nn.Identity()
        # Row r = c*H*W + h*W + w of the original becomes row (h*W + w)*C + c.
        order = torch.arange(linear.out_features).reshape(channels, height, width).permute(1, 2, 0).flatten()
        with torch.no_grad():
            self.weight.copy_(linear.weight[order])
            if linear.bias is not None:
                self.bias.copy_(linear.bias[order])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(super().forward(x)).unflatten(1, self.shape).permute(0, 3, 1, 2)


def linear_channels_last(model: nn.Module, example: tuple) -> tuple[nn.Module, list[str]]:
    """Replace each Linear on a 2-D input whose only reader is a reshape to (B, C, H, W), taking along an
    elementwise activation module that alone reads the reshape."""
    graph_module = traced_with_shapes(model, example)
    modules = dict(graph_module.named_modules())
    changed = []
    for node in list(graph_module.graph.nodes):
        if node.op != "call_module" or type(modules.get(node.target)) is not nn.Linear or len(node.users) != 1:
            continue
        reshape = next(iter(node.users))
        linear_shape, shape = output_shape(node), output_shape(reshape)
        is_reshape = reshape.op == "call_method" and reshape.target in _RESHAPES
        if not is_reshape or linear_shape is None or len(linear_shape) != 2 or shape is None or len(shape) != 4:
            continue
        activation = _sole_activation(reshape, modules)
        replacement = ChannelsLastLinear(modules[node.target], tuple(shape[1:]), modules[activation.target] if activation else None)
        replace_module(graph_module, node.target, replacement)
        last = activation if activation is not None else reshape
        last.replace_all_uses_with(node)
        graph_module.graph.erase_node(last)
        if activation is not None:
            graph_module.graph.erase_node(reshape)
        changed.append(node.target)
    graph_module.graph.eliminate_dead_code()  # the batch size the reshape read, if nothing else does
    return finish(graph_module), changed


def _sole_activation(reshape: fx.Node, modules: dict[str, nn.Module]) -> fx.Node | None:
    users = list(reshape.users)
    if len(users) != 1 or users[0].op != "call_module":
        return None
    module = modules.get(users[0].target)
    return users[0] if isinstance(module, _ELEMENTWISE) else None
