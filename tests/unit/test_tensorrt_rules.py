"""The static TensorRT checker: a conv with Q/DQ done right passes, each broken rule is named on the node that
breaks it, and a real fp32 export of TinyGenerator passes at TensorRT 10.3 (opset 17) but not under an opset-13 cap."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compressor.runtimes.onnx.tensorrt_rules import Violation, check, parser_limits

RNG = np.random.default_rng(0)


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def _model(nodes, initializers, opset=17, inputs=None, functions=()):
    inputs = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])]
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * 4)  # every checked graph ends 4-D
    graph = helper.make_graph(nodes, "g", inputs, [output], initializers)
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(f.domain, 1) for f in functions]
    return helper.make_model(graph, opset_imports=imports, ir_version=10, functions=list(functions))


def _activation_qdq(zero=np.int8(0), scale=np.float32(0.02)):
    """x -> Q -> DQ -> xdq, per tensor unless `scale` has several values."""
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["x_q"], name="x_quant"),
             helper.make_node("DequantizeLinear", ["x_q", "x_s", "x_z"], ["xdq"], name="x_dequant")]
    return [_init("x_s", scale), _init("x_z", zero)], nodes


def _weight_dq(shape, axis=0, scale_count=None):
    """A pre-quantized int8 weight behind a per-channel DequantizeLinear (scales along `axis`)."""
    count = shape[axis or 0] if scale_count is None else scale_count
    inits = [_init("w_w", RNG.integers(-60, 61, shape).astype(np.int8)),
             _init("w_s", RNG.uniform(0.005, 0.02, count).astype(np.float32)), _init("w_z", np.zeros(count, np.int8))]
    attrs = {} if axis is None else {"axis": axis}
    return inits, helper.make_node("DequantizeLinear", ["w_w", "w_s", "w_z"], ["w_dq"], name="w_dequant", **attrs)


def _qdq_conv(weight_axis=0, op="Conv", bias=None, activation=None):
    """x -> Q/DQ -> {op}(DQ(int8 weight), bias) -> y, the form TensorRT wants unless an argument breaks it."""
    shape = [4, 3, 3, 3] if op == "Conv" else [3, 4, 3, 3]
    inits, nodes = activation or _activation_qdq()
    w_inits, w_node = _weight_dq(shape, weight_axis)
    bias_inits, bias_nodes = bias or ([_init("b", np.zeros(4, np.float32))], [])
    layer = helper.make_node(op, ["xdq", "w_dq", bias_nodes[0].output[0] if bias_nodes else "b"], ["y"], name="layer")
    return _model([*nodes, w_node, *bias_nodes, layer], [*inits, *w_inits, *bias_inits])


def _nodes(violations: list[Violation], rule: str) -> set[str]:
    """The nodes `rule` flags, each message naming its op and node."""
    matching = [v for v in violations if v.rule == rule]
    assert all(v.op in v.message and v.node in v.message for v in matching), matching
    return {v.node for v in matching}


def _only(violations: list[Violation], rule: str) -> Violation:
    assert len(_nodes(violations, rule)) == 1, violations
    return next(v for v in violations if v.rule == rule)


def test_parser_limits_come_from_the_table():
    assert parser_limits("8.6") == (7, 17)
    assert parser_limits("10.3") == parser_limits("10.3.0.26") == parser_limits("10.8") == (9, 20)
    assert parser_limits("10.15") == (9, 24)
    with pytest.raises(ValueError, match="10.3"):
        parser_limits("9.9")


@pytest.mark.parametrize("op", ["Conv", "ConvTranspose"])
@pytest.mark.parametrize("version", ["8.6", "10.3", "10.8"])
def test_conv_with_qdq_done_right_passes(op, version):
    model = _qdq_conv(op=op)
    onnx.checker.check_model(model)
    assert check(model, version, max_opset=17) == []


def test_constant_node_scales_and_quantized_float_weights_pass():
    """ModelOpt's form: Constant scale, Constant -> Cast zero point, float weight through Q -> DQ."""
    nodes = [
        helper.make_node("Constant", [], ["s"], value=_init("", np.float32(0.02))),
        helper.make_node("Constant", [], ["z32"], value=_init("", np.zeros(4, np.int32))),
        helper.make_node("Cast", ["z32"], ["z"], to=TensorProto.INT8),
        helper.make_node("Constant", [], ["ws"], value=_init("", np.full(4, 0.01, np.float32))),
        helper.make_node("Constant", [], ["z1"], value=_init("", np.int8(0))),
        helper.make_node("QuantizeLinear", ["x", "s", "z1"], ["xq"], name="xq"),
        helper.make_node("DequantizeLinear", ["xq", "s", "z1"], ["xdq"], name="xdq"),
        helper.make_node("QuantizeLinear", ["w", "ws", "z"], ["wq"], name="wq", axis=0),
        helper.make_node("DequantizeLinear", ["wq", "ws", "z"], ["wdq"], name="wdq", axis=0),
        helper.make_node("Conv", ["xdq", "wdq"], ["y"], name="conv"),
    ]
    model = _model(nodes, [_init("w", RNG.standard_normal((4, 3, 3, 3)).astype(np.float32))])
    onnx.checker.check_model(model)
    assert check(model, "10.3", 17) == []


