"""Reading a `.tflite` file: its ops, which torch module each came from, and what runs in int8.

litert-torch names every tensor after the torch modules that produced it (torch.export's nn_module_stack):
one level per module call, written `<module class's full name>_<last part of its name>` and joined by '/',
e.g. `torch.nn.modules.container.Sequential_blocks/torch.nn.modules.conv.ConvTranspose2d_8` for `blocks.8`;
a fused op's output names every module it absorbed, joined by ';'. A torch.fx GraphModule (what the rewrite
stage returns) calls `blocks.8` without calling `blocks`, which would leave one level, `...ConvTranspose2d_8`,
shared by every block's eighth module; `uniquely_named` has such calls converted under flat names
(`blocks__8`) instead. `module_scopes` spells each module's levels as the converter will, and an op's layer is
the module whose last level ends the op's name (ties broken by the levels above): the weight's name says
which layer owns a conv or matmul, the first module named in its output owns any other op. The quantizer
(litert-quantizer) addresses ops by their `scope` (the output tensors' names, ';'-joined), so a layer kept in
float is a list of scopes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch.nn as nn

# Ops whose second input is a weight tensor: the ops int8 is about.
WEIGHTED_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "FULLY_CONNECTED", "CONV_3D", "CONV_3D_TRANSPOSE"}
# Ops that only convert between int8 and float: the seams of a float island, not work done in either.
_CONVERSIONS = {"QUANTIZE", "DEQUANTIZE"}
_FLOAT_TYPES = {"FLOAT32", "FLOAT16", "BFLOAT16", "FLOAT64"}
_WEIGHT_INPUT = {"TRANSPOSE_CONV": 1}  # TRANSPOSE_CONV's inputs are (output shape, weights, input, bias)
# The one signature litert-torch writes; its inputs are named args_0, args_1, ... in the forward's order.
SIGNATURE = "serving_default"


@dataclass(frozen=True)
class TfliteOp:
    """One op of the model's main subgraph."""

    index: int
    name: str  # builtin op name, e.g. "TRANSPOSE_CONV"
    scope: str  # what litert-quantizer matches recipe regexes against
    layer: str  # torch module name ('' when none could be found)
    activation_types: tuple[str, ...]  # types of its non-constant inputs and outputs, e.g. ("INT8", "INT8")
    weight: dict[str, Any] | None = field(default=None)  # its weight's type, scale count, per-channel, zero points 0

    @property
    def precision(self) -> str:
        """float when it reads or writes a floating-point activation, int8 otherwise."""
        return "float" if any(kind in _FLOAT_TYPES for kind in self.activation_types) else "int8"


def read_ops(path: Path, scopes: dict[str, list[str]] | None = None) -> list[TfliteOp]:
    """The ops of the `.tflite` at `path`, in execution order; with the `scopes` of the model it was converted
    from (`module_scopes`, kept by litert_convert.Converted), each op's layer is filled in."""
    from ai_edge_litert.tools import flatbuffer_utils

    flat = flatbuffer_utils.read_model(str(path))
    graph = flat.subgraphs[0]
    scopes = scopes or {}
    ops = []
    for index, op in enumerate(graph.operators):
        name = flatbuffer_utils.opcode_to_name(flat, op.opcodeIndex) or "CUSTOM"
        inputs = [i for i in op.inputs if i >= 0]
        constant = {i for i in inputs if _is_constant(flat, graph.tensors[i])}
        activations = tuple(
            flatbuffer_utils.type_to_name(graph.tensors[i].type) for i in [*inputs, *op.outputs] if i not in constant
        )
        weight_index = inputs[_WEIGHT_INPUT.get(name, 1)] if name in WEIGHTED_OPS and len(inputs) > 1 else None
        scope = _scope(graph, op)
        owner = _tensor_name(graph.tensors[weight_index]) if weight_index is not None else scope
        ops.append(TfliteOp(
            index, name, scope, _layer_of(owner, scopes), activations,
            _quantization(graph.tensors[weight_index]) if weight_index is not None else None,
        ))
    return ops


