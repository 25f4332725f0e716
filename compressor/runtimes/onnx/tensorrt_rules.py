"""Check an ONNX file, without TensorRT, against what a TensorRT release's ONNX parser and explicit quantization take.

TensorRT cannot be installed here, so the rules are read from NVIDIA's sources and cited where each is applied:
[table]   tensorrt_ops.py: operators and opset range per release (onnx/onnx-tensorrt docs/operators.md).
[parser]  onnx/onnx-tensorrt QuantDequantLinearHelper: onnxOpImporters.cpp (10.1-GA), builtin_op_importers.cpp
          (release/8.6-GA); node dispatch in ModelImporter.cpp.
[layer]   NVIDIA/TensorRT include/NvInfer.h, IQuantizeLayer / IDequantizeLayer (v8.6.1, v10.3.0, v10.8.0), and
          https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/operators/Quantize.html ("The scale tensor
          must be a build-time constant").
[deconv]  https://github.com/NVIDIA/TensorRT/issues/2380 and #1694: per-channel ConvTranspose weights on axis 0.
Every violation is an error: the parser or builder rejects the graph, or TensorRT computes something other than
what the ONNX file means. Performance advice (Q/DQ placement that will not fuse) is out of scope.
Q/DQ rules apply to the main graph; If/Loop/Scan bodies and local functions get the operator checks only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from compressor.runtimes.onnx.graph import attribute, producers, readers
from compressor.runtimes.onnx.tensorrt_ops import RELEASES

_DEFAULT_DOMAINS = ("", "ai.onnx")
_QDQ = ("QuantizeLinear", "DequantizeLinear")
# The parser follows these back to a Constant when it needs a Q/DQ zero point's values
# ([parser] getWeightsFromIdentityOrConstant; [layer] 8.6: "Constant -> Cast -> Quantize").
_PASS_THROUGH = ("Identity", "Cast")


@dataclass(frozen=True)
class Violation:
    node: str  # node name (its first output when unnamed); '' for graph-level problems such as the opset
    op: str  # op type; '' for graph-level problems
    rule: str  # short id: 'opset', 'unsupported-op', 'custom-domain', 'qdq-type', 'zero-point', ...
    message: str  # one line naming the node, the op and the fix


def parser_limits(tensorrt_version: str) -> tuple[int, int]:
    """(min, max) default-domain opset that this TensorRT release's ONNX parser is documented to take."""
    return _release(tensorrt_version)[1]["opset"]


def check(model: onnx.ModelProto | Path, tensorrt_version: str, max_opset: int) -> list[Violation]:
    """Every reason TensorRT `tensorrt_version` would refuse (or silently change) `model`; [] when there is none."""
    name, release = _release(tensorrt_version)
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    found = _check_opset(model, name, release, max_opset)
    found += _check_ops(model, name, release)
    graph = _Graph(model.graph)
    for node in model.graph.node:
        if node.domain in _DEFAULT_DOMAINS and node.op_type in _QDQ:
            found += _check_qdq(graph, node, name, release)
    return found


def _release(version: str) -> tuple[str, dict]:
    """'10.3', '10.3.0' or '10.3.0.26' -> ('10.3', its table row); '10.x' means what every 10.x takes (10.0)."""
    text = str(version).strip().lower()
    text = "10.0" if text in ("10", "10.x") else text
    match = re.fullmatch(r"(\d+)\.(\d+)(?:\.\d+)*", text)
    key = f"{match[1]}.{match[2]}" if match else text
    if key not in RELEASES:
        raise ValueError(f"unknown TensorRT version {version!r}; known: {', '.join(RELEASES)} (or 10.x)")
    return key, RELEASES[key]


def _check_opset(model: onnx.ModelProto, name: str, release: dict, max_opset: int) -> list[Violation]:
    version = next((item.version for item in model.opset_import if item.domain in _DEFAULT_DOMAINS), None)
    low, high = release["opset"]
    limit = min(high, max_opset)
    if version is None or low <= version <= limit:
        return []
    parser = f"TensorRT {name}'s parser takes opset {low} to {high}"
    why = parser if not low <= version <= high else f"the target allows opset {max_opset} at most"
    fix = f"re-export with opset_version={limit}" if low <= limit else "no opset meets both limits: raise max_opset"
    return [Violation("", "", "opset", f"model: default-domain opset {version} is out of range ({why}); {fix}")]


