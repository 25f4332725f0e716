"""The ptq stage on a tiny generator: a real int8 QDQ artifact in the layout ORT x86 runs fast, calibrated
on the prior or on a user file, with quality checked and every misuse a clear error."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from compressor import api
from compressor.errors import CompressorError, ConfigError, ParityError
from compressor.testing.ort_ops import ops_ort_runs

FAST = ("target.benchmark.runs=2", "target.benchmark.warmup=0", "stages.ptq.samples=32")


def _run(folder, out, *sets, **kwargs):
    return api.run(api.RunConfig(checkpoint=folder, target="cpu", out=out, sets=FAST + sets, **kwargs))


@pytest.fixture(scope="module")
def quantized(module_generator_folder, tmp_path_factory):
    return module_generator_folder, _run(module_generator_folder, tmp_path_factory.mktemp("ptq"))


def test_int8_artifact_is_qdq_with_uint8_activations_and_per_channel_int8_weights(quantized):
    _, result = quantized
    model = onnx.load(str(result.release_dir / "model.onnx"))
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "Gemm"} <= ops
    assert "ConvTranspose" not in ops  # rewritten before quantization: ORT has no int8 ConvTranspose
    initializers = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    weight_dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and initializers.get(n.input[0]) is not None
                 and initializers[n.input[0]].ndim == 4]
    assert weight_dq and all(initializers[n.input[0]].dtype == np.int8 for n in weight_dq)
    assert all(initializers[n.input[1]].size > 1 for n in weight_dq)  # one scale per output channel
    activation_q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert all(initializers[n.input[2]].dtype == np.uint8 for n in activation_q)


def test_ort_runs_int8_from_the_linear_through_the_image_head(quantized):
    _, result = quantized
    ops = ops_ort_runs(result.release_dir / "model.onnx")
    assert "ConvTranspose" not in ops and "Conv" not in ops  # every conv fused into QLinearConv
    first_conv = ops.index("QLinearConv")
    # linear_channels_last: no dequantize, float ReLU or transpose between the QGemm and the first conv
    assert ops[ops.index("QGemm") + 1 : first_conv] == ["Reshape"]
    # the head's pixel shuffle on uint8 (qdq.quantize_layout_ops), then the dequantize and the output activation
    assert ops[-3:] == ["DepthToSpace", "DequantizeLinear", "Tanh"]


def _weight_levels(path) -> list[np.ndarray]:
    model = onnx.load(str(path))
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    return [values[n.input[0]] for n in model.graph.node
            if n.op_type == "DequantizeLinear" and n.input[0] in values and values[n.input[0]].dtype == np.int8]


def test_weight_grid_follows_the_target(quantized, tmp_path):
    folder, result = quantized
    seven_bit = _weight_levels(result.release_dir / "model.onnx")  # cpu-x86: safe without VNNI
    assert seven_bit and max(int(np.abs(w.astype(np.int16)).max()) for w in seven_bit) <= 64
    vnni = api.run(api.RunConfig(checkpoint=folder, target="cpu-x86-vnni", out=tmp_path, sets=FAST))
    assert max(int(np.abs(w.astype(np.int16)).max()) for w in _weight_levels(vnni.release_dir / "model.onnx")) == 127


def test_manifest_records_calibration_and_quality(quantized):
    _, result = quantized
    ptq = next(stage for stage in result.manifest["stages"] if stage["name"] == "ptq")
    assert ptq["metrics"] == {"calibration": "prior (32 seeded samples)", "method": "percentile"}
    int8 = result.manifest["artifacts"]["model.onnx"]
    fp32 = result.manifest["artifacts"]["model.fp32.onnx"]
    assert (int8["role"], fp32["role"]) == ("final", "baseline")
    assert int8["details"]["calibration"] == "prior (32 seeded samples)" and int8["details"]["int8_layers"] == 3
    assert int8["precision"] == "int8" and int8["bytes"] < fp32["bytes"]  # one call: io_layers auto leaves them int8
    assert 30 <= int8["parity"]["psnr_db"] < fp32["parity"]["psnr_db"]
    correction = int8["details"]["bias_correction"]
    assert correction["applied"] and correction["nodes"] == 6  # Linear, 4 phase convs of the ConvTranspose, head


def test_user_calibration_file_is_used(quantized, tmp_path):
    folder, _ = quantized
    data = tmp_path / "calib.npz"
    np.savez(data, z=np.random.default_rng(0).standard_normal((48, 8)).astype(np.float32))
    result = _run(folder, tmp_path / "out", f"stages.ptq.calibration={data}")
    ptq = next(stage for stage in result.manifest["stages"] if stage["name"] == "ptq")
    assert ptq["metrics"]["calibration"] == str(data)
    assert result.manifest["artifacts"]["model.onnx"]["parity"]["ok"]


def test_quality_below_the_threshold_fails_the_run(quantized, tmp_path):
    folder, _ = quantized
    with pytest.raises(ParityError, match=r"PSNR vs the torch model is .* dB, below the required 200.0 dB"):
        _run(folder, tmp_path / "out", "stages.ptq.min_psnr=200")
    assert not (tmp_path / "out" / "cpu-x86").exists()


def test_target_without_int8_refuses_ptq(quantized, tmp_path):
    folder, _ = quantized
    target = tmp_path / "fp32-only.yaml"
    target.write_text("name: fp32-only\nruntime: onnxruntime\nprecisions: [fp32]\n")
    with pytest.raises(ConfigError, match="ptq: target fp32-only does not run int8"):
        api.run(api.RunConfig(checkpoint=folder, target=str(target), profile="balanced", out=tmp_path, sets=FAST))


def test_ptq_must_come_after_torch_stages(tmp_path):
    profile = tmp_path / "backwards.yaml"
    profile.write_text("name: backwards\nstages:\n  - {kind: ptq}\n  - {kind: rewrite}\n")
    with pytest.raises(CompressorError, match="must be the last stage"):
        api.plan(api.RunConfig(checkpoint=tmp_path, profile=str(profile)))


def _float_conv_layers(path) -> set[str]:
    """Layers whose Conv weights are still float initializers in the artifact (not fed by DequantizeLinear)."""
    from compressor.runtimes.onnx.layers import node_layers

    model = onnx.load(str(path))
    initializers = {init.name for init in model.graph.initializer}
    layers = node_layers(model)
    return {layers[n.name] for n in model.graph.node if n.op_type in ("Conv", "Gemm") and n.input[1] in initializers}


def test_rule_keeps_a_layer_in_float_and_the_manifest_says_why(quantized, tmp_path):
    folder, _ = quantized
    result = _run(folder, tmp_path / "out", 'stages.ptq.rules=[{match: "blocks.5*", skip: true}]')
    assert _float_conv_layers(result.release_dir / "model.onnx") == {"blocks.5"}
    layers = result.manifest["artifacts"]["model.onnx"]["details"]["layers"]
    assert layers["blocks.5"] == {"precision": "fp32", "reason": "rule 0 (match 'blocks.5*')"}
    assert layers["blocks.2"] == {"precision": "int8", "reason": "default"}
    assert "| `blocks.5` | fp32 | rule 0 (match 'blocks.5*') |" in result.report.read_text()


def test_rule_asking_for_a_precision_the_target_cannot_run(quantized, tmp_path):
    folder, _ = quantized
    with pytest.raises(ConfigError, match=r"ptq.rules\[0\]: layer 'blocks.2' asks for fp16, which target cpu-x86 does not run in this stage"):
        _run(folder, tmp_path / "out", 'stages.ptq.rules=[{match: "blocks.2", precision: fp16}]')


def test_fp16_rule_is_refused_even_where_the_target_runs_fp16(quantized, tmp_path):
    """ptq places layers in int8 or fp32 only: an fp16 rule must not be recorded as fp16 and run in fp32."""
    folder, _ = quantized
    with pytest.raises(ConfigError, match=r"asks for fp16, .*\(it runs \['int8', 'fp32'\]"):
        _run(folder, tmp_path / "out", "target.precisions=[fp32, fp16, int8]",
             'stages.ptq.rules=[{match: "blocks.2", precision: fp16}]')


def test_auto_precision_keeps_the_most_sensitive_layers_in_float(quantized, tmp_path):
    folder, plain = quantized
    plain_psnr = plain.manifest["artifacts"]["model.onnx"]["parity"]["psnr_db"]
    goal = plain_psnr + 3  # more than all-int8 reaches, so auto must move something to float
    result = _run(folder, tmp_path / "out", "stages.ptq.auto_precision=true", f"stages.ptq.min_psnr={goal}")
    details = result.manifest["artifacts"]["model.onnx"]["details"]
    sensitivity = details["sensitivity_psnr_db"]
    assert set(sensitivity) == {"project", "blocks.2", "blocks.5"}
    kept = [layer for layer, entry in details["layers"].items() if entry["precision"] == "fp32"]
    assert kept and min(sensitivity, key=sensitivity.get) in kept  # the most sensitive goes first
    assert all(details["layers"][layer]["reason"].startswith("auto:") for layer in kept)
    assert result.manifest["artifacts"]["model.onnx"]["parity"]["psnr_db"] >= goal


def test_a_convtranspose_left_in_the_graph_is_called_out(quantized, tmp_path, caplog):
    folder, _ = quantized
    result = _run(folder, tmp_path / "out", "stages.rewrite.passes=[fold_batchnorm]")
    assert "ConvTranspose node(s) were not rewritten" in caplog.text
    assert "ConvTranspose" in ops_ort_runs(result.release_dir / "model.onnx")  # left in fp32, as the warning says


def test_mixed_precision_is_labelled_as_such(quantized, tmp_path):
    folder, _ = quantized
    result = _run(folder, tmp_path / "out", 'stages.ptq.rules=[{match: "project", precision: fp32}]')
    assert result.manifest["artifacts"]["model.onnx"]["precision"] == "mixed"