def uniquely_named(model: nn.Module) -> nn.Module:
    """The model to hand litert-torch so that every module's tensors get a name no other module shares.

    A torch.fx GraphModule (what the rewrite stage returns) calls nested modules by their full name
    ('blocks.0.1') without calling their parents, and litert-torch keeps only the last part of that name
    ('...Conv2d_1'), which every block repeats. Its calls are re-pointed at flat attributes ('blocks__0__1'),
    which litert-torch keeps whole; `module_scopes` spells the names the same way. Other models keep their
    hierarchy in the names and are returned as they are."""
    import torch.fx as fx

    flat = _flat_calls(model)
    if not flat:
        return model
    graph = copy.deepcopy(model.graph)
    owned: dict[str, Any] = {}
    for node in graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if stack:  # fx recorded the old names here, and torch.export reuses them
            node.meta["nn_module_stack"] = {key: (flat.get(path, path), kind) for key, (path, kind) in stack.items()}
        if node.op == "call_module":
            owned[flat.get(node.target, node.target)] = model.get_submodule(node.target)
            node.target = flat.get(node.target, node.target)
        elif node.op == "get_attr":
            owned[node.target] = _attribute(model, node.target)
    return fx.GraphModule(owned, graph, model.__class__.__name__)


def module_scopes(model: nn.Module) -> dict[str, list[str]]:
    """Module name -> litert-torch's level string of each module on its path, outermost first (root excluded),
    for the model `uniquely_named` hands the converter: `blocks.8` -> ['torch.nn.modules.container.Sequential_blocks',
    'torch.nn.modules.conv.ConvTranspose2d_8'], or for a GraphModule ['torch.nn.modules.conv.ConvTranspose2d_blocks__8']."""
    flat = _flat_calls(model)

    def level(path: str, attribute: str) -> str:
        return f"{_class_name(type(model.get_submodule(path)))}_{attribute}"

    names = {}
    for name, _ in model.named_modules():
        if not name:
            continue
        called = next((target for target in flat if name == target or name.startswith(target + ".")), None)
        # A module a flattened call reaches is spelled from that call down; any other, from the root down.
        start, levels = (called, [level(called, flat[called])]) if called is not None else ("", [])
        parts = name[len(start) :].lstrip(".").split(".") if name != start else []
        prefix = start.split(".") if start else []
        levels += [level(".".join(prefix + parts[: depth + 1]), part) for depth, part in enumerate(parts)]
        names[name] = levels
    return names


def _flat_calls(model: nn.Module) -> dict[str, str]:
    """For a GraphModule: each nested module it calls ('blocks.0.1') -> the flat name it is converted under."""
    import torch.fx as fx

    if not isinstance(model, fx.GraphModule):
        return {}
    targets = [node.target for node in model.graph.nodes if node.op == "call_module"]
    flat = {target: target.replace(".", "__") for target in dict.fromkeys(targets) if "." in target}
    names = {name for name, _ in model.named_modules()}
    return {} if any(new in names for new in flat.values()) else flat


def _attribute(model: nn.Module, target: str):
    owner, _, name = target.rpartition(".")
    return getattr(model.get_submodule(owner) if owner else model, name)


def compute_layers(ops: list[TfliteOp]) -> list[str]:
    """The layers that own a weighted op, in execution order: the ones quantization is about."""
    return list(dict.fromkeys(op.layer for op in ops if op.name in WEIGHTED_OPS and op.layer))


def scopes_of(ops: list[TfliteOp], layers: set[str]) -> list[str]:
    """The scopes of every op that belongs to one of `layers` (or to a module nested inside one)."""
    return [op.scope for op in ops if op.layer and any(op.layer == l or op.layer.startswith(l + ".") for l in layers)]


def int8_layers(ops: list[TfliteOp]) -> set[str]:
    """The layers whose every weighted op runs in int8 with int8 weights."""
    verdict: dict[str, bool] = {}
    for op in ops:
        if op.name in WEIGHTED_OPS and op.layer:
            is_int8 = op.precision == "int8" and op.weight is not None and op.weight["type"] == "INT8"
            verdict[op.layer] = verdict.get(op.layer, True) and is_int8
    return {layer for layer, is_int8 in verdict.items() if is_int8}


