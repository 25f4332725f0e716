"""The qat stage on a tiny generator: NNCF fine-tuning that really improves on its own post-training start,
exported as QDQ that ORT runs in int8 on the target's weight grid, with layer rules and misuse handled."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from compressor import api
from compressor.errors import CompressorError, ConfigError
from compressor.testing.ort_ops import ops_ort_runs

pytest.importorskip("nncf", reason="the qat stage needs the [qat] extra")

FAST = ("target.benchmark.runs=2", "target.benchmark.warmup=0", "stages.qat.samples=32", "stages.qat.steps=60",
        "stages.qat.lr=1e-3")


def _run(folder, out, *sets, **kwargs):
    return api.run(api.RunConfig(checkpoint=folder, target="cpu", profile="qat", out=out, sets=FAST + sets, **kwargs))


@pytest.fixture(scope="module")
def trained(module_generator_folder, tmp_path_factory):
    return module_generator_folder, _run(module_generator_folder, tmp_path_factory.mktemp("qat"))


def test_fine_tuning_improves_on_the_post_training_start(trained):
    _, result = trained
    qat = next(stage for stage in result.manifest["stages"] if stage["name"] == "qat")["metrics"]
    assert qat["steps"] == 60 and qat["loss_last"] < qat["loss_first"]
    assert qat["psnr_db_after_training"] > qat["psnr_db_before_training"] + 1


@pytest.mark.slow
def test_every_conv_and_gemm_runs_in_int8_on_ort(trained):
    _, result = trained
    ops = ops_ort_runs(result.release_dir / "model.onnx")
    assert "QGemm" in ops and ops.count("QLinearConv") >= 5  # the input Linear and the 4 + 1 phase convs
    assert not {"Conv", "Gemm", "MatMul", "ConvTranspose"} & set(ops)  # nothing left in float


def test_artifact_has_uint8_activations_and_weights_on_the_7_bit_grid(trained):
    _, result = trained
    model = onnx.load(str(result.release_dir / "model.onnx"))
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    activation_q = [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in values]
    assert activation_q and all(values[n.input[2]].dtype == np.uint8 for n in activation_q)
    weights = [values[n.input[0]] for n in model.graph.node
               if n.op_type == "DequantizeLinear" and values.get(n.input[0]) is not None and values[n.input[0]].dtype == np.int8]
    assert weights and all(w.min() >= -64 and w.max() <= 64 for w in weights)  # target cpu-x86: weight_bits 7


def test_parity_and_manifest(trained):
    _, result = trained
    artifacts = result.manifest["artifacts"]
    assert artifacts["model.onnx"]["precision"] == "int8"
    assert artifacts["model.onnx"]["bytes"] < artifacts["model.fp32.onnx"]["bytes"]
    assert artifacts["model.onnx"]["parity"]["ok"] and artifacts["model.onnx"]["parity"]["psnr_db"] >= 30
    layers = result.manifest["artifacts"]["model.onnx"]["details"]["layers"]
    assert set(layers) >= {"project"} and all(entry["precision"] == "int8" for entry in layers.values())
    report = result.report.read_text()
    assert "| `project` | int8 | default |" in report and "60 steps: PSNR vs fp32" in report


def test_rule_keeps_a_layer_in_float(trained, tmp_path, caplog):
    folder, _ = trained
    result = _run(folder, tmp_path, 'stages.qat.rules=[{match: "project", precision: fp32}, {match: "nothing*", skip: true}]')
    layers = result.manifest["artifacts"]["model.onnx"]["details"]["layers"]
    assert layers["project"] == {"precision": "fp32", "reason": "rule 0 (match 'project')"}
    assert "rule 1 (match 'nothing*') matches no layer" in caplog.text
    ops = ops_ort_runs(result.release_dir / "model.onnx")
    assert "Gemm" in ops and "QGemm" not in ops


def test_precision_the_target_cannot_run_is_refused(trained, tmp_path):
    folder, _ = trained
    with pytest.raises(ConfigError, match=r"qat.rules\[0\]: layer 'project' asks for fp16.*cpu-x86"):
        _run(folder, tmp_path, 'stages.qat.rules=[{match: "project", precision: fp16}]')


def test_ptq_and_qat_together_are_refused(trained, tmp_path):
    folder, _ = trained
    profile = tmp_path / "both.yaml"
    profile.write_text("name: both\nstages:\n  - kind: ptq\n  - kind: qat\n")
    with pytest.raises(CompressorError, match="ptq and qat both quantize the final artifact"):
        api.run(api.RunConfig(checkpoint=folder, target="cpu", profile=str(profile), out=tmp_path / "out"))


def test_user_calibration_file_initialises_qat(trained, tmp_path):
    """--calibration reaches whichever quantizing stage the profile has (here qat, not ptq)."""
    folder, _ = trained
    data = tmp_path / "calib.npz"
    np.savez(data, z=np.random.default_rng(0).standard_normal((32, 8)).astype(np.float32))
    result = _run(folder, tmp_path / "out", "stages.qat.steps=0", calibration=data)
    qat = next(stage for stage in result.manifest["stages"] if stage["name"] == "qat")
    assert qat["config"]["calibration"] == str(data) and qat["metrics"]["calibration"] == str(data)
    assert result.manifest["artifacts"]["model.onnx"]["parity"]["ok"]


def test_a_torchscript_model_is_fine_tuned_through_its_lifted_graph(tmp_path):
    import torch

    from compressor.testing.models import TinyGenerator, randomized

    scripted = torch.jit.script(randomized(TinyGenerator()).eval())
    path = tmp_path / "generator.ts"
    scripted.save(str(path))
    card = tmp_path / "card.yaml"
    card.write_text("name: g\ninputs: {z: {shape: [8], prior: normal}}\noutputs: {image: {shape: [1, 16, 16], range: [-1, 1]}}\n")
    result = _run(path, tmp_path / "out", card=card)
    rewrite = next(stage for stage in result.manifest["stages"] if stage["name"] == "rewrite")
    assert rewrite["state"]["graph"] == "torch.export"  # the rewrite stage handed qat torch modules
    assert result.manifest["artifacts"]["model.onnx"]["parity"]["ok"]
    # Without the rewrite stage qat would get the TorchScript module itself: refused, with what to do.
    with pytest.raises(ConfigError, match="keep the rewrite stage before qat"):
        _run(path, tmp_path / "out2", "stages.rewrite.passes=[]", card=card)


