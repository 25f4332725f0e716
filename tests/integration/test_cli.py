"""The command line: exit codes (0 ok, 1 bad input, 2 usage), one-line errors, --dry-run writes nothing,
Ctrl-C during a real run leaves the previous release untouched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from compressor.cli import main

# The ratio budget: the tiny test models run in microseconds, where int8 vs fp32 is noise; these tests are not about it.
BENCH = ["--set", "target.benchmark.runs=3", "--set", "target.benchmark.warmup=1", "--set", "budgets.latency_vs_baseline=null"]
FAST = [*BENCH, "--set", "stages.ptq.samples=32"]


def cli(capsys, monkeypatch, *args):
    """Run `compressor ARGS` in-process; return (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["compressor", *map(str, args)])
    with pytest.raises(SystemExit) as info:
        main()
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def _one_line_error(err: str) -> str:
    """The error is one line, the last one; progress marks (✓ step) of steps that finished may precede it."""
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert all(line.startswith("✓ ") for line in lines[:-1]), err
    return errors[0]


@pytest.mark.parametrize(
    "args,code,expected",
    [
        (["run", "{tmp}/absent", "--target", "cpu"], 1, "no such file or folder"),
        (["run", "{model}", "--target", "pdp-11"], 2, "unknown target 'pdp-11'; known: cpu, cpu-x86"),
        (["run", "{model}", "--profile", "turbo"], 2, "unknown profile 'turbo'; known: balanced"),
        (["run", "{model}", "--set", "stages.rewrite.colour=red"], 2, "unknown key 'colour'"),
        (["run", "{model}", "--out", "{blocker}/out"], 1, "output folder cannot be written"),
        (["run", "{model}", "--set", "x=[unclosed"], 2, "the value is not valid YAML"),
        (["run", "{model}", "--set", "target.benchmark.batch_sizes=[0]"], 2, "greater than 0"),
        (["run", "{model}", "--set", "target.name=../../elsewhere"], 2, "target.name"),
        (["inspect", "{tmp}/absent.pt"], 1, "no such file or folder"),
        (["sensitivity", "{model}", "--ratios", "0.5,1"], 2, "strictly between 0 and 1"),
        (["sensitivity", "{model}", "--ratios", "half"], 2, "--ratios"),
        (["sensitivity", "{tmp}/absent"], 1, "no such file or folder"),
    ],
)
def test_bad_input_exits_with_one_line(capsys, monkeypatch, tmp_path, generator_folder, args, code, expected):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    args = [a.format(tmp=tmp_path, model=generator_folder, blocker=blocker) for a in args]
    rc, _, err = cli(capsys, monkeypatch, *args)
    assert rc == code
    assert expected in _one_line_error(err)


def test_unexpected_failure_is_still_one_line(capsys, monkeypatch, generator_folder):
    from compressor import api

    def broken(*args, **kwargs):
        raise RuntimeError("library exploded\nwith a long story")

    monkeypatch.setattr(api, "run", broken)
    rc, _, err = cli(capsys, monkeypatch, "run", generator_folder)
    assert rc == 1
    assert "unexpected RuntimeError: library exploded; rerun with --debug" in _one_line_error(err)


def test_calibration_file_of_the_wrong_shape(capsys, monkeypatch, tmp_path, generator_folder):
    import numpy as np

    data = tmp_path / "calib.npz"
    np.savez(data, z=np.zeros((32, 3), np.float32))
    rc, _, err = cli(capsys, monkeypatch, "run", generator_folder, "--out", tmp_path / "out", "--calibration", data, *FAST)
    assert rc == 1
    assert f"{data}: 'z' has samples of shape [3], the model takes [8]" in _one_line_error(err)
    assert "✓ export" not in err  # checked before any work
    assert not (tmp_path / "out" / "cpu-x86").exists()


def test_corrupt_checkpoint_via_cli(capsys, monkeypatch, tmp_path, generator_folder):
    weights = generator_folder / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    rc, _, err = cli(capsys, monkeypatch, "run", generator_folder, "--out", tmp_path / "out")
    assert rc == 1 and "corrupt or truncated" in _one_line_error(err)
    assert not (tmp_path / "out" / "cpu-x86").exists()


def test_dry_run_prints_plan_and_writes_nothing(capsys, monkeypatch, tmp_path, generator_folder):
    rc, out, _ = cli(capsys, monkeypatch, "run", generator_folder, "--out", tmp_path / "out", "--dry-run", *FAST)
    plan = json.loads(out)
    assert rc == 0
    assert plan["steps"] == [
        "load", "rewrite", "ptq", "export", "quality reference",
        "parity model.fp32.onnx", "benchmark model.fp32.onnx", "quality model.fp32.onnx",
        "parity model.onnx", "benchmark model.onnx", "quality model.onnx", "budgets", "report",
    ]
    assert plan["config"]["target"]["benchmark"]["runs"] == 3
    assert not (tmp_path / "out").exists()


def test_run_prints_where_release_and_report_are(capsys, monkeypatch, tmp_path, generator_folder):
    rc, out, _ = cli(capsys, monkeypatch, "run", generator_folder, "--out", tmp_path, *FAST)
    assert rc == 0
    assert f"release: {tmp_path / 'cpu-x86'}" in out and "report:" in out and "batch 16: median" in out


