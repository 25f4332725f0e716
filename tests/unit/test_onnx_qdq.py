"""The QDQ passes that make a torch-side quantizer's ONNX fast on ORT x86: each exact (or, for biases,
within the bias rounding), each refusing what would change values, and each giving ORT what it fuses."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from compressor.runtimes.onnx.qdq import (
    quantize_biases,
    requantize_before_convs,
    retype_activations_to_uint8,
    share_concat_scales,
)
from compressor.testing.ort_ops import ops_ort_runs

RNG = np.random.default_rng(0)


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def _model(nodes, initializers, inputs, outputs):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)
    return model


def _run(model, feeds, level=ort.GraphOptimizationLevel.ORT_DISABLE_ALL):
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def _conv_weight(prefix, out_channels, in_channels):
    """A per-channel symmetric int8 conv weight behind its DequantizeLinear."""
    levels = RNG.integers(-60, 61, (out_channels, in_channels, 3, 3)).astype(np.int8)
    scales = RNG.uniform(0.005, 0.02, out_channels).astype(np.float32)
    inits = [_init(f"{prefix}_w", levels), _init(f"{prefix}_ws", scales),
             _init(f"{prefix}_wz", np.zeros(out_channels, np.int8))]
    node = helper.make_node("DequantizeLinear", [f"{prefix}_w", f"{prefix}_ws", f"{prefix}_wz"], [f"{prefix}_wdq"], axis=0)
    return inits, node


def _signed_input_gemm():
    """x -> Q(int8, z=-3) -> DQ -> Gemm(DQ(int8 weight), float bias) -> y: NNCF's form for a signed input."""
    inits = [
        _init("xs", np.float32(0.03)), _init("xz", np.int8(-3)),
        _init("w", RNG.integers(-60, 61, (6, 5)).astype(np.int8)), _init("ws", np.float32(0.01)), _init("wz", np.int8(0)),
        _init("b", RNG.standard_normal(6).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xdq"]),
        helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wdq"]),
        helper.make_node("Gemm", ["xdq", "wdq", "b"], ["y"], transB=1),
    ]
    io = ([helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 5])],
          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 6])])
    return _model(nodes, inits, *io)


def test_signed_activations_become_uint8_without_changing_a_value():
    model = _signed_input_gemm()
    x = {"x": RNG.standard_normal((64, 5)).astype(np.float32) * 3}  # well past the int8 range: saturation too
    before = _run(model, x)
    assert retype_activations_to_uint8(model) == 1
    zero_points = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    quantize = next(node for node in model.graph.node if node.op_type == "QuantizeLinear")
    assert zero_points[quantize.input[2]].dtype == np.uint8 and zero_points[quantize.input[2]] == 125
    np.testing.assert_array_equal(_run(model, x), before)


def test_weights_and_quantized_graph_outputs_keep_their_type():
    """A quantizer on a float weight (NNCF's form before constant folding) keeps int8: ORT wants int8 weights."""
    model = _signed_input_gemm()
    weight = next(node for node in model.graph.node if node.op_type == "DequantizeLinear" and node.input[0] == "w")
    model.graph.initializer.extend([_init("wf", RNG.standard_normal((6, 5)).astype(np.float32))])
    model.graph.node.insert(0, helper.make_node("QuantizeLinear", ["wf", "ws", "wz"], ["wq"]))
    weight.input[0] = "wq"
    model.graph.output.append(helper.make_tensor_value_info("xq", TensorProto.INT8, [None, 5]))
    assert retype_activations_to_uint8(model) == 0  # xq leaves the graph as int8: its type is part of the API
    weight_quantize = next(node for node in model.graph.node if node.op_type == "QuantizeLinear" and node.input[0] == "wf")
    assert weight_quantize.input[2] == "wz"
    assert next(i for i in model.graph.initializer if i.name == "wz").data_type == TensorProto.INT8


def test_bias_becomes_int32_so_ort_fuses_a_qgemm():
    model = _signed_input_gemm()
    retype_activations_to_uint8(model)
    x = {"x": RNG.standard_normal((64, 5)).astype(np.float32)}
    before = _run(model, x)
    assert "QGemm" not in ops_ort_runs(model)  # a float bias blocks ORT's fusion
    assert quantize_biases(model) == 1
    bias_scale = 0.03 * 0.01
    np.testing.assert_allclose(_run(model, x), before, atol=bias_scale / 2 + 1e-6)  # only the bias is rounded
    assert "QGemm" in ops_ort_runs(model)


