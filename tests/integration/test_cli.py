"""The command line: exit codes (0 ok, 1 bad input, 2 usage), one-line errors, --dry-run writes nothing,
Ctrl-C during a real run leaves the previous release untouched."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

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
    """The error is one line, the last one; only progress lines ('[k/n] step ...', '✓ [k/n] step') may precede it."""
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert all(re.match(r"(✓ )?\[\d+/\d+\] ", line) for line in lines[:-1]), err
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


@pytest.mark.parametrize("command", [[], ["run"], ["gate"], ["fid-stats"], ["sensitivity"], ["targets"], ["targets", "show"]])
def test_short_help_on_every_command(capsys, monkeypatch, command):
    rc, out, _ = cli(capsys, monkeypatch, *command, "-h")
    assert rc == 0 and "Usage: compressor" in out
    assert re.search(r"--help +-h ", out)  # listed as the short name of --help, not merely a substring of it


def test_version_names_compressor_and_its_runtimes(capsys, monkeypatch):
    from importlib.metadata import version

    from compressor import __version__

    for flag in ("--version", "-V"):
        rc, out, _ = cli(capsys, monkeypatch, flag)
        assert rc == 0 and out.startswith(f"compressor {__version__} (torch {version('torch')}, ")
        assert f"onnxruntime {version('onnxruntime')}" in out


def test_version_does_not_load_torch():
    code = ("import sys; sys.argv = ['compressor', '--version']\nfrom compressor.cli import main\ntry:\n    main()\n"
            "except SystemExit:\n    pass\nprint('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False")


@pytest.mark.parametrize("command", [["run"], ["gate"], ["fid-stats"], ["sensitivity"], ["inspect"], []])
def test_option_help_is_clean(capsys, monkeypatch, command):
    rc, out, _ = cli(capsys, monkeypatch, *command, "--help")
    assert rc == 0
    for typer_label in ("<bool>", "<list[str]>", "<str>", "<path>", "<int>"):
        assert typer_label not in out
    if command in (["run"], ["fid-stats"], ["sensitivity"]):
        assert "[fid]" in out  # rich markup would have eaten it


@pytest.mark.parametrize(
    "words,expected",
    [
        ("compressor ru", {"run"}),
        ("compressor run model --target jets", {"jetson", "jetson-orin"}),
        ("compressor run model --profile tensorrt", {"tensorrt", "tensorrt-qat"}),
        ("compressor run model --precision f", {"fp16", "fp32"}),
        ("compressor targets show mob", {"mobile", "mobile-arm"}),
    ],
)
def test_shell_completion(capsys, monkeypatch, words, expected):
    monkeypatch.setenv("_COMPRESSOR_COMPLETE", "complete_bash")
    monkeypatch.setenv("COMP_WORDS", words)
    monkeypatch.setenv("COMP_CWORD", str(len(words.split()) - 1))
    rc, out, _ = cli(capsys, monkeypatch)
    assert rc == 0 and set(out.split()) == expected


def test_completion_script_is_shown(capsys, monkeypatch):
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")  # name the shell instead of detecting it
    rc, out, _ = cli(capsys, monkeypatch, "--show-completion", "bash")
    assert rc == 0 and "_COMPRESSOR_COMPLETE=complete_bash" in out


def test_dry_run_shows_what_each_flag_set(capsys, monkeypatch, tmp_path, generator_folder):
    flags = ["--precision", "fp32", "--opset", "18", "--runs", "3", "--warmup", "1", "-o", tmp_path / "out"]
    rc, out, _ = cli(capsys, monkeypatch, "run", generator_folder, "--dry-run", *flags)
    plan = json.loads(out)
    assert rc == 0
    assert plan["cli_aliases"] == {
        "--precision": ["stages.ptq=null", "budgets.latency_vs_baseline=null"],
        "--opset": ["target.runtime.opset=18"],
        "--runs": ["target.benchmark.runs=3"],
        "--warmup": ["target.benchmark.warmup=1"],
    }
    target = plan["config"]["target"]
    assert (target["runtime"]["opset"], target["benchmark"]["runs"], target["benchmark"]["warmup"]) == (18, 3, 1)
    assert "ptq" not in plan["steps"] and plan["config"]["profile"]["budgets"]["latency_vs_baseline"] is None
    assert plan["release_dir"] == str(tmp_path / "out" / "cpu-x86")


@pytest.mark.parametrize(
    "flags,expected",
    [
        (["--precision", "mixed"], {"--precision": ["stages.ptq.auto_precision=true"]}),
        (["--precision", "int8", "--target", "gpu"], {"--precision": ["stages.ptq.auto_precision=false"]}),
        (["--precision", "fp16", "--target", "gpu"],
         {"--precision": ["stages.ptq=null", "target.runtime.float_dtype=fp16"]}),
        (["--iterations", "7", "--fid-stats", "{tmp}/real.npz"],
         {"--runs": ["target.benchmark.runs=7"], "--fid-stats": ['quality.fid_stats="{tmp}/real.npz"']}),
    ],
)
def test_flag_aliases(capsys, monkeypatch, tmp_path, generator_folder, flags, expected):
    (tmp_path / "real.npz").write_bytes(b"")  # the dry run checks it exists, nothing more
    flags = [flag.format(tmp=tmp_path) for flag in flags]
    rc, out, err = cli(capsys, monkeypatch, "run", generator_folder, "--dry-run", *flags)
    assert rc == 0, err
    assert json.loads(out)["cli_aliases"] == {flag: [s.format(tmp=tmp_path) for s in sets] for flag, sets in expected.items()}


@pytest.mark.parametrize(
    "args,code,expected",
    [
        (["{tmp}/absent"], 1, "{tmp}/absent: no such file or folder"),
        (["{model}", "--card", "{tmp}/card.yaml"], 1, "{tmp}/card.yaml: no such file (given by --card)"),
        (["{model}", "--calibration", "{tmp}/calib.npz"], 1, "{tmp}/calib.npz: calibration data not found"),
        (["{model}", "--calibration", "{tmp}"], 1, "calibration data not found"),  # a folder without .npz files
        (["{model}", "--fid-weights", "{tmp}/inception.pt"], 1, "{tmp}/inception.pt: no such file (given by --fid-weights"),
        (["{model}", "--fid-stats", "{tmp}/real.npz"], 1, "{tmp}/real.npz: no such file (given by --fid-stats"),
        (["{model}", "--precision", "fp16"], 2, "--precision fp16: target cpu-x86 runs fp32, int8"),
        (["{model}", "--precision", "mixed", "--profile", "qat"], 2, "the qat stage has no auto_precision"),
        (["{model}", "--opset", "17", "--target", "mobile"], 2, "target mobile-arm runs litert, which exports no ONNX"),
        (["{model}", "--runs", "3", "--set", "target.benchmark.runs=4"], 2, "--runs and --set target.benchmark.runs"),
    ],
)
def test_dry_run_refuses_missing_inputs_and_impossible_flags(capsys, monkeypatch, tmp_path, generator_folder, args, code, expected):
    args = [a.format(tmp=tmp_path, model=generator_folder) for a in args]
    rc, out, err = cli(capsys, monkeypatch, "run", *args, "--dry-run")
    assert rc == code and out == ""
    assert expected.format(tmp=tmp_path) in _one_line_error(err)


def test_gate_names_the_budgets_it_knows(capsys, monkeypatch, tmp_path):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"status": "complete", "config": {"profile": {"budgets": {}}}}))
    rc, _, err = cli(capsys, monkeypatch, "gate", manifest, "--set", "budgets.foo.max=1")
    line = _one_line_error(err)
    assert rc == 2 and "unknown key 'foo'" in line and "size_mb" in line and "latency_ms" in line


def _app_commands() -> dict[str, set[str]]:
    """Each command of the app -> its subcommands (empty for a plain command)."""
    import typer.main

    from compressor.cli import app

    root = typer.main.get_command(app)
    return {name: set(getattr(command, "commands", {})) for name, command in root.commands.items()}


def _source_texts() -> dict[Path, str]:
    root = Path(__file__).resolve().parents[2]
    files = [*sorted((root / "compressor").rglob("*.py")), root / "README.md"]
    return {path: path.read_text() for path in files}


def test_every_command_a_hint_names_exists():
    commands = _app_commands()
    for path, text in _source_texts().items():
        for name, sub in re.findall(r"`compressor ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?", text):
            assert name in commands, f"{path}: `compressor {name}` is not a command"
            if commands[name] and sub:
                assert sub in commands[name], f"{path}: `compressor {name} {sub}` is not a command"


def test_every_extra_a_hint_names_is_defined():
    import tomllib

    root = Path(__file__).resolve().parents[2]
    extras = set(tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    named = set()
    for text in _source_texts().values():
        # pip install 'compressor[x]' or -e '.[x]', and prose: the [x] extra
        for found in re.findall(r"(?:compressor|\.)\[([a-z][a-z0-9_,-]*)\]|`?\[([a-z][a-z0-9_-]*)\]`? extra", text):
            named.update(part for group in found for part in group.split(",") if part)
    assert named and named <= extras, f"extras named in hints but not defined in pyproject.toml: {named - extras}"


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


def test_precision_applies_to_the_profile_as_the_users_set_entries_left_it(capsys, monkeypatch, generator_folder):
    """--precision reads the profile after --set: with its ptq stage dropped there is nothing to make mixed, and the
    error says that, not that a key the user never typed is unknown."""
    rc, _, err = cli(capsys, monkeypatch, "run", generator_folder, "--dry-run", "--set", "stages.ptq=null",
                     "--precision", "mixed")
    assert rc == 2 and "with the --set entries applied, has no quantizing stage" in _one_line_error(err)