def _check_ops(model: onnx.ModelProto, name: str, release: dict) -> list[Violation]:
    functions = {(function.domain, function.name): function for function in model.functions}
    found = []
    for node in _walk(model.graph.node, functions, release["local_functions"], ()):
        found += _check_op(node, name, release, functions)
    return found


def _walk(nodes, functions: dict, into_functions: bool, seen: tuple):
    """Every node, then the nodes of its If/Loop/Scan bodies and (where the parser inlines them) local functions."""
    for node in nodes:
        yield node
        for attr in node.attribute:
            for body in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _walk(body.node, functions, into_functions, seen)
        key = (node.domain, node.op_type)
        if into_functions and key in functions and key not in seen:
            yield from _walk(functions[key].node, functions, into_functions, (*seen, key))


def _check_op(node: onnx.NodeProto, name: str, release: dict, functions: dict) -> list[Violation]:
    op = node.op_type
    if (node.domain, op) in functions:
        return [] if release["local_functions"] else _flag(node, "custom-domain", f"a model-local function, which "
                                                           f"TensorRT {name} does not inline; inline it before export")
    if node.domain not in _DEFAULT_DOMAINS and op not in release["trt_domain_ops"]:  # TRT's Q/DQ ops are built in
        # The parser dispatches on op_type alone (ModelImporter.cpp): any other op needs a plugin of that name,
        # or is silently read as the ONNX op it shares a name with.
        return _flag(node, "custom-domain", f"domain '{node.domain}' is not ONNX, so TensorRT would need a plugin "
                     "for it; export it as default-domain ONNX ops")
    if node.domain in _DEFAULT_DOMAINS and op not in release["ops"]:
        return _flag(node, "unsupported-op", f"TensorRT {name}'s ONNX parser does not support {op}; {_op_fix(op)}")
    return []


def _op_fix(op: str) -> str:
    first = next((key for key, release in RELEASES.items() if op in release["ops"]), None)  # oldest first
    if first:
        return f"rewrite it with supported ops, or target TensorRT {first} or later"
    return "rewrite it with supported ops (no TensorRT release in the table takes it)"


