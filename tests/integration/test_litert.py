"""LiteRT releases (`--target mobile`): a fully int8 `.tflite` of the DCGAN demo, checked and timed by the LiteRT
interpreter with XNNPACK; float input/output on request; layer rules and auto mode mapped onto the file's ops;
the run example and phone script in the release; every bad input refused in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from compressor import api, doctor
from compressor.errors import CompressorError, ConfigError
from compressor.modelcard import ModelCard
from compressor.runtimes import litert
from compressor.runtimes.litert import LiteRT

pytestmark = pytest.mark.skipif(LiteRT.unavailable_reason() is not None, reason="the [tflite] extra is not installed")

DEMO = Path(__file__).resolve().parents[2] / "examples" / "digits-dcgan"
FAST = ("quality.samples=64", "quality.fid=off", "target.benchmark.runs=20", "target.benchmark.warmup=2")


def _run(folder, out, *sets, target="mobile", **kwargs):
    return api.run(api.RunConfig(checkpoint=folder, target=target, out=out, sets=FAST + sets, **kwargs))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return _run(DEMO, tmp_path_factory.mktemp("mobile"))


def test_the_demo_becomes_a_fully_int8_tflite_a_quarter_of_its_fp32_size(demo):
    artifacts = demo.manifest["artifacts"]
    final, baseline = artifacts["model.tflite"], artifacts["model.fp32.tflite"]
    details = final["details"]
    assert final["precision"] == "int8" and details["ops_by_precision"]["float"] == {} and details["float_ops"] == []
    int8_ops = details["ops_by_precision"]["int8"]
    assert (int8_ops["TRANSPOSE_CONV"], int8_ops["CONV_2D"]) == (3, 1)  # projection, two layers; the head as a conv
    assert details["int8_weights"] == {"per_channel_symmetric": 4, "other": []} and details["conversions"] == 0
    assert {entry["dtype"] for entry in details["io"].values()} == {"int8"}
    assert final["bytes"] <= 0.27 * baseline["bytes"]
    assert final["parity"]["ok"] and final["parity"]["psnr_db"] >= 35
    assert final["quality"]["psnr_db"] >= 35


def test_latency_is_timed_at_batch_1_per_thread_count_and_labelled_as_this_host(demo):
    latency = demo.manifest["artifacts"]["model.tflite"]["latency"]
    assert list(latency["batches"]) == ["1"] and latency["threads"] == 1 and latency["delegate"] == "XNNPACK"
    assert latency["batches"]["1"]["median_ms"] > 0 and "not a phone" in latency["note"]
    assert demo.manifest["artifacts"]["model.tflite"]["latency_vs_fp32"]["batch"] == 1
    report = demo.report.read_text()
    assert "not a phone" in report and "## On the phone" in report and "## Ops of `model.tflite`" in report


def test_the_release_carries_a_run_example_and_a_phone_benchmark_that_work(demo):
    folder = demo.release_dir
    files = sorted(path.name for path in folder.iterdir())
    assert files == ["benchmark_model.sh", "gallery.png", "manifest.json", "model.fp32.tflite", "model.tflite",
                     "report.html", "report.md", "run_tflite.py"]
    ran = subprocess.run([sys.executable, "run_tflite.py"], cwd=folder, capture_output=True, text=True, check=True)
    assert ran.stdout.startswith("output_0 (1, 1, 32, 32)")
    script = folder / "benchmark_model.sh"
    subprocess.run(["sh", "-n", str(script)], check=True)
    assert "--graph=/data/local/tmp/model.tflite" in script.read_text() and "for threads in 1 4" in script.read_text()


def test_float_input_and_output_put_the_conversions_inside_the_model(generator_folder, tmp_path):
    result = _run(generator_folder, tmp_path, "target.runtime.io_dtype=float32")
    details = result.manifest["artifacts"]["model.tflite"]["details"]
    assert {entry["dtype"] for entry in details["io"].values()} == {"float32"} and details["conversions"] == 2
    assert details["ops_by_precision"]["float"] == {} and result.manifest["artifacts"]["model.tflite"]["parity"]["ok"]


def test_a_rule_keeps_its_layer_float_and_the_report_names_the_float_op(generator_folder, tmp_path):
    rules = 'stages.ptq.rules=[{"match": "blocks.2", "skip": true}]'  # the 16 -> 8 ConvTranspose
    result = _run(generator_folder, tmp_path, rules)
    final = result.manifest["artifacts"]["model.tflite"]
    assert final["precision"] == "mixed" and final["details"]["layers"]["blocks.2"]["precision"] == "fp32"
    assert [(op["op"], op["layer"]) for op in final["details"]["float_ops"]] == [("TRANSPOSE_CONV", "blocks.2")]
    assert "TRANSPOSE_CONV (layer `blocks.2`)" in result.report.read_text()


def test_auto_precision_measures_every_layer_through_the_tflite(tmp_path):
    from compressor.config import resolve
    from compressor.context import RunContext
    from compressor.runtimes import runtime_for
    from compressor.stages.ptq import PTQConfig
    from compressor.testing.models import TinyGenerator, randomized

    model = randomized(TinyGenerator())
    card = ModelCard.model_validate({"name": "tiny", "inputs": {"z": {"shape": [8]}}, "outputs": {"image": {"shape": [1, 16, 16], "range": [-1, 1]}}})
    ctx = RunContext.create(model, card, resolve("mobile"), tmp_path)
    # 99 dB is out of int8's reach on any CPU's kernels: auto mode must measure every layer and move each to float
    plan = PTQConfig(samples=64, auto_precision=True, min_psnr=99).run(model, ctx).plan
    (_, final) = runtime_for(ctx.config.target).export(model, card, plan, tmp_path)
    details = final.details
    assert set(details["sensitivity_psnr_db"]) == {"project", "blocks.2", "blocks.5"}
    assert all(entry["reason"].startswith("auto: most sensitive") for entry in details["layers"].values())
    assert {"TRANSPOSE_CONV", "FULLY_CONNECTED"} <= {op["op"] for op in details["float_ops"]}


@pytest.mark.parametrize("sets,expected", [
    (("target.benchmark.batch_sizes=[1, 16]",), "built for batch 1"),
    (("stages.ptq.method=entropy",), "ptq.method entropy is not available for LiteRT"),
])
def test_settings_litert_cannot_honour_are_refused_before_any_work(generator_folder, tmp_path, sets, expected):
    with pytest.raises(ConfigError, match=expected) as info:
        _run(generator_folder, tmp_path / "out", *sets)
    assert "\n" not in info.value.message and not (tmp_path / "out").exists()


def test_qat_is_refused_with_the_profile_to_use(generator_folder, tmp_path):
    with pytest.raises(ConfigError, match="qat stage has no LiteRT export yet") as info:
        _run(generator_folder, tmp_path, profile="qat")
    assert "--profile balanced" in info.value.message


def test_without_the_extra_the_run_and_doctor_say_how_to_install_it(generator_folder, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "litert_torch" else real(name, *a))
    with pytest.raises(CompressorError, match=r"litert-torch not installed; pip install 'compressor\[tflite\]'"):
        _run(generator_folder, tmp_path)
    checks = doctor.check_all()
    assert "compressor[tflite]" in checks["runtime litert"] and "compressor[tflite]" in checks["target mobile-arm"]


def test_a_quantizer_failure_is_one_line_naming_the_file_and_the_fix(generator_folder, tmp_path, monkeypatch):
    from litert_quantizer import quantizer

    def fail(self, *args, **kwargs):
        raise ValueError("Unsupported op: FOO\nmore detail")

    monkeypatch.setattr(quantizer.Quantizer, "quantize", fail)
    with pytest.raises(CompressorError) as info:
        _run(generator_folder, tmp_path)
    message = info.value.message
    assert "\n" not in message and "could not quantize it to int8: Unsupported op: FOO" in message and "skip: true" in message
    assert litert.FINAL not in {path.name for path in tmp_path.rglob("*")}


class _RepeatedBlocks(torch.nn.Module):
    """Blocks of one shape, as decoders repeat them: every block's conv is called `<block>.0`."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = torch.nn.Sequential(*(torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.ReLU())
                                            for _ in range(3)))
        self.head = torch.nn.Conv2d(4, 1, 1)

    def forward(self, x):
        return self.head(self.blocks(x))