def test_sensitivity_prints_the_table_and_writes_json_and_heatmap(capsys, monkeypatch, tmp_path, generator_folder):
    # The tiny generator's forward views `project`'s output to a stored width, so cutting that group breaks it;
    # its other group has 8 channels, which TensorRT's multiple of 8 leaves whole.
    args = ("sensitivity", generator_folder, "--target", "gpu", "--out", tmp_path, "--ratios", "0.5", "--samples", "16")
    rc, out, _ = cli(capsys, monkeypatch, *args)
    table = json.loads((tmp_path / "sensitivity.json").read_text())
    assert rc == 0 and "cut 0.5" in out and "No group loses a channel at a 50% cut" in out
    assert table["not_prunable"]["project"].startswith("cutting it breaks the forward pass (RuntimeError")
    assert table["settings"]["precisions"] == ["int8", "fp16"] and "fp16" in out
    assert (tmp_path / "sensitivity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rc, out, _ = cli(capsys, monkeypatch, *args)
    assert rc == 0 and "measured (cached)" in out  # the second run reads the cache


def test_sensitivity_fid_needs_weights_and_names_the_fix(capsys, monkeypatch, tmp_path, generator_folder):
    from compressor.testing.fake_inception import write_fake_inception

    args = ("sensitivity", generator_folder, "--out", tmp_path, "--ratios", "0.5", "--samples", "16")
    rc, _, err = cli(capsys, monkeypatch, *args, "--fid")
    assert rc == 1 and "no Inception weights for FID found; pass --fid-weights PATH" in err
    rc, out, _ = cli(capsys, monkeypatch, *args, "--fid-weights", write_fake_inception(tmp_path / "inception.pt"))
    table = json.loads((tmp_path / "sensitivity.json").read_text())
    assert rc == 0 and ", FID " in out and all("fid" in row["int8"] for row in table["precision"].values())


def test_inspect_json(capsys, monkeypatch, generator_folder):
    rc, out, _ = cli(capsys, monkeypatch, "inspect", generator_folder, "--json")
    summary = json.loads(out)
    assert rc == 0 and summary["parameters"] > 0 and summary["layers"][0]["name"] == "project"


@pytest.mark.parametrize(
    "args,expected",
    [
        (["targets"], "cpu-x86 (alias cpu): onnxruntime"),
        (["targets", "show", "cpu"], '"kind": "onnxruntime"'),
        (["profiles"], "balanced: stages ['rewrite', 'ptq']"),
        (["profiles", "show", "balanced"], '"kind": "rewrite"'),
        (["doctor"], "ok  runtime onnxruntime"),
        (["targets", "schema"], '"runtime"'),
        (["profiles", "schema"], '"rewrite"'),
    ],
)
def test_listing_commands(capsys, monkeypatch, args, expected):
    rc, out, _ = cli(capsys, monkeypatch, *args)
    assert rc == 0 and expected in out


def test_importing_the_cli_stays_light():
    code = "import sys, compressor.cli; heavy = {'torch', 'onnxruntime', 'onnx'} & set(sys.modules); print(sorted(heavy))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _benchmark_started(out) -> bool:
    """True once the running release's manifest records the parity check, i.e. the benchmark is under way."""
    for manifest in out.glob(".cpu-x86.partial-*/manifest.json"):
        try:
            stages = json.loads(manifest.read_text()).get("stages", [])
        except (json.JSONDecodeError, OSError):  # caught mid-rewrite; look again
            continue
        if any(stage["name"].startswith("parity") for stage in stages):
            return True
    return False


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupting_a_real_run_leaves_previous_release_untouched(tmp_path, generator_folder, signum):
    out = tmp_path / "out"
    profile = tmp_path / "export-only.yaml"
    # A subprocess does not see the tests' machine without FID weights: say no FID in the profile.
    profile.write_text("name: export-only\nstages:\n  - {kind: rewrite}\nquality: {fid: off, samples: 32}\n")
    command = [sys.executable, "-m", "compressor", "run", str(generator_folder), "--out", str(out), "--profile", str(profile)]
    subprocess.run(command + BENCH, check=True, capture_output=True)
    release = out / "cpu-x86"
    before = {p.name: p.read_bytes() for p in release.iterdir()}
    # A benchmark long enough to be interrupted in the middle of it.
    proc = subprocess.Popen(
        command + ["--set", "target.benchmark.runs=1000000"],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "stderr.txt").open("w"),
        # A shell that starts the test suite in the background makes its children ignore SIGINT; a
        # terminal's Ctrl-C never does, so give the child the default disposition a terminal gives.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 60
        while not _benchmark_started(out):
            assert time.monotonic() < deadline and proc.poll() is None, "the run never reached its benchmark"
            time.sleep(0.1)
        time.sleep(0.5)
        proc.send_signal(signum)
        assert proc.wait(timeout=30) == 130, (tmp_path / "stderr.txt").read_text()
    finally:
        proc.kill()  # never leave a million-run benchmark behind when the test fails
        proc.wait()
    assert {p.name: p.read_bytes() for p in release.iterdir()} == before
    assert sorted(os.listdir(out)) == ["cpu-x86"]
