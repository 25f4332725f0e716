"""Runs under torchrun (2 processes on CPU, gloo): distillation and the sensitivity sweep match one process,
ranks that disagree stop at once, and a run that dies on one rank leaves the previous release as it was."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from compressor.testing.models import write_model_folder

pytestmark = pytest.mark.slow

QUICK = ["--set", "quality.fid=off", "--set", "quality.samples=64", "--set", "target.benchmark.runs=3",
         "--set", "target.benchmark.warmup=1", "--set", "seed=1"]
# A fresh student distilled from the tiny generator: the shared training loop under test.
DISTILL = {"name": "distill-test", "description": "distill a fresh student", "budgets": {}, "stages": [
    {"kind": "distill", "student": "compressor.testing.models:TinyGenerator", "steps": 60, "batch": 32,
     "check_every": 20, "check_samples": 64, "patience": None},
]}
# Rank 1 of a launch runs this instead of the CLI: `mode` says how it differs from rank 0.
RANK_WRAPPER = """
import os, sys
from compressor import training
from compressor.cli import main
mode = sys.argv.pop(1)
if os.environ["RANK"] == "1" and mode == "other-config":
    sys.argv += ["--set", "seed=7"]
if os.environ["RANK"] == "1" and mode == "dies":
    def dies(*args, **kwargs):
        raise SystemExit("rank 1 lost")
    training.train = dies
sys.argv[0] = "compressor"
main()
"""


def _torchrun(args: list[str], cwd: Path, cache: Path, script: list[str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COMPRESSOR_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               *(script or ["-m", "compressor"]), *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _one_process(args: list[str], cwd: Path, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COMPRESSOR_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "compressor", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def _distill_metrics(release: Path) -> dict:
    manifest = json.loads((release / "cpu-x86" / "manifest.json").read_text())
    return next(stage["metrics"] for stage in manifest["stages"] if stage["name"] == "distill")


@pytest.fixture
def model_folder(tmp_path) -> Path:
    folder = write_model_folder(tmp_path / "gen")
    (tmp_path / "distill.yaml").write_text(yaml.safe_dump(DISTILL))
    return folder


def test_distillation_on_two_processes_matches_one(model_folder, tmp_path):
    args = ["run", "gen", "--target", "cpu", "--profile", "distill.yaml", *QUICK]
    two = _torchrun([*args, "--out", "two"], tmp_path, tmp_path / "cache2")
    assert two.returncode == 0, two.stderr[-3000:]
    one = _one_process([*args, "--out", "one"], tmp_path, tmp_path / "cache1")
    assert one.returncode == 0, one.stderr[-3000:]
    first, second = _distill_metrics(tmp_path / "one"), _distill_metrics(tmp_path / "two")
    assert first["psnr_db_after"] > first["psnr_db_before"] + 5  # it really trained
    # The README's tolerance: the same PSNR within 0.05 dB (only the order of float sums differs).
    assert second["psnr_db_after"] == pytest.approx(first["psnr_db_after"], abs=0.05)
    assert second["loss_last"] == pytest.approx(first["loss_last"], rel=1e-3)
    assert two.stdout.count("release: two/cpu-x86") == 1  # rank 0 alone prints and writes
    assert sorted(path.name for path in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


def test_sensitivity_sweep_on_two_processes_matches_one(model_folder, tmp_path):
    args = ["sensitivity", "gen", "--ratios", "0.5", "--samples", "32"]
    two = _torchrun([*args, "--out", "two"], tmp_path, tmp_path / "cache2")
    assert two.returncode == 0, two.stderr[-3000:]
    one = _one_process([*args, "--out", "one"], tmp_path, tmp_path / "cache1")
    assert one.returncode == 0, one.stderr[-3000:]
    assert "cached" not in one.stdout.splitlines()[-1]  # measured again, not read from the other run's cache
    first, second = (json.loads((tmp_path / out / "sensitivity.json").read_text()) for out in ("one", "two"))
    assert first["precision"] and first["precision"].keys() == second["precision"].keys()
    for layer, rows in first["precision"].items():
        for precision, row in rows.items():
            assert second["precision"][layer][precision]["psnr_db"] == pytest.approx(row["psnr_db"], abs=1e-6)
    assert first["blocks"].keys() == second["blocks"].keys() and first["channels"].keys() == second["channels"].keys()


def test_ranks_launched_with_different_configs_stop_at_once(model_folder, tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(RANK_WRAPPER)
    result = _torchrun(["other-config", "run", "gen", "--target", "cpu", "--out", "rel", *QUICK], tmp_path, tmp_path / "c",
                       script=[str(script)])
    assert result.returncode != 0
    assert "error: ranks disagree on the resolved config: rank 0 has" in result.stderr
    assert not (tmp_path / "rel" / "cpu-x86").exists()


def test_a_run_that_dies_on_one_rank_leaves_the_previous_release_alone(model_folder, tmp_path):
    args = ["run", "gen", "--target", "cpu", "--profile", "distill.yaml", "--out", "rel", *QUICK]
    good = _one_process(args, tmp_path, tmp_path / "c")
    assert good.returncode == 0, good.stderr[-3000:]
    manifest = (tmp_path / "rel" / "cpu-x86" / "manifest.json").read_bytes()
    script = tmp_path / "rank.py"
    script.write_text(RANK_WRAPPER)
    dead = _torchrun(["dies", *args], tmp_path, tmp_path / "c", script=[str(script)])
    assert dead.returncode != 0
    assert (tmp_path / "rel" / "cpu-x86" / "manifest.json").read_bytes() == manifest  # the good release, untouched
    assert [path.name for path in (tmp_path / "rel").iterdir() if "partial" in path.name] == []
