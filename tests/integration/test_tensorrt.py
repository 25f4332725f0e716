"""TensorRT releases on a machine without TensorRT or a GPU: what is built and checked here (explicit-quantization
ONNX that passes the rules checker, simulated numerics, pending latency, the build kit), what `build-engine` adds
on the device (its TensorRT calls replaced by stand-ins: they are tested on a GPU, tests/unit/test_tensorrt_engine.py),
and every bad input refused in one line."""

from __future__ import annotations

import json
import subprocess

import pytest

from compressor import api
from compressor.errors import CompressorError, ConfigError, ExportError
from compressor.runtimes import tensorrt_engine
from compressor.runtimes.onnx import tensorrt_rules
from compressor.runtimes.tensorrt import TensorRT

pytestmark = pytest.mark.skipif(TensorRT.unavailable_reason() is not None, reason="the [tensorrt] extra is not installed")

FAST = ("stages.ptq.samples=32", "quality.samples=32", "target.parity.samples=4", "budgets.latency_ms.max=5")


def _run(folder, out, *sets, target="jetson", **kwargs):
    return api.run(api.RunConfig(checkpoint=folder, target=target, out=out, sets=FAST + sets, **kwargs))


@pytest.fixture(scope="module")
def release(module_generator_folder, tmp_path_factory):
    return module_generator_folder, _run(module_generator_folder, tmp_path_factory.mktemp("trt"))


def test_release_holds_checked_qdq_onnx_and_the_build_kit(release):
    _, result = release
    files = sorted(path.name for path in result.release_dir.iterdir())
    assert files == ["build_engine.sh", "gallery.png", "manifest.json", "model.fp32.onnx", "model.onnx", "report.html",
                     "report.md"]
    assert tensorrt_rules.check(result.release_dir / "model.onnx", "10.3", max_opset=20) == []
    script = result.release_dir / "build_engine.sh"
    subprocess.run(["sh", "-n", str(script)], check=True)
    assert "--onnx=model.onnx" in script.read_text() and "--int8" in script.read_text()


def test_numerics_are_labelled_simulated_and_latency_pending(release):
    _, result = release
    final = result.manifest["artifacts"]["model.onnx"]
    assert final["role"] == "final" and final["runtime"] == "tensorrt" and "simulated on ONNX Runtime CPU" in final["numerics"]
    assert final["parity"]["ok"] and final["parity"]["psnr_db"] >= 30
    assert "build-engine" in final["latency"]["pending"] and "latency_vs_fp32" not in final
    report = result.report.read_text()
    assert "simulated on ONNX Runtime CPU" in report and "## On the device" in report and "pending" in report


def test_a_latency_budget_is_pending_not_passed(release, tmp_path):
    _, result = release
    latency = result.budgets["latency_ms"]
    assert latency["ok"] is None and latency["value"] is None and "compressor build-engine" in latency["pending"]
    gate = subprocess.run([".venv/bin/compressor", "gate", str(result.release_dir), "--junit", str(tmp_path / "j.xml")],
                          capture_output=True, text=True)
    assert gate.returncode == 4 and "cannot judge latency_ms" in gate.stderr
    assert "<skipped" in (tmp_path / "j.xml").read_text()


@pytest.fixture
def fake_device(monkeypatch):
    """tensorrt_engine's device calls replaced by stand-ins that write an engine file and report a timing."""
    built = {}

    def build(onnx_path, engine_path, spec, timing_cache=None):
        built["spec"] = spec
        engine_path.write_bytes(b"engine of " + onnx_path.read_bytes()[:16])
        return {"tensorrt_version": "10.3.0.30", "device": "Orin (stand-in)", "build_seconds": 1.5,
                "layers": {"conv": "int8"}, "precision_counts": {"int8": 1}}

    def time(engine_path, spec, warmup, runs, seed=0):
        stats = {"median_ms": 2.0, "p90_ms": 2.5, "mean_ms": 2.1, "min_ms": 1.9, "runs": runs, "warmup": warmup}
        return {"batches": {str(b): {**stats, "per_sample_ms": 2.0 / b} for b in spec.batch_sizes}, "device": "Orin"}

    monkeypatch.setattr(tensorrt_engine, "unavailable_reason", lambda: None)
    monkeypatch.setattr(tensorrt_engine, "build_engine", build)
    monkeypatch.setattr(tensorrt_engine, "time_engine", time)
    return built