class _Graph:
    """Lookups over one graph: constants (initializers, Constant nodes, through Identity/Cast), types, readers."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.initializers = {init.name: init for init in graph.initializer}
        self.made_by, self.read_by = producers(graph), readers(graph)
        values = [*graph.input, *graph.value_info, *graph.output]
        self.types = {value.name: value.type.tensor_type.elem_type for value in values}

    def root(self, name: str) -> TensorProto | None:
        """The constant tensor `name` is, through Identity/Cast; None when it is computed at run time."""
        for _ in range(16):
            if name in self.initializers:
                return self.initializers[name]
            node = self.made_by.get(name)
            if node is not None and node.op_type == "Constant":
                return _constant_tensor(node)
            if node is None or node.op_type not in _PASS_THROUGH:
                return None
            name = node.input[0]
        return None

    def elem_type(self, name: str) -> int | None:
        node = self.made_by.get(name)
        if node is not None and node.op_type == "Cast":
            return attribute(node, "to", None)
        if node is not None and node.op_type == "QuantizeLinear":
            return _quantized_type(self, node)
        root = self.root(name)
        return root.data_type if root is not None else self.types.get(name) or None


def _constant_tensor(node: onnx.NodeProto) -> TensorProto | None:
    for attr in node.attribute:
        if attr.name == "value":
            return attr.t
        if attr.name in ("value_float", "value_floats", "value_int", "value_ints"):
            value = np.asarray(onnx.helper.get_attribute_value(attr))
            return numpy_helper.from_array(value.astype(np.float32 if "float" in attr.name else np.int64))
    return None  # sparse and string constants: never a scale or a zero point


def _check_qdq(graph: _Graph, node: onnx.NodeProto, name: str, release: dict) -> list[Violation]:
    weight = _weight(graph, node)
    found = _check_type(graph, node, name, release, weight is not None)
    scale, problems = _check_scale(graph, node)
    found += problems + _check_zero_point(graph, node, name, release, scale)
    if scale is None or scale.size == 1:
        return found
    if weight is None:  # [layer]: "Activations cannot be quantized per-channel"
        return found + _flag(node, "activation-per-channel", f"{scale.size} scales on an activation, but "
                             "TensorRT quantizes activations per tensor only; use a single scale")
    # The DequantizeLinear that feeds the layer reports the weight's axis, once per Q -> DQ pair.
    return found + (_check_weight_axis(graph, node, scale, weight) if node.op_type == "DequantizeLinear" else [])


def _weight(graph: _Graph, node: onnx.NodeProto) -> TensorProto | None:
    """The constant a Q/DQ quantizes (for the DequantizeLinear of a Q(weight) -> DQ pair, the Q's); None: activation."""
    source = graph.made_by.get(node.input[0])
    if source is not None and source.op_type == "QuantizeLinear":
        return graph.root(source.input[0])
    return graph.root(node.input[0])


def _quantized_type(graph: _Graph, node: onnx.NodeProto) -> int | None:
    if node.op_type == "DequantizeLinear":
        return graph.elem_type(node.input[0]) or (graph.elem_type(node.input[2]) if _has_input(node, 2) else None)
    if _has_input(node, 2):
        return graph.elem_type(node.input[2])
    return attribute(node, "output_dtype", 0) or TensorProto.UINT8  # the ONNX default without a zero point


def _check_type(graph: _Graph, node: onnx.NodeProto, name: str, release: dict, weight: bool) -> list[Violation]:
    qtype, source = _quantized_type(graph, node), graph.made_by.get(node.input[0])
    if qtype is None or (source is not None and source.op_type == "QuantizeLinear"):
        return []  # a Q -> DQ pair has one type, reported on the QuantizeLinear
    type_name, allowed = TensorProto.DataType.Name(qtype).lower(), "/".join(sorted(release["qdq_types"])).lower()
    if node.op_type == "DequantizeLinear" and qtype == TensorProto.INT32:  # [layer]: DQ input is a quantized type
        return _flag(node, "bias-quantized" if weight else "qdq-type", "dequantizes an int32 tensor (a quantized "
                     f"bias), but TensorRT dequantizes {allowed} only; leave biases in float")
    implicit = node.op_type == "QuantizeLinear" and not _has_input(node, 2) and not attribute(node, "output_dtype", 0)
    if implicit and not release["zero_point_required"]:  # [parser] 10.x quantizes to INT8 here, ONNX to uint8
        return _flag(node, "qdq-type", "no zero point, so ONNX quantizes to uint8 (TensorRT would use int8 "
                     "instead); add an int8 zero point of 0")
    if type_name.upper() not in release["qdq_types"]:  # [parser] rejects UINT8 outright; [layer] lists the rest
        return _flag(node, "qdq-type", f"quantizes to {type_name}, which TensorRT {name} does not take ({allowed}); "
                     "requantize to int8 with zero point 0")
    if type_name.upper() in release["weight_only_types"] and not weight:
        return _flag(node, "qdq-type", f"{type_name} on an activation, but TensorRT takes {type_name} for weights "
                     "only; quantize this activation to int8")
    return []


def _check_scale(graph: _Graph, node: onnx.NodeProto) -> tuple[np.ndarray | None, list[Violation]]:
    """[layer]: the scale must be a build-time constant, every coefficient positive (the parser checks > 0)."""
    root = graph.root(node.input[1])
    if root is None:
        return None, _flag(node, "scale-not-constant", f"scale '{node.input[1]}' is computed at run time, but "
                           "TensorRT needs a build-time constant; store it as an initializer")
    scale = numpy_helper.to_array(root)
    values = scale.astype(np.float64)
    if values.size == 0 or not np.all(np.isfinite(values) & (values > 0)):
        return scale, _flag(node, "scale-not-positive", "scale has zero, negative or non-finite values, but "
                            "TensorRT needs every scale > 0; recalibrate (an all-zero tensor still needs scale > 0)")
    return scale, []


def _check_zero_point(graph: _Graph, node: onnx.NodeProto, name: str, release: dict, scale) -> list[Violation]:
    """[layer]: symmetric only, so the zero point is a constant of zeros with as many values as the scale."""
    if not _has_input(node, 2):
        return _flag(node, "zero-point", f"no zero point, but TensorRT {name}'s parser needs one; add an int8 "
                     "zero point of 0") if release["zero_point_required"] else []
    root = graph.root(node.input[2])
    zero = None if root is None else numpy_helper.to_array(root).astype(np.float64)
    if zero is None:
        problem = "is computed at run time"
    elif np.any(zero != 0):
        problem = "is not all zeros (asymmetric quantization)"
    elif scale is not None and zero.size != scale.size:
        problem = f"has {zero.size} values for {scale.size} scales"
    else:
        return []
    return _flag(node, "zero-point", f"zero point {problem}, but TensorRT quantizes symmetrically only; "
                 "requantize with a constant zero point of 0 shaped like the scale")


def _check_weight_axis(graph: _Graph, dq: onnx.NodeProto, scale: np.ndarray, weight: TensorProto) -> list[Violation]:
    shape, axis = list(weight.dims), attribute(dq, "axis", None)
    if not shape:
        return []  # a scalar weight with several scales: not a valid DequantizeLinear, the ONNX checker's to say
    if scale.ndim > 1:  # block quantization: [layer] 10.3/10.8 take it for INT4 weights only
        if _quantized_type(graph, dq) == TensorProto.INT4 and scale.ndim == len(shape):
            return []
        return _flag(dq, "weight-axis", f"blocked scales {list(scale.shape)}, which TensorRT takes for int4 "
                     "weights only; use one scale per output channel")
    if axis is None:  # [parser] defaults axis to 0 where ONNX defaults it to 1
        return _flag(dq, "weight-axis", "per-channel scales without an axis attribute (ONNX reads axis 1, "
                     "TensorRT's parser axis 0); set axis explicitly")
    axis %= len(shape)
    if shape[axis] != scale.size:
        return _flag(dq, "weight-axis", f"{scale.size} scales for the {shape[axis]} channels of axis {axis}; "
                     "give one scale per channel")
    found = []
    for layer, index, seen in _weight_readers(graph, dq, axis, len(shape)):
        expected = _per_channel_axis(layer, index, len(shape))
        if expected is not None and seen != expected:
            found += _flag(dq, "weight-axis", _axis_text(layer, seen, expected))
    return found


def _weight_readers(graph: _Graph, dq: onnx.NodeProto, axis: int, rank: int):
    """(layer, input index, the quantization axis as that layer sees the weight), through at most one Transpose."""
    for reader in graph.read_by.get(dq.output[0], []):
        if reader.op_type != "Transpose":
            yield from ((reader, i, axis) for i, name in enumerate(reader.input) if name == dq.output[0])
            continue
        perm = list(attribute(reader, "perm", None) or reversed(range(rank)))
        for layer in graph.read_by.get(reader.output[0], []):
            inputs = enumerate(layer.input)
            yield from ((layer, i, perm.index(axis)) for i, name in inputs if name == reader.output[0])


def _per_channel_axis(layer: onnx.NodeProto, index: int, rank: int) -> int | None:
    """The weight axis TensorRT takes per-channel scales on ([layer]: K of KCRS); None where it does not say."""
    if index != 1:
        return None
    if layer.op_type in ("Conv", "ConvTranspose"):  # ConvTranspose: axis 0 (input channels), see [deconv]
        return 0
    if layer.op_type == "Gemm":
        return 0 if attribute(layer, "transB", 0) else 1
    return rank - 1 if layer.op_type == "MatMul" else None


def _axis_text(layer: onnx.NodeProto, seen: int, expected: int) -> str:
    head = f"the {layer.op_type} '{_label(layer)}' weight has per-channel scales on axis {seen}"
    if layer.op_type == "ConvTranspose":
        return f"{head}, but TensorRT's deconvolution kernels take axis 0 only; requantize on axis 0 or per tensor"
    return f"{head}, not its output-channel axis {expected}; requantize on axis {expected} or per tensor"


def _flag(node: onnx.NodeProto, rule: str, text: str) -> list[Violation]:
    """One violation on `node`, its message led by the op and the node: "Conv 'conv1': <problem>; <fix>"."""
    label = _label(node)
    return [Violation(label, node.op_type, rule, f"{node.op_type} '{label}': {text}")]


def _has_input(node: onnx.NodeProto, index: int) -> bool:
    return len(node.input) > index and node.input[index] != ""


def _label(node: onnx.NodeProto) -> str:
    return node.name or (node.output[0] if node.output else node.op_type)
