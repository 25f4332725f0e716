"""Bias correction of an int8 Q/DQ model: after it, each Conv/Gemm output keeps the fp32 model's channel means
(within one step of the bias's quantization scale), where ORT's quantizer alone leaves them visibly off."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from compressor.config import load_target
from compressor.runtimes.onnx.bias_correction import _biases, _channel_means, correct_biases
from compressor.runtimes.onnxruntime_quantize import quantize


class _ConvNet(nn.Module):
    """Conv -> SiLU -> Conv -> SiLU -> pool -> Linear: SiLU outputs have a non-zero mean, as in a UNet."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Conv2d(3, 16, 3, padding=1)
        self.second = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Linear(16, 8)

    def forward(self, x):
        x = nn.functional.silu(self.second(nn.functional.silu(self.first(x))))
        return self.head(x.mean(dim=(2, 3)))


def _feeds(count: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": (rng.standard_normal((8, 3, 12, 12)) + 0.5).astype(np.float32)} for _ in range(count)]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(fp32 ONNX, ORT's int8 Q/DQ model of it with 7-bit weights, the calibration feeds)."""
    folder = tmp_path_factory.mktemp("bias")
    torch.manual_seed(0)
    fp32 = folder / "fp32.onnx"
    torch.onnx.export(_ConvNet().eval(), (torch.zeros(8, 3, 12, 12),), str(fp32), input_names=["x"], dynamo=False)
    feeds = _feeds(4, 0)
    int8 = quantize(fp32, folder / "int8.onnx", feeds, load_target("cpu"), "percentile", 99.9)
    return onnx.load(str(fp32)), onnx.load(str(int8)), feeds


def _mean_errors(fp32, quantized, feeds) -> dict[str, float]:
    """By quantized node output: the largest difference of a channel mean from the fp32 node of the same name."""
    fp32_outputs = {node.name: node.output[0] for node in fp32.graph.node}
    nodes = [bias.node for bias in _biases(quantized.graph)]
    want = _channel_means(fp32, [fp32_outputs[node.name] for node in nodes], feeds, None)
    got = _channel_means(quantized, [node.output[0] for node in nodes], feeds, None)
    return {node.output[0]: float(np.abs(want[fp32_outputs[node.name]] - got[node.output[0]]).max()) for node in nodes}


def test_every_conv_and_gemm_of_ort_int8_is_found_with_its_int32_bias(models):
    _, quantized, _ = models
    biases = _biases(quantized.graph)
    assert len(biases) == 3
    assert all(bias.scale is not None for bias in biases)  # ORT quantizes biases to int32 behind a DequantizeLinear


def test_channel_means_match_fp32_after_correction(models):
    fp32, quantized, feeds = models
    before = _mean_errors(fp32, quantized, feeds)
    corrected = onnx.ModelProto()
    corrected.CopyFrom(quantized)
    shifts = correct_biases(fp32, corrected, feeds)
    after = _mean_errors(fp32, corrected, feeds)
    scales = {bias.node.output[0]: float(onnx.numpy_helper.to_array(
        next(i for i in corrected.graph.initializer if i.name == bias.scale)).max()) for bias in _biases(corrected.graph)}
    assert set(shifts) == set(before) == set(after)
    assert max(before.values()) > 5 * max(scales.values())  # there was something to correct
    for name, error in after.items():
        assert error <= scales[name]  # within one step of the int32 bias grid


def test_correction_also_helps_on_inputs_it_did_not_see(models):
    fp32, quantized, feeds = models
    corrected = onnx.ModelProto()
    corrected.CopyFrom(quantized)
    correct_biases(fp32, corrected, feeds)
    held_out = _feeds(4, 1)
    name = fp32.graph.output[0].name

    def mean_error(model):
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        reference = ort.InferenceSession(fp32.SerializeToString(), providers=["CPUExecutionProvider"])
        errors = [session.run([name], feed)[0] - reference.run([name], feed)[0] for feed in held_out]
        return float(np.abs(np.mean(np.concatenate(errors), axis=0)).mean())

    assert mean_error(corrected) < 0.5 * mean_error(quantized)


def test_a_float_bias_moves_by_the_measured_shift():
    """A float model whose bias was knocked off by 0.25 gets exactly that back."""
    torch.manual_seed(1)
    conv = nn.Conv2d(2, 4, 1)
    fp32 = _export(conv)
    with torch.no_grad():
        conv.bias += 0.25
    shifted = _export(conv)
    feeds = [{"x": np.random.default_rng(2).standard_normal((4, 2, 5, 5)).astype(np.float32)}]
    shifts = correct_biases(fp32, shifted, feeds)
    assert list(shifts.values()) == [pytest.approx(0.25, abs=1e-5)]
    assert _mean_errors(fp32, shifted, feeds)[next(iter(shifts))] < 1e-5


def _export(module: nn.Module) -> onnx.ModelProto:
    import io

    buffer = io.BytesIO()
    torch.onnx.export(module.eval(), (torch.zeros(4, 2, 5, 5),), buffer, input_names=["x"], dynamo=False)
    return onnx.load_from_string(buffer.getvalue())