def _interleaved_conv(second_scale=0.02, between="Transpose"):
    """Two uint8-quantized branches, each dequantized, moved (Transpose) and concatenated, then a conv whose
    output is quantized for the next layer: the shape NNCF leaves after a per-phase ConvTranspose rewrite."""
    w_inits, w_node = _conv_weight("c", 4, 6)
    inits = [_init("s1", np.float32(0.02)), _init("s2", np.float32(second_scale)), _init("z0", np.uint8(0)),
             _init("so", np.float32(0.05)), _init("zo", np.uint8(128)), *w_inits]
    nodes = [w_node]
    for branch, scale in (("a", "s1"), ("b", "s2")):
        nodes += [
            helper.make_node("Relu", [f"{branch}"], [f"{branch}_r"]),
            helper.make_node("QuantizeLinear", [f"{branch}_r", scale, "z0"], [f"{branch}_q"]),
            helper.make_node("DequantizeLinear", [f"{branch}_q", scale, "z0"], [f"{branch}_dq"]),
        ]
        if between == "Transpose":
            nodes.append(helper.make_node("Transpose", [f"{branch}_dq"], [f"{branch}_m"], perm=[0, 1, 3, 2]))
        else:
            nodes.append(helper.make_node(between, [f"{branch}_dq"], [f"{branch}_m"]))
    nodes += [
        helper.make_node("Concat", ["a_m", "b_m"], ["cat"], axis=1),
        helper.make_node("Conv", ["cat", "c_wdq"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["conv", "so", "zo"], ["conv_q"]),  # the next layer's input quantizer
        helper.make_node("DequantizeLinear", ["conv_q", "so", "zo"], ["y"]),
    ]
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, 3, 8, 8]) for name in "ab"]
    return _model(nodes, inits, inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4, 8, 8])])


def test_conv_after_an_interleave_gets_an_exact_requantization_and_runs_int8():
    model = _interleaved_conv()
    feeds = {name: RNG.standard_normal((2, 3, 8, 8)).astype(np.float32) * 3 for name in "ab"}
    before = _run(model, feeds)
    assert "QLinearConv" not in ops_ort_runs(model)
    assert requantize_before_convs(model) == 1
    np.testing.assert_array_equal(_run(model, feeds), before)
    assert "QLinearConv" in ops_ort_runs(model)


@pytest.mark.parametrize(
    "model",
    [_interleaved_conv(second_scale=0.03), _interleaved_conv(between="Sigmoid")],
    ids=["branches-on-different-grids", "value-changing-op-on-the-way"],
)
def test_no_requantization_where_it_would_change_values(model):
    assert requantize_before_convs(model) == 0


def _phases_into_a_concat(scales=(0.02, 0.05)):
    """ORT's quantizer's form: each branch Q/DQ on its own scale, Concat, then Q/DQ on the Concat's scale."""
    inits = [_init("s0", np.float32(scales[0])), _init("s1", np.float32(scales[1])), _init("sc", np.float32(0.04)),
             _init("z", np.uint8(0))]
    nodes = []
    for branch in "ab":
        scale = "s0" if branch == "a" else "s1"
        nodes += [
            helper.make_node("Relu", [branch], [f"{branch}_r"]),
            helper.make_node("QuantizeLinear", [f"{branch}_r", scale, "z"], [f"{branch}_q"]),
            helper.make_node("DequantizeLinear", [f"{branch}_q", scale, "z"], [f"{branch}_dq"]),
        ]
    nodes += [
        helper.make_node("Concat", ["a_dq", "b_dq"], ["cat"], axis=1),
        helper.make_node("QuantizeLinear", ["cat", "sc", "z"], ["cat_q"]),
        helper.make_node("DequantizeLinear", ["cat_q", "sc", "z"], ["y"]),
    ]
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, 3]) for name in "ab"]
    return _model(nodes, inits, inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 6])])


