"""Passes over a QDQ ONNX graph that let ONNX Runtime's x86 CPU kernels run it in int8 (exact unless said).

A QDQ model from a torch-side quantizer (NNCF), or from ORT's own, is numerically right for ORT but slower
on it than it needs to be (docs/architecture.md, 'int8 on ORT CPU'):
- NNCF quantizes signed activations (the latent input, a pre-tanh output) to int8; ORT's x86 kernels want
  uint8 activations with int8 weights (U8S8) and leave S8 activations unfused. `retype_activations_to_uint8`
  shifts each such Q/DQ pair to uint8 with zero point z + 128, which is exact: (q + 128) - (z + 128) = q - z.
- NNCF puts one activation quantizer on each tensor that feeds a quantized op, as early as it can: after the
  per-phase ReLUs, in front of the phase interleave (Transpose/Reshape/Concat). The conv that reads the
  interleaved tensor then has no DequantizeLinear in front of it, so ORT runs it in fp32.
  `requantize_before_convs` inserts Q -> DQ with the same scale and zero point right before such a conv when
  every value reaching it comes, through ops that only move or zero-pad values, from DequantizeLinear nodes
  that share one scale and zero point. The values are already on that grid, so the new pair is exact.
- ORT's own quantizer gives each input of a Concat its own scale, so the Concat requantizes every input to
  its output's scale (QLinearConcat): two roundings and extra work. `share_concat_scales` quantizes each
  input straight onto the Concat's output grid instead: one rounding (not bit-exact: the result is the
  nearer grid point, where two roundings could land one step off), and the Concat only copies. Only the
  output scales of the producers change, so their int32 biases (input scale x weight scale) stay valid.
  (NNCF unifies concat scales itself.) Not where the inputs' ranges differ by more than
  `CONCAT_SHARED_RANGE_RATIO`: a UNet's skip concat joins an encoder feature and a decoder feature of very
  different ranges, and on the wider grid the narrow one would lose more than 2 of its 8 bits; each keeps its own.
- NNCF leaves biases in float. ORT fuses a Gemm into QGemm only with an int32 bias behind a
  DequantizeLinear (scale = input scale x weight scale, zero point 0), the form its own quantizer writes;
  `quantize_biases` writes that form (rounding the bias to 1/(input scale x weight scale), as every int8
  kernel does internally).
- Both quantizers put the activation quantizer right before the conv, so the value-moving ops in front of it
  (a reflection pad's gathers and transposes, a pixel shuffle's DepthToSpace) run on float: four times the
  bytes. `quantize_layout_ops` moves such Q nodes in front of those ops and DQ nodes behind them (exact).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from compressor.runtimes.onnx.graph import pads_with_zero
from compressor.runtimes.onnx.graph import producers as graph_producers
from compressor.runtimes.onnx.graph import readers as graph_readers

# Ops that move values without changing them (or pad with 0.0, which is on every quantization grid).
_LAYOUT_OPS = {"Transpose", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Concat", "Pad", "Slice", "DepthToSpace",
               "SpaceToDepth", "Identity", "Gather"}
_QUANTIZABLE = {"Conv", "Gemm", "MatMul"}
_MOVES = {"Transpose", "Reshape", "Unsqueeze", "Squeeze", "Flatten"}  # single-input ops that only move values


def retype_activations_to_uint8(model: onnx.ModelProto) -> int:
    """Give every int8 activation Q/DQ pair a uint8 zero point z + 128 (exact). Returns the count of Q nodes."""
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    readers = graph_readers(graph)
    retyped: set[str] = set()
    for quantize in [node for node in graph.node if node.op_type == "QuantizeLinear"]:
        if quantize.input[0] in initializers:  # a weight: int8 weights are what ORT wants
            continue
        zero_point = initializers.get(quantize.input[2]) if len(quantize.input) > 2 else None
        if zero_point is None or zero_point.data_type != onnx.TensorProto.INT8:
            continue
        dequantizers = readers.get(quantize.output[0], [])
        if not dequantizers or any(node.op_type != "DequantizeLinear" for node in dequantizers):
            continue  # a Q whose int8 output leaves the graph or feeds another op keeps its type
        shifted = numpy_helper.to_array(zero_point).astype(np.int16) + 128
        name = f"{quantize.output[0]}_zero_point_uint8"
        graph.initializer.append(numpy_helper.from_array(shifted.astype(np.uint8), name))
        for node in [quantize, *dequantizers]:
            node.input[2] = name
        retyped.add(quantize.output[0])
    _drop_unused_initializers(graph)
    stale = [info for info in graph.value_info if info.name in retyped]  # recorded as int8 by the exporter
    for info in stale:
        graph.value_info.remove(info)
    return len(retyped)


def requantize_before_convs(model: onnx.ModelProto) -> int:
    """Insert an exact Q -> DQ in front of each conv-like op whose input is on one quantization grid but no
    longer dequantized right before it (see the module docstring). Returns the count inserted."""
    graph = model.graph
    producers = graph_producers(graph)
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    inserted = 0
    for position, node in reversed(list(enumerate(graph.node))):
        if node.op_type not in _QUANTIZABLE or node.input[0] in values:
            continue
        source = producers.get(node.input[0])
        if source is None or source.op_type == "DequantizeLinear":
            continue
        grid = _common_grid(node.input[0], producers, values)
        if grid is None:
            continue
        scale, zero_point = grid
        base = f"{node.name or node.output[0]}_input_requantized"
        quantize = helper.make_node("QuantizeLinear", [node.input[0], scale, zero_point], [f"{base}_q"], name=f"{base}_Q")
        dequantize = helper.make_node("DequantizeLinear", [f"{base}_q", scale, zero_point], [base], name=f"{base}_DQ")
        node.input[0] = base
        graph.node.insert(position, dequantize)
        graph.node.insert(position, quantize)
        inserted += 1
    return inserted


# Concat inputs whose scales differ by more than this keep their own grids (a 4x wider grid costs 2 bits).
CONCAT_SHARED_RANGE_RATIO = 4.0


def share_concat_scales(model: onnx.ModelProto) -> int:
    """Put every quantized input of a Concat on the grid of the Concat's quantized output, unless their ranges
    differ too much (see the module docstring). Returns the count of Concats changed."""
    graph = model.graph
    producers = graph_producers(graph)
    readers = graph_readers(graph)
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    changed = 0
    for concat in [node for node in graph.node if node.op_type == "Concat"]:
        after = readers.get(concat.output[0], [])
        if len(after) != 1 or after[0].op_type != "QuantizeLinear" or not _per_tensor(after[0], values):
            continue
        chains = [_quantized_chain(name, producers, readers) for name in concat.input]
        if any(not chain or not all(_per_tensor(q, values) for q, _ in chain) for chain in chains):
            continue
        scales = [float(values[chain[0][0].input[1]]) for chain in chains]
        if max(scales) > CONCAT_SHARED_RANGE_RATIO * min(scales):  # a skip joining ranges far apart: quantized per input
            continue
        for quantize, dequantize in (pair for chain in chains for pair in chain):
            quantize.input[1:3] = after[0].input[1:3]
            dequantize.input[1:3] = after[0].input[1:3]
        changed += 1
    _drop_unused_initializers(graph)
    return changed


def _quantized_chain(tensor: str, producers: dict, readers: dict) -> list[tuple[onnx.NodeProto, onnx.NodeProto]]:
    """The Q/DQ pairs from `tensor` back through ops that only move values (ORT's quantizer gives their
    outputs the scale of their inputs) to the producing layer's output quantizer; all must change together,
    or each move becomes a requantization that ORT runs in float. Empty when `tensor` is not DQ(Q(x))."""
    chain = []
    while (pair := _quantized_pair(tensor, producers, readers)) is not None:
        chain.append(pair)
        mover = producers.get(pair[0].input[0])
        if mover is None or mover.op_type not in _MOVES or len(readers.get(mover.input[0], [])) != 1:
            break
        tensor = mover.input[0]
    return chain


def _quantized_pair(tensor: str, producers: dict, readers: dict) -> tuple[onnx.NodeProto, onnx.NodeProto] | None:
    """(Q, DQ) when `tensor` is DQ(Q(x)) and that Q feeds only that DQ (so changing both changes nothing else)."""
    dequantize = producers.get(tensor)
    if dequantize is None or dequantize.op_type != "DequantizeLinear" or len(readers.get(tensor, [])) != 1:
        return None
    quantize = producers.get(dequantize.input[0])
    if quantize is None or quantize.op_type != "QuantizeLinear" or len(readers.get(quantize.output[0], [])) != 1:
        return None
    return quantize, dequantize


def _per_tensor(node: onnx.NodeProto, values: dict[str, np.ndarray]) -> bool:
    scale = values.get(node.input[1])
    return scale is not None and scale.size == 1 and len(node.input) > 2 and node.input[2] in values


def quantize_biases(model: onnx.ModelProto) -> int:
    """Replace each float bias of a conv-like op whose input and weight are dequantized by an int32
    DequantizeLinear of it (see the module docstring). Returns the count."""
    graph = model.graph
    producers = graph_producers(graph)
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    done = 0
    for position, node in reversed(list(enumerate(graph.node))):
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3 or node.input[2] not in values:
            continue
        data, weight = producers.get(node.input[0]), producers.get(node.input[1])
        if not (data and weight and data.op_type == weight.op_type == "DequantizeLinear"):
            continue
        input_scale, weight_scale = values.get(data.input[1]), values.get(weight.input[1])
        if input_scale is None or weight_scale is None or input_scale.size != 1:
            continue
        scale = (input_scale.astype(np.float64) * weight_scale.astype(np.float64)).astype(np.float32).reshape(-1)
        bias = values[node.input[2]]
        if scale.size not in (1, bias.size) or np.any(scale == 0):
            continue
        scale = np.broadcast_to(scale, bias.shape).copy()
        levels = np.clip(np.round(bias.astype(np.float64) / scale), -(2**31), 2**31 - 1).astype(np.int32)
        base = f"{node.name or node.output[0]}_bias_int32"
        graph.initializer.extend([
            numpy_helper.from_array(levels, base),
            numpy_helper.from_array(scale, f"{base}_scale"),
            numpy_helper.from_array(np.zeros(bias.shape, np.int32), f"{base}_zero_point"),
        ])
        dequantize = helper.make_node("DequantizeLinear", [base, f"{base}_scale", f"{base}_zero_point"],
                                      [f"{base}_dequantized"], name=f"{base}_DQ", axis=0)
        node.input[2] = dequantize.output[0]
        graph.node.insert(position, dequantize)
        done += 1
    _drop_unused_initializers(graph)
    return done


def _common_grid(tensor: str, producers: dict, values: dict[str, np.ndarray]) -> tuple[str, str] | None:
    """(scale, zero point) initializer names shared by every DequantizeLinear that `tensor` is made from
    through layout ops only; None when the values come from anything else or from different grids."""
    grids: list[tuple[str, str]] = []
    pending = [tensor]
    while pending:
        node = producers.get(pending.pop())
        if node is None:
            return None  # a graph input: not on any grid we know
        if node.op_type == "DequantizeLinear":
            if len(node.input) < 3 or values.get(node.input[1]) is None or values[node.input[1]].size != 1:
                return None  # per-channel or without a constant zero point: not an activation grid
            grids.append((node.input[1], node.input[2]))
            continue
        if node.op_type not in _LAYOUT_OPS or (node.op_type == "Pad" and not pads_with_zero(node, values)):
            return None
        data_inputs = node.input if node.op_type == "Concat" else node.input[:1]
        pending.extend(name for name in data_inputs if name not in values)
    first_scale, first_zero = values[grids[0][0]], values[grids[0][1]]
    for scale, zero_point in grids[1:]:
        if values[scale] != first_scale or values[zero_point] != first_zero or values[zero_point].dtype != first_zero.dtype:
            return None
    return grids[0]


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    used = {name for node in graph.node for name in node.input}
    unused = [init for init in graph.initializer if init.name not in used]
    for init in unused:
        graph.initializer.remove(init)


# Single-data-input ops that only select or move values (input 0 is the data; other inputs are indices or
# shapes), each with a uint8 kernel in ONNX Runtime's CPU provider. Pad is not here: it pads with 0.0, which a
# quantized tensor writes as its zero point, not as 0.
_MOVES_ON_UINT8 = {"Transpose", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Gather", "DepthToSpace", "Identity", "Slice"}


def quantize_layout_ops(model: onnx.ModelProto) -> int:
    """Run value-moving ops on uint8 instead of float: a QuantizeLinear right after a chain of such ops moves
    in front of it, and a DequantizeLinear right before one moves behind it. Exact, with a per-tensor scale and
    zero point: q(move(x)) = move(q(x)). What it saves: the chains generators put between a normalization and
    the next conv (a reflection pad's gathers and their transposes, a pixel shuffle) read and write a quarter
    of the bytes, and ORT's Q/DQ run on as many values as before. Returns the count of nodes moved."""
    moved = 0
    while True:
        step = _hoist_one_quantize(model.graph) or _sink_one_dequantize(model.graph)
        if not step:
            return moved
        moved += 1


def _scalar_quantizer(node: onnx.NodeProto, values: dict[str, np.ndarray]) -> bool:
    return all(name in values and values[name].size == 1 for name in node.input[1:3]) and len(node.input) >= 3


def _hoist_one_quantize(graph: onnx.GraphProto) -> bool:
    producers, readers = graph_producers(graph), graph_readers(graph)
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for quantize in graph.node:
        if quantize.op_type != "QuantizeLinear" or not _scalar_quantizer(quantize, values):
            continue
        move = producers.get(quantize.input[0])
        if move is None or move.op_type not in _MOVES_ON_UINT8 or len(readers.get(quantize.input[0], [])) != 1:
            continue
        if move.input[0] in values:  # a constant: nothing to gain
            continue
        early = f"{move.input[0]}_quantized_for_{move.name or move.output[0]}"
        hoisted = helper.make_node("QuantizeLinear", [move.input[0], *quantize.input[1:]], [early], name=f"{quantize.name}_early")
        _forget_types(graph, [move.output[0]])
        move.input[0], move.output[0] = early, quantize.output[0]
        graph.node.insert(list(graph.node).index(move), hoisted)
        graph.node.remove(quantize)
        return True
    return False


def _sink_one_dequantize(graph: onnx.GraphProto) -> bool:
    readers = graph_readers(graph)
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for dequantize in graph.node:
        if dequantize.op_type != "DequantizeLinear" or dequantize.input[0] in values or not _scalar_quantizer(dequantize, values):
            continue
        users = readers.get(dequantize.output[0], [])
        move = users[0] if len(users) == 1 else None
        if move is None or move.op_type not in _MOVES_ON_UINT8 or list(move.input).count(dequantize.output[0]) != 1:
            continue
        if move.input[0] != dequantize.output[0]:
            continue
        late = f"{move.output[0]}_quantized"
        _forget_types(graph, [dequantize.output[0]])
        move.input[0] = dequantize.input[0]
        dequantize.input[0], dequantize.output[0] = late, move.output[0]
        move.output[0] = late
        graph.node.remove(dequantize)
        graph.node.insert(list(graph.node).index(move) + 1, dequantize)
        return True
    return False


def _forget_types(graph: onnx.GraphProto, names: list[str]) -> None:
    """Drop recorded value types of tensors whose type or producer changed (ORT infers them again)."""
    for info in [info for info in graph.value_info if info.name in names]:
        graph.value_info.remove(info)
