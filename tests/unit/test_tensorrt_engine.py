"""TensorRT engines: the trtexec command and build script (pure, run everywhere) and a real build and timing
of a tiny engine (needs a CUDA GPU and TensorRT; skipped elsewhere)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import types
import warnings

import pytest

from compressor.errors import CompressorError
from compressor.runtimes import tensorrt_engine
from compressor.runtimes.tensorrt_engine import EngineSpec, build_script, layer_precisions, trtexec_command

SPEC = EngineSpec(inputs={"z": (64,), "image": (3, 8, 8)}, batch_sizes=(1, 4, 16), int8=True, fp16=True,
                  workspace_mb=512)


def _args(spec: EngineSpec, **kwargs) -> list[str]:
    return shlex.split(trtexec_command("model.onnx", "model.engine", spec, **kwargs))


def test_trtexec_command_for_int8_fp16_with_two_inputs():
    args = _args(SPEC)
    assert args[:3] == ["trtexec", "--onnx=model.onnx", "--saveEngine=model.engine"]
    for flag in (
        "--int8", "--fp16",
        "--minShapes=z:1x64,image:1x3x8x8", "--optShapes=z:16x64,image:16x3x8x8", "--maxShapes=z:16x64,image:16x3x8x8",
        "--memPoolSize=workspace:512M", "--timingCacheFile=timing.cache",
        "--profilingVerbosity=detailed", "--dumpLayerInfo", "--exportLayerInfo=layers.json",
    ):
        assert flag in args
    assert not [arg for arg in args if arg.startswith(("--useDLACore", "--allowGPUFallback", "--sparsity"))]


def test_precision_flags_follow_the_spec_and_the_timing_cache_can_be_left_out():
    args = _args(EngineSpec({"z": (64,)}, (8,), int8=False, fp16=True, workspace_mb=64), timing_cache=None)
    assert "--fp16" in args and "--int8" not in args
    assert "--minShapes=z:8x64" in args and "--maxShapes=z:8x64" in args
    assert not [arg for arg in args if arg.startswith("--timingCacheFile")]


def test_dla_flags_only_when_a_dla_core_is_set():
    args = _args(EngineSpec(SPEC.inputs, SPEC.batch_sizes, True, True, 512, dla_core=1))
    assert "--useDLACore=1" in args and "--allowGPUFallback" in args


def test_sparsity_flag_only_when_set():
    assert "--sparsity=enable" in _args(EngineSpec(SPEC.inputs, SPEC.batch_sizes, True, True, 512, sparsity=True))


def test_input_names_survive_the_shell_and_trtexecs_own_quoting():
    spec = EngineSpec({"latent z": (4,), "in:0": (2,)}, (1, 2), True, True, 64)
    args = shlex.split(trtexec_command("my model.onnx", "my model.engine", spec))
    assert "--onnx=my model.onnx" in args
    assert "--minShapes=latent z:1x4,'in:0':1x2" in args  # trtexec reads a ':' in a name inside single quotes
    with pytest.raises(ValueError, match="cannot hold"):
        trtexec_command("m.onnx", "m.engine", EngineSpec({"a,b": (4,)}, (1,), True, True, 64))


def test_spec_refuses_empty_batch_sizes():
    with pytest.raises(ValueError, match="batch sizes"):
        EngineSpec({"z": (64,)}, (), True, True, 64)


def test_build_script_is_valid_sh_and_runs_the_command(tmp_path):
    script = build_script("model.onnx", SPEC, "jetson-orin", "10.3.0.30")
    path = tmp_path / "build_engine.sh"
    path.write_text(script)
    subprocess.run(["sh", "-n", str(path)], check=True)
    assert script.startswith("#!/bin/sh\n") and "set -eu" in script and "/usr/src/tensorrt/bin/trtexec" in script
    assert trtexec_command("model.onnx", "model.engine", SPEC) in script


def _fake_trtexec(folder, banner_version: int):
    """A trtexec that prints the banner of the given TensorRT version and records the arguments of a build."""
    folder.mkdir()
    fake = folder / "trtexec"
    fake.write_text(f"""#!/bin/sh
if [ "$1" = "--help" ]; then
    echo "&&&& RUNNING TensorRT.trtexec [TensorRT v{banner_version}] [b30] # trtexec --help"
    exit 0
