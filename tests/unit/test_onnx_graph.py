"""Folding Pad into Conv is exact, and leaves alone every Pad a conv's own zero padding cannot express."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compressor.runtimes.onnx.graph import fold_pads_into_convs


def _pad_conv_model(pads, fill=0.0, mode="constant", second_reader=False) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((4, 3, 2, 2)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Pad", ["x", "pads", "fill"], ["padded"], mode=mode),
        helper.make_node("Conv", ["padded", "w"], ["y"], kernel_shape=[2, 2]),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if second_reader:
        nodes.append(helper.make_node("Relu", ["padded"], ["other"]))
        outputs.append(helper.make_tensor_value_info("other", TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 5, 6])],
        outputs,
        initializer=[
            weight,
            numpy_helper.from_array(np.array(pads, dtype=np.int64), "pads"),
            numpy_helper.from_array(np.array(fill, dtype=np.float32), "fill"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)


def _run(model: onnx.ModelProto) -> np.ndarray:
    import onnxruntime as ort

    x = np.random.default_rng(1).standard_normal((2, 3, 5, 6)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["y"], {"x": x})[0]


def test_asymmetric_zero_pad_folds_into_the_conv_exactly():
    model = _pad_conv_model([0, 0, 1, 0, 0, 0, 0, 1])  # top 1, right 1
    expected = _run(model)
    assert fold_pads_into_convs(model) == 1
    assert [n.op_type for n in model.graph.node] == ["Conv"]
    conv_pads = [list(a.ints) for a in model.graph.node[0].attribute if a.name == "pads"]
    assert conv_pads == [[1, 0, 0, 1]]  # ONNX order: top, left, bottom, right
    np.testing.assert_allclose(_run(model), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"pads": [0, 0, 1, 1, 0, 0, 1, 1], "fill": 0.5},
        {"pads": [0, 0, 1, 1, 0, 0, 1, 1], "mode": "reflect"},
        {"pads": [0, 1, 1, 1, 0, 0, 1, 1]},  # pads the channel axis
        {"pads": [0, 0, 1, 1, 0, 0, 1, 1], "second_reader": True},
    ],
    ids=["nonzero-fill", "reflect", "channel-axis", "two-readers"],
)
def test_pads_a_conv_cannot_express_stay(kwargs):
    model = _pad_conv_model(**kwargs)
    assert fold_pads_into_convs(model) == 0
    assert [n.op_type for n in model.graph.node][:2] == ["Pad", "Conv"]


def test_pad_that_is_also_a_graph_output_stays():
    model = _pad_conv_model([0, 0, 1, 1, 0, 0, 1, 1])
    model.graph.output.append(helper.make_tensor_value_info("padded", TensorProto.FLOAT, None))
    assert fold_pads_into_convs(model) == 0
