"""ModelOpt int8 PTQ for TensorRT on CPU: the Q/DQ graph follows TensorRT's explicit-quantization rules, float
nodes stay float, the result stays close to fp32, the bytes are reproducible, and failures are one line."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

pytest.importorskip("modelopt.onnx.quantization")

from compressor.errors import ExportError  # noqa: E402
from compressor.evaluate.paired import psnr  # noqa: E402
from compressor.modelcard import ModelCard  # noqa: E402
from compressor.runtimes.onnx import tensorrt_rules  # noqa: E402
from compressor.runtimes.onnx.export import export_onnx  # noqa: E402
from compressor.runtimes.tensorrt_quantize import quantize  # noqa: E402
from compressor.testing.models import TinyDecoder, TinyGenerator, card_dict, randomized  # noqa: E402

LATENT = {"generator": 8, "decoder": 4}


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    """The two tiny models exported at opset 17, as the project exports them."""
    folder = tmp_path_factory.mktemp("trt")
    paths = {}
    for kind, cls in (("generator", TinyGenerator), ("decoder", TinyDecoder)):
        card = ModelCard.model_validate(card_dict(f"tiny-{kind}", LATENT[kind]))
        model = randomized(cls(latent_dim=LATENT[kind]))
        paths[kind] = export_onnx(model, card, folder / f"{kind}.onnx", opset=17)
    return paths


@pytest.fixture(scope="module")
def quantized(fp32):
    """Both models quantized with the defaults (max calibration, fp16), written beside their fp32 file."""
    outputs = {kind: quantize(path, path.with_suffix(".trt.onnx"), _batches(kind)) for kind, path in fp32.items()}
    return {kind: onnx.load(str(path)) for kind, path in outputs.items()}


def _batches(kind: str, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"z": rng.standard_normal((16, LATENT[kind]), dtype=np.float32)} for _ in range(4)]


def _dequantized(model) -> dict[str, onnx.NodeProto]:
    """DequantizeLinear nodes by output name."""
    return {node.output[0]: node for node in model.graph.node if node.op_type == "DequantizeLinear"}


def _constants(model) -> dict[str, np.ndarray]:
    """Initializers and Constant node outputs by name."""
    found = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    constant_nodes = [node for node in model.graph.node if node.op_type == "Constant"]
    found.update({node.output[0]: numpy_helper.to_array(node.attribute[0].t) for node in constant_nodes})
    return found


def _axis(node) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 1)


def _weighted(model, op_type: str) -> list[tuple[onnx.NodeProto, tuple[int, ...]]]:
    """Nodes of `op_type` with their weight's shape, traced back through DequantizeLinear and QuantizeLinear."""
    producers = {output: node for node in model.graph.node for output in node.output}
    shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    found = []
    for node in (n for n in model.graph.node if n.op_type == op_type):
        name = node.input[1]
        while name in producers and producers[name].op_type in ("DequantizeLinear", "QuantizeLinear"):
            name = producers[name].input[0]
        found.append((node, shapes[name]))
    return found


def test_every_conv_transpose_gets_symmetric_int8_qdq(quantized):
    model = quantized["generator"]
    dq, constants = _dequantized(model), _constants(model)
    convs = _weighted(model, "ConvTranspose")
    assert len(convs) == 2
    for node, (cin, *_) in convs:
        activation, weight = dq[node.input[0]], dq[node.input[1]]
        assert constants[activation.input[1]].shape == ()  # one scale per activation tensor
        # [Cin, Cout, kH, kW]: TensorRT's deconvolution takes per-channel scales on axis 0 only (ModelOpt wrote 1).
        assert _axis(weight) == 0 and constants[weight.input[1]].shape == (cin,)
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zero_point = constants[node.input[2]]
            assert zero_point.dtype == np.int8 and not zero_point.any()
    # Biases stay float: no int32 DequantizeLinear (TensorRT fuses the float bias itself).
    assert all(constants[node.input[0]].dtype == np.int8 for node in dq.values() if node.input[0] in constants)
    assert {op.domain: op.version for op in model.opset_import}[""] == 19  # raised from 17 (fp16 Q/DQ scales)


def test_convs_get_per_channel_weights_except_those_modelopt_keeps_float(quantized):
    """ModelOpt keeps a Conv with fewer than 16 input and output channels in float (a TensorRT speed rule):
    here the 8 -> 1 image head. The 16 -> 8 Conv is quantized, weights on axis 0."""
    model = quantized["decoder"]
    dq, constants = _dequantized(model), _constants(model)
    convs = {shape[:2]: node for node, shape in _weighted(model, "Conv")}
    body, head = convs[(8, 16)], convs[(1, 8)]
    assert _axis(dq[body.input[1]]) == 0 and constants[dq[body.input[1]].input[1]].shape == (8,)
    assert body.input[0] in dq
    assert head.input[1] not in dq and head.input[0] not in dq


