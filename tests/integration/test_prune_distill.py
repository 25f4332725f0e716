"""The smallest profile end to end on the DCGAN demo, with few steps: prune to a MACs budget, distil, int8.
The release keeps the user's architecture as its baseline and ships the pruned torch student."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from compressor import api
from compressor.checkpoint import load_checkpoint
from compressor.errors import ConfigError, UsageError
from compressor.pruning.channels import rebuild

DEMO = Path(__file__).resolve().parents[2] / "examples" / "digits-dcgan"
FAST = ("stages.distill.steps=20", "stages.distill.batch=16", "stages.distill.check_every=10", "stages.distill.check_samples=32",
        "stages.prune.samples=16", "quality.samples=64", "quality.fid=off", "budgets.fid=null", "target.benchmark.runs=3",
        "target.benchmark.warmup=1")


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    out = tmp_path_factory.mktemp("smallest")
    return api.run(api.RunConfig(checkpoint=DEMO, target="cpu", profile="smallest", out=out, sets=FAST))


def test_the_release_is_int8_under_the_macs_budget_with_the_original_as_baseline(release):
    prune = next(stage for stage in release.manifest["stages"] if stage["name"] == "prune")
    assert prune["metrics"]["macs_fraction"] <= 0.25
    artifacts = release.manifest["artifacts"]
    assert artifacts["model.onnx"]["precision"] == "int8" and artifacts["model.fp32.onnx"]["role"] == "baseline"
    # the baseline is the user's architecture (its export is several times the pruned model's fp32 size)
    assert artifacts["model.fp32.onnx"]["bytes"] > 4 * artifacts["model.onnx"]["bytes"]
    assert artifacts["model.fp32.onnx"]["parity"]["max_abs_error"] < 1e-4  # vs the user's model
    distill = next(stage for stage in release.manifest["stages"] if stage["name"] == "distill")
    assert distill["metrics"]["psnr_db_after"] > distill["metrics"]["psnr_db_before"]


def test_the_report_shows_the_sensitivity_table_the_cut_came_from(release):
    report = release.report.read_text()
    assert "## Sensitivity (prune stage)" in report and "![sensitivity heatmap](sensitivity.png)" in report
    assert "| `blocks.2` | 128 |" in report  # the demo's widest convolution group, with a cell per ratio
    assert (release.release_dir / "sensitivity.png").read_bytes()[:4] == b"\x89PNG"
    assert "MACs 0." in report and "PSNR vs the original" in report  # the prune and distill steps' notes


def test_the_shipped_student_rebuilds_from_the_users_model(release):
    record = json.loads((release.release_dir / "student.json").read_text())
    assert record["weights_from"] == "distill" and set(release.manifest["release_files"]) >= {"student.json", "student.safetensors"}
    model = load_checkpoint(DEMO).model
    example = (torch.randn(2, 64),)
    rebuilt = rebuild(model, example, record["architecture"])
    rebuilt.load_state_dict(load_file(str(release.release_dir / "student.safetensors")))
    assert {name: list(t.shape) for name, t in rebuilt.state_dict().items()} == record["shapes"]


def test_a_budget_no_allocation_meets_is_refused_with_the_closest_figure(tmp_path):
    with pytest.raises(ConfigError, match=r"raise stages.prune.macs to at least 0\.\d\d"):
        api.run(api.RunConfig(checkpoint=DEMO, target="cpu", profile="smallest", out=tmp_path, sets=(*FAST, "stages.prune.macs=0.001")))
    assert not (tmp_path / "cpu-x86").exists()  # nothing half written


def test_resume_without_a_checkpoint_says_so(tmp_path):
    with pytest.raises(UsageError, match="--resume: no checkpoint at"):
        api.run(api.RunConfig(checkpoint=DEMO, target="cpu", profile="smallest", out=tmp_path, sets=FAST, resume=True))


def test_a_student_whose_outputs_differ_from_the_teachers_is_refused(tmp_path, monkeypatch):
    (tmp_path / "small_student.py").write_text(
        "from compressor.testing.models import TinyGenerator\n\ndef make():\n    return TinyGenerator(latent_dim=64)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    profile = tmp_path / "student.yaml"
    profile.write_text("name: student\nstages:\n  - {kind: distill, student: 'small_student:make', steps: 5}\n")
    with pytest.raises(ConfigError, match=r"distill.student: .* outputs shapes \[\(2, 1, 16, 16\)\], the teacher \[\(2, 1, 32, 32\)\]"):
        api.run(api.RunConfig(checkpoint=DEMO, target="cpu", profile=str(profile), out=tmp_path / "out"))


def test_a_sensitivity_stage_puts_the_table_in_the_release_and_leaves_the_model_alone(tmp_path, generator_folder):
    profile = tmp_path / "measure.yaml"
    profile.write_text("name: measure\nstages:\n  - {kind: sensitivity, ratios: [0.5], samples: 16}\n  - {kind: rewrite}\n")
    result = api.run(api.RunConfig(checkpoint=generator_folder, target="cpu", profile=str(profile), out=tmp_path / "out",
                                   sets=("target.benchmark.runs=3", "target.benchmark.warmup=1")))
    stage = next(stage for stage in result.manifest["stages"] if stage["name"] == "sensitivity")
    assert set(stage["metrics"]["sensitivity"]["precision"]) == {"project", "blocks.2", "blocks.5"}
    assert (result.release_dir / "sensitivity.png").is_file() and "## Sensitivity (sensitivity stage)" in result.report.read_text()
    artifacts = result.manifest["artifacts"].values()
    assert artifacts and all(a["parity"]["max_abs_error"] < 1e-4 for a in artifacts)  # fp32, and the model passed unchanged


def _magnitude_release(tmp_path, folder, target: str, stage: dict, quantize: bool):
    stages = [{"kind": "prune", "method": "magnitude", **stage}, {"kind": "rewrite"}] + ([{"kind": "ptq", "samples": 32}] if quantize else [])
    profile = tmp_path / "sparse.yaml"
    profile.write_text(json.dumps({"name": "sparse", "stages": stages}))
    return api.run(api.RunConfig(checkpoint=folder, target=target, profile=str(profile), out=tmp_path / "out",
                                 sets=("target.benchmark.runs=3", "target.benchmark.warmup=1", "budgets.latency_vs_baseline=null")))


def test_magnitude_pruning_keeps_the_original_as_baseline_and_says_what_zeros_buy_on_ort(tmp_path, generator_folder):
    result = _magnitude_release(tmp_path, generator_folder, "cpu",
                                {"sparsity": 0.5, "iterations": 2, "fine_tune_steps": 5, "batch": 8}, quantize=True)
    prune = next(stage for stage in result.manifest["stages"] if stage["name"] == "prune")["metrics"]
    assert prune["sparsity"] == pytest.approx(0.5, abs=0.02) and len(prune["steps"]) == 2
    assert prune["weights_zlib_bytes_after"] < prune["weights_zlib_bytes_before"]
    assert result.manifest["artifacts"]["model.fp32.onnx"]["parity"]["max_abs_error"] < 1e-4  # the user's model
    assert "ONNX Runtime's CPU kernels are dense" in result.report.read_text()
    record = json.loads((result.release_dir / "student.json").read_text())
    assert record["architecture"] is None and record["weights_from"] == "prune"  # the shapes are the user's


def test_two_four_weights_make_the_tensorrt_build_kit_ask_for_sparsity(tmp_path, generator_folder):
    result = _magnitude_release(tmp_path, generator_folder, "gpu", {"pattern": "2:4"}, quantize=False)
    final = next(record for record in result.manifest["artifacts"].values() if record["role"] == "final")
    assert final["details"]["sparse_2_4_layers"] == ["project"]  # the ConvTransposes stay dense (not conv/linear)
    assert "--sparsity=enable" in (result.release_dir / "build_engine.sh").read_text()
    assert "sparse tensor cores" in result.report.read_text()


def test_a_latency_budget_is_met_by_measurement_on_the_targets_runtime(tmp_path):
    sets = (*FAST, "stages.prune.macs=null", "stages.prune.latency=0.7", "stages.distill.steps=0")
    result = api.run(api.RunConfig(checkpoint=DEMO, target="cpu", profile="smallest", out=tmp_path, sets=sets))
    prune = next(stage for stage in result.manifest["stages"] if stage["name"] == "prune")["metrics"]
    probes = prune["latency_probes"]
    assert probes and probes[-1]["latency_fraction"] <= 0.7 and prune["batch"] == 16  # it stops at the first that meets it
    assert all(later["macs_budget"] < earlier["macs_budget"] for earlier, later in zip(probes, probes[1:]))


def test_a_latency_budget_on_a_device_only_runtime_is_refused(tmp_path, generator_folder):
    profile = tmp_path / "latency.yaml"
    profile.write_text("name: latency\nstages:\n  - {kind: prune, latency: 0.5}\n  - {kind: rewrite}\n")
    with pytest.raises(ConfigError, match="runs only on the device; give stages.prune.macs instead"):
        api.run(api.RunConfig(checkpoint=generator_folder, target="gpu", profile=str(profile), out=tmp_path / "out"))
