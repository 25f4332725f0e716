"""Quality in a run (paired metrics, FD-surrogate, FID through the real code path with stand-in weights),
budgets (exit 3 with the release written), `compressor gate` reproducing the verdict from the manifest
alone, and `compressor fid-stats`."""

from __future__ import annotations

import json
import sys
from xml.etree import ElementTree

import numpy as np
import pytest

from compressor.cli import main
from compressor.testing.fake_inception import write_fake_inception
from tests.integration.test_cli import FAST, cli


def _one_line_error(err: str) -> str:
    """The last line is the one error line (warnings about the small sample may come before it)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and sum(line.startswith("error: ") for line in lines) == 1, err
    return lines[-1]


QUICK = [*FAST, "--set", "quality.samples=24", "--set", "quality.batch=12"]


@pytest.fixture(scope="module")
def over_budget(tmp_path_factory):
    """One run, through the CLI, with an impossible size budget, a generous PSNR budget and FID off."""
    from compressor.testing.models import write_model_folder

    tmp = tmp_path_factory.mktemp("over-budget")
    folder = write_model_folder(tmp / "tiny-generator", "generator")
    args = ["run", folder, "--out", tmp / "out", *QUICK, "--set", "quality.fid=off",
            "--set", "budgets.size_mb.max=0.0001", "--set", "budgets.psnr.min=10"]
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(sys, "argv", ["compressor", *map(str, args)])
        with pytest.raises(SystemExit) as info:
            main()
    return info.value.code, tmp / "out" / "cpu-x86"


def test_a_failed_budget_exits_3_and_still_writes_the_release(over_budget):
    code, release = over_budget
    assert code == 3
    manifest = json.loads((release / "manifest.json").read_text())
    assert manifest["status"] == "complete" and (release / "model.onnx").is_file()
    assert manifest["verdict"] == "fail" and manifest["started_at"] <= manifest["finished_at"] and (release / "report.html").is_file()
    size, psnr = manifest["budgets"]["size_mb"], manifest["budgets"]["psnr"]
    assert size["ok"] is False and size["limit"] == 0.0001 and size["value"] == manifest["artifacts"]["model.onnx"]["bytes"] / 1e6
    assert psnr["ok"] is True and psnr["value"] == manifest["artifacts"]["model.onnx"]["quality"]["psnr_db"]
    report = (release / "report.md").read_text()
    assert "FAILED: size_mb" in report and "| size_mb |" in report


def test_the_failing_budget_is_named_on_one_line(capsys, monkeypatch, tmp_path, generator_folder):
    rc, _, err = cli(capsys, monkeypatch, "run", generator_folder, "--out", tmp_path, *QUICK,
                     "--set", "budgets.latency_ms.max=0.000001", "--set", "budgets.latency_ms.batch=16")
    assert rc == 3
    line = _one_line_error(err)
    assert "budget failed: latency_ms" in line and "release is written" in line


def test_gate_reproduces_the_verdict_from_the_manifest_alone(over_budget, capsys, monkeypatch, tmp_path):
    _, release = over_budget
    junit, summary = tmp_path / "budgets.xml", tmp_path / "summary.md"
    for path in release.glob("*.onnx"):  # nothing is recomputed: the artifacts are not even needed
        path.rename(tmp_path / path.name)
    rc, out, err = cli(capsys, monkeypatch, "gate", release, "--junit", junit, "--summary", summary)
    assert rc == 3 and "budget failed: size_mb" in _one_line_error(err)
    assert "FAIL size_mb" in out and "pass psnr" in out
    suite = ElementTree.parse(junit).getroot()
    assert (suite.get("tests"), suite.get("failures")) == ("2", "1")
    failed = [case.get("name") for case in suite.iter("testcase") if case.find("failure") is not None]
    assert failed == ["size_mb"]
    assert "compressor gate: FAILED" in summary.read_text() and "| size_mb |" in summary.read_text()


def test_gate_with_a_looser_budget_passes(over_budget, capsys, monkeypatch):
    _, release = over_budget
    rc, out, _ = cli(capsys, monkeypatch, "gate", release / "manifest.json", "--set", "budgets.size_mb.max=100")
    assert rc == 0 and "pass size_mb" in out


@pytest.mark.parametrize(
    "sets,code,expected",
    [
        (["budgets.fid.max_delta=1"], 1, "the release has no fid value (off in the profile"),
        (["budgets.latency_ms.max=1", "budgets.latency_ms.batch=4"], 1, "batch 4 was not timed"),
        (["quality.samples=5"], 2, "gate only takes budgets"),
        (["budgets.size_mb.most=1"], 2, "budget size_mb has no field 'most'; its fields: max"),
    ],
)
def test_gate_bad_input(over_budget, capsys, monkeypatch, sets, code, expected):
    _, release = over_budget
    rc, _, err = cli(capsys, monkeypatch, "gate", release, *[arg for item in sets for arg in ("--set", item)])
    assert rc == code and expected in _one_line_error(err)


def test_run_records_paired_metrics_fd_surrogate_gallery_and_why_no_fid(over_budget):
    _, release = over_budget
    manifest = json.loads((release / "manifest.json").read_text())
    quality = manifest["artifacts"]["model.onnx"]["quality"]
    assert quality["samples"] == 24 and 20 < quality["psnr_db"] < 80 and 0.5 < quality["ssim"] < 1
    surrogate = quality["fd_surrogate"]
    assert surrogate["delta"] == pytest.approx(surrogate["value"] - surrogate["reference_model_score"])
    assert "off in the profile" in quality["fid"]["reason"] and "value" not in quality["fid"]
    assert manifest["quality_reference"]["fd_surrogate"]["extractor"] == "fd-surrogate"
    assert (release / "gallery.png").read_bytes()[:4] == b"\x89PNG"
    report = (release / "report.md").read_text()
    assert "FD-surrogate" in report and "FID not computed" in report and "![reference vs model.onnx](gallery.png)" in report


@pytest.mark.parametrize("asks_for_fid", [["--set", "budgets.fid.max_delta=5"], ["--fid-stats", "ref.npz"]])
def test_asking_for_fid_without_weights_fails_before_any_work(capsys, monkeypatch, tmp_path, generator_folder, asks_for_fid):
    rc, _, err = cli(capsys, monkeypatch, "run", generator_folder, "--out", tmp_path, *QUICK, *asks_for_fid)
    assert rc == 1 and "--fid-weights" in _one_line_error(err)
    assert not (tmp_path / "cpu-x86").exists()


def test_fid_through_stats_file_and_refusal_of_other_weights(capsys, monkeypatch, tmp_path, generator_folder):
    """The whole FID path (lookup, TorchScript load, resize, features, stats file, Frechet distance, KID,
    sha256 check) with stand-in weights that cost milliseconds."""
    weights = write_fake_inception(tmp_path / "weights.pt")
    stats = tmp_path / "ref.npz"
    rc, out, _ = cli(capsys, monkeypatch, "fid-stats", generator_folder, "--out", stats, "--fid-weights", weights, "--samples", 24)
    assert rc == 0 and "24 images, inception-v3" in out
    rc, _, _ = cli(capsys, monkeypatch, "run", generator_folder, "--out", tmp_path / "a", *QUICK,
                   "--fid-weights", weights, "--fid-stats", stats, "--set", "budgets.fid.max_delta=1000")
    assert rc == 0
    manifest = json.loads((tmp_path / "a" / "cpu-x86" / "manifest.json").read_text())
    fid = manifest["artifacts"]["model.onnx"]["quality"]["fid"]
    assert fid["value"] > 0 and "kid" not in fid  # a stats file has no features, so no KID
    assert manifest["budgets"]["fid"]["value"] == pytest.approx(fid["delta"])
    assert manifest["quality_reference"]["fid"]["reference_set"].startswith(f"statistics file {stats}")

    other = write_fake_inception(tmp_path / "other.pt", seed=1)
    rc, _, err = cli(capsys, monkeypatch, "run", generator_folder, "--out", tmp_path / "b", *QUICK,
                     "--fid-weights", other, "--fid-stats", stats)
    assert rc == 1 and "made with another extractor" in _one_line_error(err)
    assert not (tmp_path / "b" / "cpu-x86").exists()


def test_fid_stats_from_real_images(capsys, monkeypatch, tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(12, 16, 16), dtype=np.uint8)
    np.savez(tmp_path / "real.npz", images=images)
    rc, out, err = cli(capsys, monkeypatch, "fid-stats", tmp_path / "real.npz", "--out", tmp_path / "s.npz", "--extractor", "fd-surrogate")
    assert rc == 0 and "12 images, fd-surrogate" in out
    assert "use at least 129 images" in err  # 12 images for 128-d features: singular covariance, said so
    from compressor.evaluate.frechet import load_stats

    assert load_stats(tmp_path / "s.npz").count == 12


def test_fid_stats_and_runs_share_the_reference_cache(capsys, monkeypatch, tmp_path, generator_folder):
    """fid-stats on a model fills the cache a run reads, a rerun generates neither reference set again, and a
    model whose code changed (same files hashed, other outputs) does not find the old model's features."""
    monkeypatch.setenv("COMPRESSOR_CACHE", str(tmp_path / "cache"))
    rc, out, _ = cli(capsys, monkeypatch, "fid-stats", generator_folder, "--out", tmp_path / "s.npz", "--extractor",
                     "fd-surrogate", "--samples", "24")
    assert rc == 0 and "from the cache" not in out

    def reference_cached(out_dir) -> dict:
        rc, _, _ = cli(capsys, monkeypatch, "run", generator_folder, "--out", out_dir, *QUICK, "--set", "quality.fid=off")
        assert rc == 0
        manifest = json.loads((out_dir / "cpu-x86" / "manifest.json").read_text())
        return manifest["quality_reference"]["fd_surrogate"]["reference_features_cached"]

    assert reference_cached(tmp_path / "a") == {"own_samples": True, "outputs": False}  # fid-stats made the first set
    assert reference_cached(tmp_path / "b") == {"own_samples": True, "outputs": True}
    rc, out, _ = cli(capsys, monkeypatch, "fid-stats", generator_folder, "--out", tmp_path / "again.npz", "--extractor",
                     "fd-surrogate", "--samples", "24")
    assert rc == 0 and "from the cache" in out

    import compressor.evaluate.features as features

    real_probe = features.output_probe
    monkeypatch.setattr(features, "output_probe", lambda sampler, call: real_probe(sampler, call) + "-changed-code")
    monkeypatch.setattr("compressor.evaluate.quality.output_probe", features.output_probe)
    assert reference_cached(tmp_path / "c") == {"own_samples": False, "outputs": False}
