"""Turn the ATen calls of an exported graph back into the nn modules the rewrites match (see capture.py).

A torch.export graph computes `aten.convolution(x, weight, bias, ...)` on weights it reads with get_attr.
Each call whose weights are plain attributes becomes a call of the module that computes exactly the same
(nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.BatchNorm, nn.Upsample, nn.ReflectionPad2d, activations),
named after the module that owns the weight ("up_blocks.0.upsamplers.0.conv"), so layer rules, reports and
the manifest name layers as the user's code does. Views become `reshape` method calls, the form the
rewrites follow through. Anything else stays the ATen call it was. The functional calls a model traced with
torch.fx makes (F.interpolate, F.pad) are lifted the same way (FUNCTIONAL).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

aten = torch.ops.aten


def lift_modules(graph_module: fx.GraphModule) -> fx.GraphModule:
    """Replace, in place, every ATen call a module can compute with that module's call; returns the module."""
    names: set[str] = set()
    for node in list(graph_module.graph.nodes):
        if node.op != "call_function":
            continue
        if node.target in _RESHAPES and len(node.args) == 2:
            node.op, node.target = "call_method", "reshape"
            continue
        build = _BUILDERS.get(node.target)
        lifted = build(node, graph_module) if build is not None else None
        if lifted is None:
            continue
        module, inputs = lifted
        name = _free_name(*_owner(node), graph_module, names)
        graph_module.add_submodule(name, module.eval())  # an exported graph is an inference graph
        with graph_module.graph.inserting_before(node):
            call = graph_module.graph.call_module(name, tuple(inputs))
        call.meta = dict(node.meta)
        node.replace_all_uses_with(call)
        graph_module.graph.erase_node(node)
    for node in list(graph_module.graph.nodes):  # weights now read through their modules (no dead-code pass:
        if node.op == "get_attr" and not node.users:  # a user's fx graph may hold in-place calls nothing reads)
            graph_module.graph.erase_node(node)
    graph_module.graph.lint()
    graph_module.delete_all_unused_submodules()
    graph_module.recompile()
    return graph_module


def _tensor(value, graph_module: fx.GraphModule) -> torch.Tensor | None:
    """The tensor a get_attr node reads (None for None); raises LookupError for anything computed."""
    if value is None:
        return None
    if isinstance(value, fx.Node) and value.op == "get_attr":
        owner, _, attr = value.target.rpartition(".")
        return getattr(graph_module.get_submodule(owner), attr)  # the Parameter or buffer itself, shared
    raise LookupError("not a stored tensor")


def _as_parameter(tensor: torch.Tensor | None) -> nn.Parameter | None:
    if tensor is None or isinstance(tensor, nn.Parameter):
        return tensor
    return nn.Parameter(tensor, requires_grad=False)


def _rank(node: fx.Node) -> int | None:
    value = node.meta.get("val")
    return value.dim() if isinstance(value, torch.Tensor) else None


def _convolution(node: fx.Node, graph_module: fx.GraphModule, transposed: bool, stride, padding, dilation, output_padding, groups):
    x, weight, bias = node.args[0], node.args[1], node.args[2] if len(node.args) > 2 else None
    try:
        weight, bias = _tensor(weight, graph_module), _tensor(bias, graph_module)
    except LookupError:
        return None
    if weight is None or weight.dim() != 4 or isinstance(padding, str):
        return None
    kernel = tuple(weight.shape[2:])
    if transposed:
        in_channels, out_channels = weight.shape[0], weight.shape[1] * groups
        module = nn.ConvTranspose2d(in_channels, out_channels, kernel, stride=tuple(stride), padding=tuple(padding),
                                    output_padding=tuple(output_padding), groups=groups, bias=bias is not None,
                                    dilation=tuple(dilation))
    else:
        in_channels, out_channels = weight.shape[1] * groups, weight.shape[0]
        module = nn.Conv2d(in_channels, out_channels, kernel, stride=tuple(stride), padding=tuple(padding),
                           dilation=tuple(dilation), groups=groups, bias=bias is not None)
    module.weight, module.bias = _as_parameter(weight), _as_parameter(bias)
    return module, [x]