def test_build_engine_adds_engine_and_latency_then_the_budget_is_judged(release, tmp_path, fake_device):
    import shutil

    from compressor.release.engine import build_release_engine

    _, result = release
    copy = tmp_path / "jetson-orin"
    shutil.copytree(result.release_dir, copy)
    manifest = build_release_engine(copy)
    assert fake_device["spec"].int8 and fake_device["spec"].batch_sizes == (1, 8)
    engine = manifest["engine"]
    assert (copy / "model.engine").is_file() and engine["device"] == "Orin (stand-in)" and len(engine["sha256"]) == 64
    assert engine["version_mismatch"] is False
    assert manifest["budgets"]["latency_ms"] == {"value": 2.0, "limit": 5.0, "bound": "max", "batch": 1, "ok": True}
    saved = json.loads((copy / "manifest.json").read_text())
    assert saved["engine"]["file"] == "model.engine" and "## Engine" in (copy / "report.md").read_text()
    assert result.manifest["verdict"] == "pending" and saved["verdict"] == "pass"  # the latency budget is judged now
    assert saved["finished_at"] == result.manifest["finished_at"] and saved["engine"]["built_at"] >= saved["finished_at"]
    assert 'class="badge pass"' in (copy / "report.html").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jetson-orin"]  # no partial folder left behind


def test_an_engine_from_another_tensorrt_is_warned_and_recorded(release, tmp_path, fake_device, monkeypatch, caplog):
    import shutil

    from compressor.release.engine import build_release_engine

    original = tensorrt_engine.build_engine
    monkeypatch.setattr(tensorrt_engine, "build_engine", lambda *a, **k: {**original(*a, **k), "tensorrt_version": "10.7.0"})
    copy = tmp_path / "jetson-orin"
    shutil.copytree(release[1].release_dir, copy)
    engine = build_release_engine(copy)["engine"]
    assert engine["version_mismatch"] and engine["target_tensorrt_version"] == "10.3"
    assert "this device has TensorRT 10.7.0, the release was made for 10.3" in caplog.text


def test_build_engine_refuses_what_it_cannot_finish(release, tmp_path):
    from compressor.release.engine import build_release_engine

    with pytest.raises(CompressorError, match="not a compressor release"):
        build_release_engine(tmp_path)
    with pytest.raises(CompressorError, match="tensorrt is not importable.*pip install tensorrt"):
        build_release_engine(release[1].release_dir)


def test_build_engine_refuses_a_cpu_release(module_generator_folder, tmp_path, fake_device):
    from compressor.release.engine import build_release_engine

    cpu = api.run(api.RunConfig(checkpoint=module_generator_folder, target="cpu", out=tmp_path,
                                sets=("stages.ptq.samples=32", "quality.samples=32", "target.benchmark.runs=2")))
    with pytest.raises(CompressorError, match="runtime onnxruntime.*finishes TensorRT releases only"):
        build_release_engine(cpu.release_dir)


def test_an_opset_the_parser_cannot_take_fails_before_any_release(module_generator_folder, tmp_path):
    target = tmp_path / "old-jetson.yaml"
    target.write_text("name: old-jetson\nruntime: {kind: tensorrt, tensorrt_version: '8.6'}\nprecisions: [fp32, fp16, int8]\n"
                      "default_profile: tensorrt\nbenchmark: {batch_sizes: [1]}\n")
    with pytest.raises(ExportError, match=r"TensorRT 8.6 would reject it: .*opset 19"):
        _run(module_generator_folder, tmp_path / "out", target=str(target))
    assert not (tmp_path / "out" / "old-jetson").exists()


def test_an_operator_the_parser_lacks_is_named_with_node_and_version(tmp_path):
    import onnx
    from onnx import helper

    from compressor.config import load_target

    node = helper.make_node("STFT", ["x", "step"], ["y"], name="spectrogram")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 64, 1])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
                              [helper.make_tensor("step", onnx.TensorProto.INT64, [], [8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    with pytest.raises(ExportError, match=r"TensorRT 10.3 would reject it: .*STFT 'spectrogram'"):
        TensorRT(load_target("jetson")).check_quantizable(model)


def test_percentile_calibration_is_refused_before_any_work(module_generator_folder, tmp_path):
    with pytest.raises(ConfigError, match="ModelOpt calibrates with minmax or entropy only"):
        _run(module_generator_folder, tmp_path, "stages.ptq.method=percentile")


def test_qat_uses_modelopt_and_writes_what_tensorrt_takes(module_generator_folder, tmp_path):
    pytest.importorskip("modelopt.torch.quantization")
    sets = ("stages.qat.steps=30", "stages.qat.samples=32", "quality.samples=32",
            "target.parity.samples=4", 'stages.qat.rules=[{match: "blocks.5", skip: true}]')
    result = api.run(api.RunConfig(checkpoint=module_generator_folder, target="jetson", profile="tensorrt-qat",
                                   out=tmp_path, sets=sets))
    qat = next(stage for stage in result.manifest["stages"] if stage["name"] == "qat")["metrics"]
    assert qat["quantizer"] == "modelopt" and qat["steps"] == 30 and qat["loss_last"] < 1e-3  # trained, not diverged
    final = result.manifest["artifacts"]["model.onnx"]
    assert final["parity"]["ok"] and final["details"]["layers"]["blocks.5"]["precision"] == "fp16"
    assert final["details"]["layers"]["blocks.2"]["precision"] == "int8"
    assert tensorrt_rules.check(result.release_dir / "model.onnx", "10.3", max_opset=20) == []