def test_concat_inputs_are_quantized_once_onto_the_concat_grid():
    model = _phases_into_a_concat()
    feeds = {name: RNG.uniform(-1, 12, (256, 3)).astype(np.float32) for name in "ab"}
    twice = _run(model, feeds)
    assert share_concat_scales(model) == 1
    once = _run(model, feeds)
    exact = np.clip(np.concatenate([feeds["a"], feeds["b"]], axis=1), 0, 255 * 0.04)
    np.testing.assert_allclose(once, np.round(exact / 0.04) * 0.04, atol=1e-6)  # one rounding, onto 0.04
    assert np.abs(once - exact).max() <= np.abs(twice - exact).max()
    scales = {node.input[1] for node in model.graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")}
    assert scales == {"sc"}


def test_concat_inputs_of_very_different_ranges_keep_their_own_grids():
    """A UNet skip: an input with a tenth of the other's range would lose more than 3 bits on the shared grid."""
    model = _phases_into_a_concat(scales=(0.004, 0.05))
    assert share_concat_scales(model) == 0
    scales = {node.input[1] for node in model.graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")}
    assert scales == {"s0", "s1", "sc"}


def test_float_tails_are_the_normalization_and_the_elementwise_chain_after_it():
    from compressor.runtimes.onnxruntime_quantize import float_tails

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 3, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 3, 3])
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("InstanceNormalization", ["c", "s", "b"], ["n"], name="norm"),
        helper.make_node("Mul", ["n", "gamma"], ["m"], name="affine"),
        helper.make_node("Sigmoid", ["m"], ["g"], name="gate"),
        helper.make_node("Mul", ["m", "g"], ["silu"], name="silu"),
        helper.make_node("Conv", ["silu", "w"], ["d"], name="next_conv"),
        helper.make_node("Add", ["d", "c"], ["y"], name="residual"),  # after a conv: quantized as usual
    ]
    initializers = [
        _init("w", RNG.standard_normal((4, 4, 1, 1)).astype(np.float32)),
        _init("s", np.ones(4, np.float32)), _init("b", np.zeros(4, np.float32)),
        _init("gamma", np.full((1, 4, 1, 1), 2.0, np.float32)),
    ]
    graph = _model(nodes, initializers, [x], [y]).graph
    assert sorted(float_tails(graph)) == ["affine", "gate", "norm", "silu"]


def _layout_chain_model() -> onnx.ModelProto:
    """x -> Relu -> Transpose -> Gather (a reflection pad's row gather) -> Q -> DQ -> DepthToSpace -> y: the value
    moves happen on float around one quantizer, as quantizers leave them."""
    from onnx import TensorProto
    from onnx import helper as h

    nodes = [
        h.make_node("Relu", ["x"], ["r"]),
        h.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 3, 1]),
        h.make_node("Gather", ["t", "rows"], ["g"], axis=1),
        h.make_node("Transpose", ["g"], ["back"], perm=[0, 3, 1, 2]),
        h.make_node("QuantizeLinear", ["back", "scale", "zero"], ["q"], name="Q"),
        h.make_node("DequantizeLinear", ["q", "scale", "zero"], ["dq"], name="DQ"),
        h.make_node("DepthToSpace", ["dq"], ["y"], blocksize=2),
    ]
    inits = [
        numpy_helper.from_array(np.array([1, 0, 1, 2, 3, 2], np.int64), "rows"),
        numpy_helper.from_array(np.array(0.02, np.float32), "scale"),
        numpy_helper.from_array(np.array(3, np.uint8), "zero"),
    ]
    graph = h.make_graph(nodes, "chain", [h.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8, 4, 5])],
                         [h.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 20)], ir_version=10)


def test_value_moves_run_on_uint8_and_give_the_same_values():
    import onnxruntime as ort

    from compressor.runtimes.onnx.qdq import quantize_layout_ops

    model = _layout_chain_model()
    before = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    moved = quantize_layout_ops(model)
    order = [node.op_type for node in model.graph.node]
    assert moved == 4 and order == ["Relu", "QuantizeLinear", "Transpose", "Gather", "Transpose", "DepthToSpace", "DequantizeLinear"]
    after = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = {"x": np.random.default_rng(0).standard_normal((2, 8, 4, 5)).astype(np.float32)}
    np.testing.assert_array_equal(before.run(None, x)[0], after.run(None, x)[0])


def test_a_value_move_with_another_reader_keeps_its_float_input():
    from compressor.runtimes.onnx.qdq import quantize_layout_ops

    model = _layout_chain_model()
    model.graph.output.append(onnx.helper.make_tensor_value_info("back", onnx.TensorProto.FLOAT, None))  # read twice
    quantize_layout_ops(model)
    assert [node.op_type for node in model.graph.node][:5] == ["Relu", "Transpose", "Gather", "Transpose", "QuantizeLinear"]


def test_phase_arguments_are_the_timestep_path_up_to_a_weighted_layer():
    """sin(t x f) and cos(conv(x) x g): the timestep's Cast and Mul stay float, the walk stops at the conv."""
    from compressor.runtimes.onnxruntime_quantize import phase_arguments

    nodes = [
        helper.make_node("Cast", ["t"], ["tf"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", ["tf", "f"], ["angle"], name="scale"),
        helper.make_node("Sin", ["angle"], ["s"], name="sin"),
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Mul", ["c", "g"], ["phase"], name="phase"),
        helper.make_node("Cos", ["phase"], ["y"], name="cos"),
    ]
    graph = helper.make_graph(nodes, "g", [], [])
    assert sorted(phase_arguments(graph)) == ["cast", "phase", "scale"]