fi
printf '%s\\n' "$@" > args.txt
""")
    fake.chmod(0o755)


def _run_script(tmp_path, path_dirs):
    release = tmp_path / "release"
    release.mkdir(exist_ok=True)
    script = release / "build_engine.sh"
    script.write_text(build_script("model.onnx", SPEC, "jetson-orin", "10.3.0.30"))
    env = {**os.environ, "PATH": os.pathsep.join([*map(str, path_dirs), "/usr/bin", "/bin"])}
    # run from elsewhere: the script must cd to its own folder
    return subprocess.run(["sh", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True), release


@pytest.mark.parametrize("banner, warns", [(100300, False), (101600, True), (8502, True)])
def test_build_script_passes_the_arguments_and_warns_on_another_tensorrt(tmp_path, banner, warns):
    _fake_trtexec(tmp_path / "bin", banner)
    result, release = _run_script(tmp_path, [tmp_path / "bin"])
    assert result.returncode == 0, result.stderr
    expected = shlex.split(trtexec_command("model.onnx", "model.engine", SPEC))[1:]
    assert (release / "args.txt").read_text().splitlines() == expected
    assert ("made for TensorRT 10.3" in result.stderr) == warns
    if banner == 8502:
        assert "TensorRT 8.5" in result.stderr


def test_build_script_says_where_trtexec_is_when_it_is_missing(tmp_path):
    result, _ = _run_script(tmp_path, [])
    assert result.returncode == 1
    assert "trtexec not found" in result.stderr and "/usr/src/tensorrt/bin" in result.stderr


def test_unavailable_without_tensorrt(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` raise ImportError
    reason = tensorrt_engine.unavailable_reason()
    assert reason and "tensorrt" in reason and "pip install tensorrt" in reason


def test_unavailable_without_a_gpu(monkeypatch):
    import torch

    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "no CUDA GPU" in tensorrt_engine.unavailable_reason()


def test_layer_precisions_from_the_engine_inspector_json():
    def tensor(fmt):
        return {"Name": "t", "Location": "Device", "Dimensions": [1, 4, 8, 8], "Format/Datatype": fmt}

    engine_json = json.dumps({"Layers": [
        {"Name": "conv", "LayerType": "CaskConvolution",
         "Inputs": [tensor("Channel major INT8 format where channel % 16 == 0")],
         "Outputs": [tensor("Channel major FP16 format where channel % 8 == 0")]},
        {"Name": "reformat", "LayerType": "Reformat", "Inputs": [tensor("Row major linear FP32")], "Outputs": []},
        {"Name": "const", "LayerType": "Constant", "Inputs": [], "Outputs": [tensor("Half")]},
        {"Name": "odd", "LayerType": "NoOp", "Inputs": [tensor("Unknown format")], "Outputs": []},
    ], "Bindings": ["x", "y"]})
    assert layer_precisions(engine_json) == {"conv": "int8", "reformat": "fp32", "const": "fp16", "odd": "NoOp"}
    assert layer_precisions(json.dumps({"Layers": ["a", "b"]})) == {"a": "unknown", "b": "unknown"}


def _tiny_onnx(path):
    import torch

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU()).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, (torch.randn(2, 1, 8, 8),), str(path), dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, opset_version=17)
    return path


@pytest.mark.gpu
def test_builds_and_times_a_tiny_engine(tmp_path):
    pytest.importorskip("tensorrt")
    spec = EngineSpec({"x": (1, 8, 8)}, (1, 4), int8=False, fp16=True, workspace_mb=256)
    onnx_path = _tiny_onnx(tmp_path / "tiny.onnx")
    engine_path, cache = tmp_path / "tiny.engine", tmp_path / "timing.cache"
    built = tensorrt_engine.build_engine(onnx_path, engine_path, spec, timing_cache=cache)
    assert engine_path.stat().st_size > 0 and cache.stat().st_size > 0
    assert built["layers"] and sum(built["precision_counts"].values()) == len(built["layers"])
    assert built["build_seconds"] > 0 and built["tensorrt_version"] and built["device"]
    tensorrt_engine.build_engine(onnx_path, engine_path, spec, timing_cache=cache)  # reuses the cache it wrote

    timed = tensorrt_engine.time_engine(engine_path, spec, warmup=2, runs=5)
    assert set(timed["batches"]) == {"1", "4"}
    stats = timed["batches"]["4"]
    assert stats["runs"] == 5 and stats["warmup"] == 2 and 0 < stats["min_ms"] <= stats["median_ms"] <= stats["p90_ms"]
    assert stats["per_sample_ms"] == pytest.approx(stats["median_ms"] / 4)
    assert timed["device"] == built["device"] and timed["tensorrt_version"] == built["tensorrt_version"]


@pytest.mark.gpu
def test_unparsable_onnx_is_one_compressor_error(tmp_path):
    pytest.importorskip("tensorrt")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(CompressorError, match="TensorRT cannot"):
        tensorrt_engine.build_engine(bad, tmp_path / "bad.engine", EngineSpec({"x": (1, 8, 8)}, (1,), False, True, 64))