def describe(ops: list[TfliteOp]) -> dict[str, Any]:
    """What the report and manifest say about an artifact: op counts per precision, the float ops by name and
    layer, and whether every int8 weight is per-channel symmetric (one scale per output channel, zero point 0)."""
    counts: dict[str, dict[str, int]] = {"int8": {}, "float": {}}
    float_ops, weights_ok, weights_bad = [], 0, []
    for op in ops:
        if op.name in _CONVERSIONS:
            continue
        bucket = counts[op.precision]
        bucket[op.name] = bucket.get(op.name, 0) + 1
        if op.precision == "float":
            float_ops.append({"op": op.name, "layer": op.layer or "-", "index": op.index})
        if op.weight is not None and op.weight["type"] == "INT8":
            if op.weight["per_channel"] and op.weight["zero_points_zero"]:
                weights_ok += 1
            else:
                weights_bad.append(f"{op.name} #{op.index} ({op.layer or 'no layer'})")
    return {
        "ops_by_precision": counts,
        "float_ops": float_ops,
        "int8_weights": {"per_channel_symmetric": weights_ok, "other": weights_bad},
        "conversions": sum(1 for op in ops if op.name in _CONVERSIONS),
    }


def io_quantization(path: Path) -> dict[str, dict[str, Any]]:
    """Each input's and output's type, and its int8 scale and zero point (what an app feeds and reads)."""
    from ai_edge_litert import interpreter as tflite

    from compressor.quiet import native_stderr_silenced

    with native_stderr_silenced():
        interpreter = tflite.Interpreter(model_path=str(path))
    described = {}
    for role, details in (("input", interpreter.get_input_details()), ("output", interpreter.get_output_details())):
        for detail in details:
            scale, zero_point = detail["quantization"]
            entry = {"name": detail["name"], "dtype": detail["dtype"].__name__, "shape": [int(d) for d in detail["shape"]]}
            if scale:
                entry.update(scale=float(scale), zero_point=int(zero_point))
            described[f"{role} {detail['name']}"] = entry
    return described


def _class_name(cls: type) -> str:
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _layer_of(name: str, scopes: dict[str, list[str]]) -> str:
    """The module the first path in the tensor name `name` ends in: its last level must be the module's own, and
    among several such modules the one with most of its ancestors among the path's levels wins ('' if none or
    a tie)."""
    levels = name.split(";")[0].split("/")
    scored = [
        (sum(level in levels[:-1] for level in path[:-1]), module)
        for module, path in scopes.items() if path[-1] == levels[-1]
    ]
    if not scored:
        return ""
    best = max(score for score, _ in scored)
    winners = [module for score, module in scored if score == best]
    return winners[0] if len(winners) == 1 else ""


def _scope(graph, op) -> str:
    """litert-quantizer's scope of an op (tfl_flatbuffer_utils.get_op_scope): its outputs' names, ';'-joined."""
    names = [_tensor_name(graph.tensors[i]) for i in op.outputs if i >= 0] or [
        _tensor_name(graph.tensors[i]) for i in op.inputs if i >= 0]
    names = [name for name in names if name]
    return ";".join(names) + (";" if names else "")


def _tensor_name(tensor) -> str:
    return tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name or "")


def _is_constant(flat, tensor) -> bool:
    buffer = flat.buffers[tensor.buffer] if tensor.buffer < len(flat.buffers) else None
    return buffer is not None and (buffer.data is not None and len(buffer.data) > 0 or bool(buffer.size))


def _quantization(tensor) -> dict[str, Any]:
    from ai_edge_litert.tools import flatbuffer_utils

    params = tensor.quantization
    scales = list(params.scale) if params is not None and params.scale is not None else []
    zero_points = list(params.zeroPoint) if params is not None and params.zeroPoint is not None else []
    out_channels = int(tensor.shape[params.quantizedDimension]) if scales and tensor.shape is not None else 0
    return {
        "type": flatbuffer_utils.type_to_name(tensor.type),
        "per_channel": bool(scales) and len(scales) == out_channels,
        "zero_points_zero": all(int(z) == 0 for z in zero_points),
        "scales": len(scales),
    }
