"""Exact clean-ups of an exported ONNX graph that every runtime benefits from.

torch has no asymmetric padding on nn.Conv2d, so a rewrite that needs it (the per-phase ConvTranspose form)
exports as Pad -> Conv. ONNX Conv takes asymmetric `pads` itself; folding the Pad in keeps it out of the
way of quantizers (a Pad between Q/DQ pairs blocks QLinearConv fusion) and saves a copy per conv.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper


def fold_pads_into_convs(model: onnx.ModelProto) -> int:
    """Fold every zero, spatial-only Pad that alone feeds a Conv into the Conv's pads. Returns the count."""
    graph = model.graph
    constants = _constant_values(graph)
    made_by, read_by = producers(graph), readers(graph)
    folded = []
    for conv in graph.node:
        pad = made_by.get(conv.input[0]) if conv.op_type == "Conv" else None
        if pad is None or pad.op_type != "Pad" or len(read_by[pad.output[0]]) != 1:
            continue
        spatial = _spatial_zero_pads(pad, constants)
        if spatial is None or attribute(conv, "auto_pad", b"NOTSET") not in (b"NOTSET", b""):
            continue
        _add_conv_pads(conv, spatial)
        conv.input[0] = pad.input[0]
        folded.append(pad)
    for pad in folded:
        graph.node.remove(pad)
    return len(folded)


def _constant_values(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _spatial_zero_pads(pad: onnx.NodeProto, constants: dict[str, np.ndarray]) -> list[int] | None:
    """The Pad's (begin..., end...) amounts on the two spatial axes of an NCHW tensor, if it is a plain
    zero pad of those axes only; otherwise None (the Pad is left where it is)."""
    if not pads_with_zero(pad, constants) or len(pad.input) > 3 and pad.input[3]:
        return None  # other modes or fill values, or an `axes` input, are not what a conv's zero padding does
    amounts = constants.get(pad.input[1]) if len(pad.input) > 1 else None
    if amounts is None or amounts.size != 8:
        return None
    batch_begin, channel_begin, top, left, batch_end, channel_end, bottom, right = amounts.tolist()
    if batch_begin or channel_begin or batch_end or channel_end or min(top, left, bottom, right) < 0:
        return None
    return [top, left, bottom, right]


def _add_conv_pads(conv: onnx.NodeProto, extra: list[int]) -> None:
    existing = [a for a in conv.attribute if a.name == "pads"]
    current = list(existing[0].ints) if existing else [0, 0, 0, 0]
    for attribute in existing:
        conv.attribute.remove(attribute)
    conv.attribute.append(onnx.helper.make_attribute("pads", [a + b for a, b in zip(current, extra)]))


def pads_with_zero(pad: onnx.NodeProto, constants: dict[str, np.ndarray]) -> bool:
    """A constant-mode Pad whose fill value is a known 0 (0.0 lies on every quantization grid)."""
    fill = constants.get(pad.input[2]) if len(pad.input) > 2 and pad.input[2] else np.zeros(())
    return attribute(pad, "mode", b"constant") == b"constant" and fill is not None and not np.any(fill != 0)


def attribute(node: onnx.NodeProto, name: str, default):
    for item in node.attribute:
        if item.name == name:
            return onnx.helper.get_attribute_value(item)
    return default


def producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    """Tensor name -> the node that writes it."""
    return {output: node for node in graph.node for output in node.output}


def readers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """Tensor name -> the nodes that read it; a graph output counts as one reader (op_type GraphOutput)."""
    found: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            found.setdefault(name, []).append(node)
    for output in graph.output:
        found.setdefault(output.name, []).append(onnx.NodeProto(op_type="GraphOutput"))
    return found