def test_float_nodes_stay_float_and_names_match_whole(fp32, tmp_path):
    """A named ConvTranspose keeps float weights and input; a node whose name merely starts with it does not."""
    model = onnx.load(str(fp32["generator"]))
    first, second = [node for node in model.graph.node if node.op_type == "ConvTranspose"]
    first.name, second.name = "up", "up_1"
    onnx.save(model, str(tmp_path / "renamed.onnx"))
    out = quantize(tmp_path / "renamed.onnx", tmp_path / "out.onnx", _batches("generator"), float_nodes=["up"])
    result = onnx.load(str(out))
    dq = _dequantized(result)
    nodes = {node.name: node for node in result.graph.node}
    assert nodes["up"].input[1] not in dq and nodes["up"].input[0] not in dq
    assert nodes["up_1"].input[1] in dq and nodes["up_1"].input[0] in dq


def _ort(path, feeds):
    # ORT_DISABLE_ALL runs Q/DQ as the ONNX spec defines them, as TensorRT does; with its optimizations ORT runs
    # fp32 Q/DQ graphs in its own x86 int8 kernels, 5 to 11 dB further from fp32 on the demos (AVX2, no VNNI).
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, feed)[0] for feed in feeds])


@pytest.mark.parametrize("kind", ["generator", "decoder"])
def test_output_stays_close_to_fp32(fp32, quantized, kind):
    feeds = _batches(kind, seed=1)  # other latents than the calibration ones
    reference = _ort(fp32[kind], feeds)
    assert psnr(reference, _ort(fp32[kind].with_suffix(".trt.onnx"), feeds), 2.0) >= 30


def test_fp32_and_entropy_quantize_too(fp32, tmp_path):
    out = quantize(fp32["generator"], tmp_path / "q.onnx", _batches("generator"), method="entropy", float_dtype="fp32")
    model = onnx.load(str(out))
    assert tensorrt_rules.check(model, "10.3", max_opset=20) == []
    assert not any(node.op_type == "Cast" for node in model.graph.node)  # no fp16 conversion
    feeds = _batches("generator", seed=1)
    assert psnr(_ort(fp32["generator"], feeds), _ort(out, feeds), 2.0) >= 30


def test_same_input_gives_same_bytes(fp32, tmp_path):
    first = quantize(fp32["decoder"], tmp_path / "a.onnx", _batches("decoder"))
    second = quantize(fp32["decoder"], tmp_path / "b.onnx", _batches("decoder"))
    assert first.read_bytes() == second.read_bytes() == fp32["decoder"].with_suffix(".trt.onnx").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx", "b.onnx"]  # no intermediate files left


def test_modelopt_stays_silent(fp32, tmp_path, capfd, caplog):
    with caplog.at_level(logging.DEBUG):
        quantize(fp32["generator"], tmp_path / "q.onnx", _batches("generator"))
    assert capfd.readouterr() == ("", "")
    assert not [record for record in caplog.records if record.levelno >= logging.INFO]


def _with_custom_op(path, tmp_path):
    """The tanh moved to a custom domain, as an unconverted plugin op would be: ORT cannot calibrate it."""
    model = onnx.load(str(path))
    next(node for node in model.graph.node if node.op_type == "Tanh").domain = "com.example"
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    onnx.save(model, str(tmp_path / "broken.onnx"))
    return tmp_path / "broken.onnx"


def _truncated(path, tmp_path):
    """Half a file, as an interrupted copy leaves it."""
    data = path.read_bytes()
    (tmp_path / "broken.onnx").write_bytes(data[: len(data) // 2])
    return tmp_path / "broken.onnx"


@pytest.mark.parametrize("broken", [_with_custom_op, _truncated])
def test_modelopt_failure_is_one_line(fp32, tmp_path, broken, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ExportError) as caught:
        quantize(broken(fp32["generator"], tmp_path), tmp_path / "q.onnx", _batches("generator"))
    assert [path.name for path in tmp_path.iterdir()] == ["broken.onnx"]  # ORT's shape-inference dump stayed in ours
    message = caught.value.message
    assert "\n" not in message and "compressor-trt-" not in message  # no temporary path
    assert message.startswith("ModelOpt could not quantize broken.onnx for TensorRT (")
    assert message.endswith("keep the failing layer in float with a ptq rule, or rerun with --debug")


def test_unknown_method_is_refused(fp32, tmp_path):
    with pytest.raises(ValueError, match="method"):
        quantize(fp32["generator"], tmp_path / "q.onnx", _batches("generator"), method="percentile")


def test_onnxruntime_quantization_is_left_as_modelopt_found_it(fp32, tmp_path):
    """ModelOpt patches ORT's calibrators and op registries for the whole process; ptq for a CPU target run later
    in the same process must see ORT's own."""
    from onnxruntime.quantization import calibrate, registry

    def state():
        return dict(registry.QDQRegistry), calibrate.HistogramCalibrater.collect_data, calibrate.create_calibrator

    before = state()
    quantize(fp32["generator"], tmp_path / "q.onnx", _batches("generator"))
    assert state() == before