def test_opset_outside_the_parser_or_the_target():
    assert _only(check(_qdq_conv(), "10.3", max_opset=13), "opset").node == ""
    assert "opset_version=17" in _only(check(_model([], [], opset=18), "8.6", 18), "opset").message


def test_unsupported_op_names_the_release_that_adds_it():
    window = helper.make_node("HannWindow", ["n"], ["y"], name="window")
    model = _model([window], [], inputs=[helper.make_tensor_value_info("n", TensorProto.INT64, [])])
    found = _only(check(model, "10.3", 17), "unsupported-op")
    assert found.node == "window" and "10.4" in found.message
    assert check(model, "10.4", 17) == []


def test_custom_domain_nodes_need_a_plugin_but_trt_qdq_ops_parse():
    fused = helper.make_node("FusedConv", ["x", "w"], ["y"], name="fused", domain="com.microsoft")
    assert _only(check(_model([fused], []), "10.3", 17), "custom-domain").node == "fused"
    fp8 = helper.make_node("TRT_FP8QuantizeLinear", ["x", "s"], ["y"], name="fp8", domain="trt")
    assert check(_model([fp8], [_init("s", np.float32(1.0))]), "10.3", 17) == []


def test_local_functions_are_inlined_by_10_but_not_by_8_6():
    body = [helper.make_node("Unique", ["a"], ["b"])]
    function = helper.make_function("local", "Wrapped", ["a"], ["b"], body, [helper.make_opsetid("", 17)])
    call = helper.make_node("Wrapped", ["x"], ["y"], name="call", domain="local")
    model = _model([call], [], functions=[function])
    assert _only(check(model, "10.3", 17), "unsupported-op").op == "Unique"
    assert _only(check(model, "8.6", 17), "custom-domain").node == "call"


def test_uint8_and_missing_zero_points_are_the_wrong_type():
    found = _only(check(_qdq_conv(activation=_activation_qdq(zero=np.uint8(0))), "10.3", 17), "qdq-type")
    assert found.node == "x_quant" and "uint8" in found.message
    implicit = helper.make_node("QuantizeLinear", ["x", "s"], ["q"], name="q_no_zero")
    dequant = helper.make_node("DequantizeLinear", ["q", "s"], ["y"], name="dq")
    model = _model([implicit, dequant], [_init("s", np.float32(0.1))])
    assert _only(check(model, "10.3", 17), "qdq-type").node == "q_no_zero"
    assert _nodes(check(model, "8.6", 17), "zero-point") == {"q_no_zero", "dq"}


def test_fp8_needs_tensorrt_10_and_int4_is_for_weights_only():
    fp8 = _with_activation_zero_point(TensorProto.FLOAT8E4M3FN, opset=19)
    assert check(fp8, "10.3", 19) == []
    assert _only(check(fp8, "8.6", 19), "qdq-type").node == "x_quant"
    int4 = _with_activation_zero_point(TensorProto.INT4, opset=21)
    assert "weights only" in _only(check(int4, "10.8", 21), "qdq-type").message


def _with_activation_zero_point(data_type, opset):
    model = _qdq_conv()
    model.graph.initializer.remove(next(i for i in model.graph.initializer if i.name == "x_z"))
    model.graph.initializer.append(helper.make_tensor("x_z", data_type, [], [0]))
    model.opset_import[0].version = opset
    onnx.checker.check_model(model)
    return model


def test_zero_point_must_be_zero():
    model = _qdq_conv(activation=_activation_qdq(zero=np.int8(3)))
    assert _nodes(check(model, "10.3", 17), "zero-point") == {"x_quant", "x_dequant"}


