"""Which torch module each node of an exported ONNX graph came from, so layer rules written against module
names ("blocks.2") can be applied to the graph. The torch exporter records each node's module scopes in
its metadata ('pkg.torch.onnx.name_scopes': the full name of each enclosing module, outermost first, then
the op itself, e.g. ['', 'body', 'body.0', 'body.0.conv', 'conv2d'])."""

from __future__ import annotations

import ast

import onnx

COMPUTE_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}


def node_layers(model: onnx.ModelProto) -> dict[str, str]:
    """Node name -> module name ('' when the exporter recorded none, e.g. a reshape in the root forward)."""
    layers = {}
    for node in model.graph.node:
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), "[]")
        modules = [scope for scope in ast.literal_eval(scopes)[:-1] if scope]  # the last entry is the op
        layers[node.name] = modules[-1] if modules else ""
    return layers


def compute_layers(model: onnx.ModelProto) -> list[str]:
    """The layers that own a Conv/Gemm/MatMul, in graph order: the ones quantization is about."""
    layers = node_layers(model)
    ordered = [layers[node.name] for node in model.graph.node if node.op_type in COMPUTE_OPS and layers[node.name]]
    return list(dict.fromkeys(ordered))


def nodes_of(model: onnx.ModelProto, chosen: set[str]) -> list[str]:
    """Names of every node that belongs to one of the `chosen` layers (or a module nested inside one)."""
    return [name for name, layer in node_layers(model).items() if layer and _within(layer, chosen)]


def _within(layer: str, chosen: set[str]) -> bool:
    return any(layer == parent or layer.startswith(parent + ".") for parent in chosen)


def int8_layers(model: onnx.ModelProto, layers: dict[str, str]) -> set[str]:
    """The layers whose every Conv/ConvTranspose/Gemm/MatMul reads its weight through a DequantizeLinear: what
    a quantizer really put in int8, whatever it was asked (a quantizer may keep layers in float on its own).
    `layers` is `node_layers` of the export it quantized: quantizers keep node names but not always their
    metadata (ModelOpt drops it)."""
    from compressor.runtimes.onnx.graph import producers

    made_by = producers(model.graph)
    quantized: dict[str, bool] = {}
    for node in model.graph.node:
        if node.op_type in COMPUTE_OPS and layers.get(node.name) and len(node.input) > 1:
            source = made_by.get(node.input[1])
            is_int8 = source is not None and source.op_type == "DequantizeLinear"
            quantized[layers[node.name]] = quantized.get(layers[node.name], True) and is_int8
    return {layer for layer, is_int8 in quantized.items() if is_int8}


# Ops whose output is a tensor's shape, not a function of its values: a walk along values does not go through them.
_SHAPE_OPS = {"Shape", "Size"}


def io_layers(model: onnx.ModelProto) -> list[str]:
    """The layers that read a model input, or write a model output, through no other Conv/Gemm/MatMul: a
    UNet's conv_in, its timestep embedding's first Linear and its conv_out; a GAN's first and last layers."""
    from compressor.runtimes.onnx.graph import producers, readers

    graph = model.graph
    reading, making = readers(graph), producers(graph)
    forward = _first_compute_nodes(
        [tensor.name for tensor in graph.input], onward=lambda node: node.output,
        nodes_at=lambda tensor: [n for n in reading.get(tensor, []) if n.op_type not in ("GraphOutput", *_SHAPE_OPS)],
    )
    backward = _first_compute_nodes(
        [tensor.name for tensor in graph.output], onward=lambda node: node.input,
        nodes_at=lambda tensor: [making[tensor]] if tensor in making else [],
    )
    layers = node_layers(model)
    return [layer for layer in dict.fromkeys(layers.get(node.name, "") for node in forward + backward) if layer]


def _first_compute_nodes(tensors: list[str], nodes_at, onward) -> list[onnx.NodeProto]:
    """Walk from `tensors` (`nodes_at`: the nodes next to a tensor; `onward`: a node's tensors further on) and
    return the Conv/Gemm/MatMul nodes reached through no other one."""
    found: list[onnx.NodeProto] = []
    seen: set[int] = set()  # node identities: a node's name may be empty
    while tensors:
        for node in nodes_at(tensors.pop()):
            if id(node) in seen:
                continue
            seen.add(id(node))
            if node.op_type in COMPUTE_OPS:
                found.append(node)
            else:
                tensors.extend(onward(node))
    return found
