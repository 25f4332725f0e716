"""End to end on a tiny model: the release holds a checked, timed ONNX file and a complete manifest;
same seed, same bytes; a failed or interrupted run leaves the previous release untouched."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from compressor import api
from compressor.errors import CheckpointError, ParityError
from compressor.runtimes.onnxruntime import OnnxRuntime
from compressor.testing.ort_ops import ops_ort_runs

FAST = ("target.benchmark.runs=3", "target.benchmark.warmup=1", "stages.ptq.samples=32")


def _run(folder, out, *sets, seed=0):
    return api.run(api.RunConfig(checkpoint=folder, target="cpu", out=out, sets=FAST + sets, seed=seed))


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    from compressor.testing.models import write_model_folder

    root = tmp_path_factory.mktemp("run")
    folder = write_model_folder(root / "tiny-generator")
    result = _run(folder, root / "out")
    return folder, result


def test_release_holds_model_manifest_and_report(release):
    _, result = release
    assert result.release_dir.name == "cpu-x86"
    assert sorted(p.name for p in result.release_dir.iterdir()) == [
        "gallery.png", "manifest.json", "model.fp32.onnx", "model.onnx", "report.html", "report.md"
    ]
    assert sorted(p.name for p in result.release_dir.parent.iterdir()) == ["cpu-x86"]


def test_manifest_records_versions_input_config_stages_and_artifact(release):
    folder, result = release
    m = result.manifest
    assert m["status"] == "complete"
    assert {"torch", "onnx", "onnxruntime", "python"} <= set(m["versions"])
    assert m["input"]["format"] == "folder" and len(m["input"]["sha256"]) == 64
    assert len(m["config_sha256"]) == 64 and m["config"]["target"]["name"] == "cpu-x86"
    assert [s["name"] for s in m["stages"]] == [
        "load", "rewrite", "ptq", "export", "quality reference",
        "parity model.fp32.onnx", "benchmark model.fp32.onnx", "quality model.fp32.onnx",
        "parity model.onnx", "benchmark model.onnx", "quality model.onnx",
    ]
    for name, artifact in m["artifacts"].items():
        onnx_bytes = (result.release_dir / name).read_bytes()
        assert artifact["sha256"] == hashlib.sha256(onnx_bytes).hexdigest()
        assert sorted(artifact["latency"]["batches"]) == ["1", "16"]
        assert all(b["median_ms"] > 0 and b["runs"] == 3 for b in artifact["latency"]["batches"].values())
    fp32, int8 = m["artifacts"]["model.fp32.onnx"], m["artifacts"]["model.onnx"]
    assert fp32["precision"] == "fp32" and fp32["parity"]["ok"] and fp32["parity"]["max_abs_error"] < 1e-4
    assert int8["precision"] == "int8" and int8["parity"]["ok"]
    assert int8["parity"]["psnr_db"] >= int8["parity"]["min_psnr"] == 30.0


def test_report_shows_parity_and_latency(release):
    _, result = release
    report = result.report.read_text()
    assert "## Latency" in report and "| `model.onnx` | 16 |" in report
    assert "pass: PSNR" in report and "(required 30.0)" in report


def test_same_seed_gives_the_same_artifact_bytes(release, tmp_path):
    folder, first = release
    second = _run(folder, tmp_path)
    assert second.manifest["artifacts"]["model.onnx"]["sha256"] == first.manifest["artifacts"]["model.onnx"]["sha256"]


def _copy_release(release, tmp_path):
    _, result = release
    out = tmp_path / "out"
    shutil.copytree(result.release_dir, out / "cpu-x86")
    return out, _snapshot(out / "cpu-x86")


def test_interrupted_run_leaves_previous_release_untouched(release, tmp_path, monkeypatch):
    out, before = _copy_release(release, tmp_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # what Ctrl-C raises in the middle of a step

    monkeypatch.setattr(OnnxRuntime, "benchmark", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run(release[0], out)
    assert _snapshot(out / "cpu-x86") == before
    assert sorted(p.name for p in out.iterdir()) == ["cpu-x86"]


def test_parity_failure_fails_the_run_and_keeps_the_old_release(release, tmp_path):
    out, before = _copy_release(release, tmp_path)
    with pytest.raises(ParityError, match="differs from the torch model"):
        _run(release[0], out, "target.parity.atol=0", "target.parity.rtol=0")
    assert _snapshot(out / "cpu-x86") == before
    assert sorted(p.name for p in out.iterdir()) == ["cpu-x86"]


def test_card_that_does_not_fit_the_model_is_caught_before_any_work(release, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(release[0], folder)
    card = folder / "compressor.yaml"
    card.write_text(card.read_text().replace("- 8", "- 5"))  # latent size the model does not take
    with pytest.raises(CheckpointError, match="fix 'inputs' in the model card"):
        _run(folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_decoder_family_runs_too(decoder_folder, tmp_path):
    result = _run(decoder_folder, tmp_path)
    assert result.manifest["artifacts"]["model.onnx"]["parity"]["ok"]
    rewrite = result.manifest["stages"][1]
    assert rewrite["state"]["applied"]["fold_batchnorm"] == []  # GroupNorm is not folded
    assert rewrite["state"]["applied"]["upsample_conv_to_phases"] == ["blocks.1", "blocks.5"]
    ops = ops_ort_runs(result.release_dir / "model.onnx")
    assert "Resize" not in ops and "Conv" not in ops and ops.count("QLinearConv") == 5  # 4 phases + the head's block conv
    # GroupNorm's affine and SiLU run in float after the float-only InstanceNormalization, quantized once at the end
    assert "InstanceNormalization" in ops and not {"QLinearMul", "QLinearAdd", "QLinearSigmoid"} & set(ops)


@pytest.mark.slow
def test_same_model_from_another_folder_gives_the_same_bytes(tmp_path):
    """Exporters like to record source paths; an artifact must not depend on where the checkpoint lies.
    The demo folder defines its class in its own model.py, as users do; with no rewrite, the user's own
    module is what gets exported, with its source locations. Separate processes, as two CI runs would be."""
    demo = Path(__file__).resolve().parents[2] / "examples" / "digits-vae"
    profile = tmp_path / "export-only.yaml"
    profile.write_text("name: export-only\nstages:\n  - {kind: rewrite, passes: []}\nquality: {fid: off, samples: 32}\n")
    digests = []
    for place in ("a", "b/deeper"):
        folder = shutil.copytree(demo, tmp_path / place / "model")
        out = tmp_path / place / "out"
        command = [sys.executable, "-m", "compressor", "run", str(folder), "--out", str(out), "--profile", str(profile)]
        subprocess.run(command + [f"--set={item}" for item in FAST[:2]], check=True, capture_output=True)
        digests.append(hashlib.sha256((out / "cpu-x86" / "model.onnx").read_bytes()).hexdigest())
    assert digests[0] == digests[1]