def test_scale_must_be_a_positive_constant():
    for bad in (0.0, -0.1, np.inf):
        found = check(_qdq_conv(activation=_activation_qdq(scale=np.float32(bad))), "10.3", 17)
        assert _nodes(found, "scale-not-positive") == {"x_quant", "x_dequant"}
    computed = helper.make_node("Abs", ["s_in"], ["s"], name="abs")
    quant = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], name="runtime_scale")
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in (("x", [1, 3, 8, 8]), ("s_in", []))]
    model = _model([computed, quant], [_init("z", np.int8(0))], inputs=inputs)
    assert _only(check(model, "10.3", 17), "scale-not-constant").node == "runtime_scale"


def test_activations_are_per_tensor_only():
    channels = np.full(3, 0.02, np.float32)
    inits, nodes = _activation_qdq(scale=channels, zero=np.zeros(3, np.int8))
    for node in nodes:
        node.attribute.append(helper.make_attribute("axis", 1))
    found = check(_qdq_conv(activation=(inits, nodes)), "10.3", 17)
    assert _nodes(found, "activation-per-channel") == {"x_quant", "x_dequant"}


@pytest.mark.parametrize(("op", "axis"), [("Conv", 1), ("ConvTranspose", 1)])
def test_conv_weights_are_per_channel_on_axis_0(op, axis):
    found = _only(check(_qdq_conv(weight_axis=axis, op=op), "10.3", 17), "weight-axis")
    assert found.node == "w_dequant" and "axis 0" in found.message


def test_gemm_and_matmul_weights_are_per_output_channel():
    x = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])]
    for transb, axis, ok in [(1, 0, True), (0, 1, True), (0, 0, False)]:
        inits, dq = _weight_dq([5, 6] if transb else [6, 5], axis)
        gemm = helper.make_node("Gemm", ["x", "w_dq"], ["y"], name="gemm", transB=transb)
        assert (check(_model([dq, gemm], inits, inputs=x), "10.3", 17) == []) == ok
    for axis, ok in [(0, True), (1, False)]:  # a Linear weight (out, in), transposed in front of MatMul
        inits, dq = _weight_dq([5, 6], axis)
        transpose = helper.make_node("Transpose", ["w_dq"], ["wt"], perm=[1, 0])
        matmul = helper.make_node("MatMul", ["x", "wt"], ["y"], name="matmul")
        assert (check(_model([dq, transpose, matmul], inits, inputs=x), "10.3", 17) == []) == ok


def test_weight_scales_need_an_explicit_axis_and_one_scale_per_channel():
    model = _qdq_conv(weight_axis=None)
    assert "axis" in _only(check(model, "10.3", 17), "weight-axis").message
    inits, dq = _weight_dq([4, 3, 3, 3], 0, scale_count=2)
    conv = helper.make_node("Conv", ["x", "w_dq"], ["y"], name="conv")
    assert _only(check(_model([dq, conv], inits), "10.3", 17), "weight-axis").node == "w_dequant"


def test_quantized_bias_is_rejected():
    bias_inits = [_init("b32", np.zeros(4, np.int32)), _init("bs", np.full(4, 1e-4, np.float32))]
    bias_dq = helper.make_node("DequantizeLinear", ["b32", "bs"], ["b_dq"], name="bias_dequant", axis=0)
    found = _only(check(_qdq_conv(bias=(bias_inits, [bias_dq])), "10.3", 17), "bias-quantized")
    assert found.node == "bias_dequant" and "float" in found.message


@pytest.fixture(scope="module")
def tiny_generator_onnx(tmp_path_factory):
    from compressor.modelcard import ModelCard
    from compressor.runtimes.onnx.export import export_onnx
    from compressor.testing.models import TinyGenerator, card_dict

    card = ModelCard.model_validate(card_dict("tiny-generator", latent_dim=8))
    return export_onnx(TinyGenerator(), card, tmp_path_factory.mktemp("trt") / "generator.onnx", opset=17)


def test_real_fp32_export_passes_at_10_3_and_fails_an_opset_13_cap(tiny_generator_onnx):
    assert check(tiny_generator_onnx, "10.3", max_opset=17) == []
    assert [v.rule for v in check(tiny_generator_onnx, "10.3", max_opset=13)] == ["opset"]