def test_each_repeated_block_keeps_its_own_layer_name_in_the_tflite(tmp_path):
    import torch.fx as fx

    from compressor.runtimes.litert_convert import convert
    from compressor.runtimes.litert_graph import compute_layers, read_ops

    card = ModelCard.model_validate({"name": "blocks", "inputs": {"x": {"shape": [4, 8, 8]}}, "outputs": {"y": {"shape": [1, 8, 8]}}})
    for model in (_RepeatedBlocks().eval(), fx.symbolic_trace(_RepeatedBlocks().eval())):  # a GraphModule: what rewrites return
        converted = convert(model, card, tmp_path / "model.tflite")
        assert compute_layers(read_ops(converted.path, converted.scopes)) == ["blocks.0.0", "blocks.1.0", "blocks.2.0", "head"]


def test_thread_counts_beyond_this_hosts_cores_are_capped_and_say_so(generator_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(litert.os, "sched_getaffinity", lambda pid: {0})  # a 1-core host
    result = _run(generator_folder, tmp_path, "target.benchmark.threads=2")
    latency = result.manifest["artifacts"]["model.tflite"]["latency"]
    assert latency["threads"] == 1 and latency["by_threads"] == {} and latency["threads_capped"] == {"2": 1, "4": 1}


def test_a_pruned_and_distilled_model_ships_as_int8_beside_the_users_fp32_model(tmp_path):
    quick = ("stages.distill.steps=20", "stages.distill.batch=16", "stages.distill.check_every=10",
             "stages.distill.check_samples=32", "stages.prune.samples=16", "budgets.fid=null")
    result = _run(DEMO, tmp_path, *quick, profile="smallest")
    artifacts = result.manifest["artifacts"]
    baseline, final = artifacts["model.fp32.tflite"], artifacts["model.tflite"]
    assert baseline["bytes"] == pytest.approx(3.7e6, rel=0.05)  # the user's architecture, not the pruned one
    assert final["precision"] == "int8" and final["bytes"] < 0.15 * baseline["bytes"] and final["parity"]["ok"]
    assert "student.json" in result.manifest["release_files"]


def test_normalizations_can_run_as_a_float_island(decoder_folder, tmp_path):
    result = _run(decoder_folder, tmp_path, "target.runtime.normalizations=float")
    details = result.manifest["artifacts"]["model.tflite"]["details"]
    float_layers = {op["layer"] for op in details["float_ops"]}
    assert float_layers == {"blocks.2"} and {"MEAN", "RSQRT"} <= {op["op"] for op in details["float_ops"]}
    assert details["conversions"] >= 2 and details["ops_by_precision"]["int8"]["CONV_2D"] == 2


def test_the_output_head_can_stay_float(generator_folder, tmp_path):
    result = _run(generator_folder, tmp_path, "target.runtime.output_head=float")
    details = result.manifest["artifacts"]["model.tflite"]["details"]
    floats = {(op["op"], op["layer"]) for op in details["float_ops"]}
    assert {("CONV_2D", "blocks.5"), ("TANH", "blocks.6")} <= floats  # the head conv (pixel-shuffle form) and Tanh
    assert {layer for _, layer in floats} <= {"blocks.5", "blocks.6", "-"} and details["conversions"] >= 1
    assert details["layers"]["blocks.5"] == {"precision": "fp32", "reason": "output head (runtime.output_head: float)"}
    assert details["ops_by_precision"]["int8"]["TRANSPOSE_CONV"] == 2