def _pairs(values, default) -> list:
    values = default if values is None else values
    return list(values) * 2 if len(values) == 1 else list(values)


def _conv2d(node, graph_module):
    args = list(node.args) + [None] * (7 - len(node.args))
    x, weight, bias, stride, padding, dilation, groups = args
    return _convolution(node, graph_module, False, _pairs(stride, [1]), padding if isinstance(padding, str) else _pairs(padding, [0]),
                        _pairs(dilation, [1]), [0, 0], groups or 1)


def _conv_transpose2d(node, graph_module):
    args = list(node.args) + [None] * (8 - len(node.args))
    x, weight, bias, stride, padding, output_padding, groups, dilation = args
    return _convolution(node, graph_module, True, _pairs(stride, [1]), _pairs(padding, [0]), _pairs(dilation, [1]),
                        _pairs(output_padding, [0]), groups or 1)


def _generic_convolution(node, graph_module):
    """aten.convolution, and aten._convolution (what TorchScript traces record: four backend flags more)."""
    x, weight, bias, stride, padding, dilation, transposed, output_padding, groups = node.args[:9]
    return _convolution(node, graph_module, transposed, _pairs(stride, [1]), _pairs(padding, [0]), _pairs(dilation, [1]),
                        _pairs(output_padding, [0]), groups)


def _linear(node, graph_module):
    x, weight, bias = (list(node.args) + [None])[:3]
    try:
        weight, bias = _tensor(weight, graph_module), _tensor(bias, graph_module)
    except LookupError:
        return None
    module = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    module.weight, module.bias = _as_parameter(weight), _as_parameter(bias)
    return module, [x]


_BATCHNORM_BY_RANK = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}


def _batch_norm(node, graph_module):
    x, weight, bias, mean, var, training, momentum, eps = node.args[:8]
    kind = _BATCHNORM_BY_RANK.get(_rank(x)) if isinstance(x, fx.Node) else None
    if training or kind is None:
        return None
    try:
        weight, bias, mean, var = (_tensor(t, graph_module) for t in (weight, bias, mean, var))
    except LookupError:
        return None
    if mean is None or var is None:
        return None
    module = kind(mean.shape[0], eps=eps, momentum=momentum, affine=weight is not None).eval()
    if weight is not None:
        module.weight, module.bias = _as_parameter(weight), _as_parameter(bias)
    module.running_mean, module.running_var = mean, var
    return module, [x]


def _upsample_nearest(node, graph_module):
    x, output_size, scales = (list(node.args) + [None, None])[:3]
    if output_size is not None or not scales or len(set(scales)) != 1:
        return None
    return nn.Upsample(scale_factor=float(scales[0]), mode="nearest"), [x]


def _reflection_pad(node, graph_module):
    x, padding = node.args[:2]
    return nn.ReflectionPad2d(tuple(padding)), [x]


def _pad(node, graph_module):
    """aten.pad(x, pads, 'reflect') on an image is what nn.ReflectionPad2d records in export's graph."""
    x, padding, mode = (list(node.args) + ["constant"])[:3]
    if node.kwargs.get("mode", mode) != "reflect" or len(padding) != 4 or _rank(x) != 4:
        return None
    return nn.ReflectionPad2d(tuple(padding)), [x]


def _in_place(factory: Callable[..., nn.Module]):
    """An in-place activation becomes the module only when nothing else reads the tensor it overwrites
    (a later reader would otherwise see the value before the activation)."""
    build = _activation(factory)

    def build_if_sole_reader(node, graph_module):
        source = node.args[0]
        return build(node, graph_module) if isinstance(source, fx.Node) and len(source.users) == 1 else None

    return build_if_sole_reader


def _interpolate_function(node, graph_module):
    """F.interpolate(x, scale_factor=s, mode='nearest') in a traced model (diffusers' Upsample2D) is what
    nn.Upsample computes."""
    options = dict(zip(("size", "scale_factor", "mode", "align_corners", "recompute_scale_factor"), node.args[1:]))
    options.update(node.kwargs)
    scale = options.get("scale_factor")
    if options.get("size") is not None or options.get("mode", "nearest") != "nearest" or options.get("recompute_scale_factor"):
        return None
    if isinstance(scale, (tuple, list)):
        scale = scale[0] if len(set(scale)) == 1 else None
    if not isinstance(scale, (int, float)) or options.get("antialias"):
        return None
    return nn.Upsample(scale_factor=float(scale), mode="nearest"), [node.args[0]]


def _pad_function(node, graph_module):
    """F.pad(x, (l, r, t, b), mode='reflect') in a traced model is what nn.ReflectionPad2d computes."""
    options = dict(zip(("pad", "mode", "value"), node.args[1:]))
    options.update(node.kwargs)
    pad = options.get("pad")
    if options.get("mode", "constant") != "reflect" or not isinstance(pad, (tuple, list)) or len(pad) != 4:
        return None
    if not all(isinstance(amount, int) for amount in pad):
        return None
    return nn.ReflectionPad2d(tuple(pad)), [node.args[0]]


def _activation(factory: Callable[..., nn.Module]):
    def build(node, graph_module):
        return factory(*node.args[1:]), [node.args[0]]

    return build


_RESHAPES = {aten.view.default, aten.reshape.default, aten._unsafe_view.default}
# Functional calls torch.fx records as they are in models it can trace: lifted so the same rewrites match.
FUNCTIONAL = {F.interpolate: _interpolate_function, F.pad: _pad_function}
_BUILDERS = {
    aten.conv2d.default: _conv2d,
    aten.conv_transpose2d.input: _conv_transpose2d,
    aten.convolution.default: _generic_convolution,
    aten._convolution.default: _generic_convolution,
    aten.linear.default: _linear,
    aten.batch_norm.default: _batch_norm,
    aten.upsample_nearest2d.vec: _upsample_nearest,
    aten.reflection_pad2d.default: _reflection_pad,
    aten.pad.default: _pad,
    aten.relu.default: _activation(nn.ReLU),
    aten.relu_.default: _in_place(nn.ReLU),
    aten.leaky_relu.default: _activation(nn.LeakyReLU),
    aten.tanh.default: _activation(nn.Tanh),
    aten.sigmoid.default: _activation(nn.Sigmoid),
    aten.silu.default: _activation(nn.SiLU),
    **FUNCTIONAL,
}


def _owner(node: fx.Node) -> tuple[str, bool]:
    """(name, owns weights): the path of the module that holds the call's weight, else that of the module
    whose forward made the call (torch.export records it; the TorchScript converter does not), else the
    node's name."""
    weight = node.args[1] if len(node.args) > 1 else None
    if isinstance(weight, fx.Node) and weight.op == "get_attr" and "." in weight.target:
        return weight.target.rsplit(".", 1)[0], True
    stack = node.meta.get("nn_module_stack") or {}
    path = list(stack.values())[-1][0] if stack else ""
    return (path if path and not path.startswith("_") else node.name), False


def _free_name(wanted: str, owns_weights: bool, graph_module: fx.GraphModule, taken: set[str]) -> str:
    """`wanted` unless a lifted module has it already or something else lives there: the weights' holder may
    be replaced by the module that uses them (it holds the same tensors), except a holder with children of its
    own; a parameterless call never takes an existing name. Else `wanted_1`, `wanted_2`, ..."""
    name, suffix = wanted, 0
    while name in taken or _occupied(graph_module, name, owns_weights and suffix == 0):
        suffix += 1
        name = f"{wanted}_{suffix}"
    taken.add(name)
    return name


def _occupied(graph_module: fx.GraphModule, name: str, holder_allowed: bool) -> bool:
    try:
        module = graph_module.get_submodule(name)
    except AttributeError:
        return False
    return not holder_allowed or any(True for _ in module.children())
