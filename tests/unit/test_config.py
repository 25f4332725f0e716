"""Targets, profiles and --set overrides: bundled files validate, names resolve, mistakes get one-line errors."""

from __future__ import annotations

import pytest

from compressor.config import bundled, load_profile, load_target, resolve
from compressor.errors import ConfigError, UsageError


@pytest.mark.parametrize("name", sorted({p.stem for p in bundled("targets").values()}))
def test_every_bundled_target_validates(name):
    assert load_target(name).name == name


@pytest.mark.parametrize("name", sorted({p.stem for p in bundled("profiles").values()}))
def test_every_bundled_profile_validates(name):
    assert load_profile(name).name == name


def test_alias_resolves_to_the_same_target():
    assert load_target("cpu") == load_target("cpu-x86")


def test_target_default_profile_is_used():
    assert resolve("cpu").profile.name == load_target("cpu").default_profile


@pytest.mark.parametrize("kind,loader", [("target", load_target), ("profile", load_profile)])
def test_unknown_name_lists_known_ones(kind, loader):
    with pytest.raises(UsageError) as info:
        loader("no-such-thing")
    assert f"unknown {kind} 'no-such-thing'" in info.value.message
    assert "known:" in info.value.message and info.value.exit_code == 2


def test_set_overrides_target_and_stage_values():
    config = resolve("cpu", sets=["target.benchmark.runs=7", "stages.rewrite.passes=[]", "target.parity.atol=1e-3"])
    assert config.target.benchmark.runs == 7
    assert config.target.parity.atol == pytest.approx(1e-3)
    assert config.profile.stages[0].passes == []


def test_set_changes_the_config_hash_and_same_inputs_keep_it():
    assert resolve("cpu").sha256() == resolve("cpu").sha256()
    assert resolve("cpu").sha256() != resolve("cpu", sets=["target.benchmark.runs=7"]).sha256()
    assert resolve("cpu", seed=1).sha256() != resolve("cpu").sha256()


@pytest.mark.parametrize(
    "item,expected",
    [
        ("target.benchmark.nope=1", "unknown key 'nope' under target.benchmark"),
        ("stages.prune.ratio=0.3", "the profile has no 'prune' stage (its stages: rewrite, ptq)"),
        ("budgets=3", "profile.budgets: Input should be a valid dictionary"),
        ("gallery=3", "unknown key 'gallery'"),
        ("target.benchmark.runs", "expected key=value"),
        ("target.benchmark.runs=many", "invalid value"),
    ],
)
def test_bad_set_is_a_usage_error(item, expected):
    with pytest.raises(UsageError) as info:
        resolve("cpu", sets=[item])
    assert expected in info.value.message and "\n" not in info.value.message


def test_user_target_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nruntime: onnxruntime\nbenchmark: {batch_sizes: [4]}\n")
    assert load_target(str(path)).benchmark.batch_sizes == [4]


@pytest.mark.parametrize(
    "text,expected",
    [
        ("name: mine\nruntime: tensorflow\n", "runtime"),
        ("name: mine\nruntime: onnxruntime\ncolour: blue\n", "colour"),
        ("name: mine\nruntime: onnxruntime\nopset: 17\n", "opset is a runtime option now"),
        ("name: mine\nruntime: {kind: onnxruntime, workspace_mb: 64}\n", "workspace_mb"),
        ("name: [unclosed\n", "not valid YAML"),
    ],
)
def test_invalid_target_file_names_file_and_field(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_target(str(path))
    assert str(path) in info.value.message and expected in info.value.message


def test_invalid_files_point_to_the_schema_command(tmp_path):
    # The hint names the command by the kind of file, not by the folder the user keeps it in.
    (tmp_path / "cfg").mkdir()
    for kind, loader, text in (("targets", load_target, "name: t\nruntime: onnxruntime\ncolour: blue\n"),
                               ("profiles", load_profile, "name: p\ncolour: blue\n")):
        path = tmp_path / "cfg" / f"{kind}.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            loader(str(path))
        assert info.value.message.endswith(f"`compressor {kind} schema` lists every field")


def test_runtime_options_live_in_the_runtime_section(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nruntime: {kind: onnxruntime, opset: 17}\n")
    assert load_target(str(path)).runtime.opset == 17
    assert load_target("cpu").runtime.kind == "onnxruntime"


@pytest.mark.parametrize(
    "stages,expected",
    [
        ("[{kind: ptq}, {kind: rewrite}]", "must be the last stage"),
        ("[{kind: rewrite}, {kind: ptq}, {kind: qat}]", "keep one of them"),
    ],
)
def test_the_quantizing_stage_comes_last_and_alone(tmp_path, stages, expected):
    path = tmp_path / "p.yaml"
    path.write_text(f"name: p\nstages: {stages}\n")
    with pytest.raises(ConfigError, match=expected):
        load_profile(str(path))


def test_missing_target_file_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_target(str(tmp_path / "absent.yaml"))


def test_profile_rejects_unknown_stage_fields(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("name: p\nstages:\n  - {kind: rewrite, strength: 11}\n")
    with pytest.raises(ConfigError, match="strength"):
        load_profile(str(path))


def test_set_creates_a_budget_the_profile_leaves_out():
    config = resolve("cpu", None, ["budgets.latency_ms.max=2.5", "budgets.latency_ms.batch=16", "budgets.size_mb.max=1"])
    assert (config.profile.budgets.latency_ms.max, config.profile.budgets.latency_ms.batch) == (2.5, 16)
    assert config.profile.budgets.size_mb.max == 1 and config.profile.budgets.fid is None


@pytest.mark.parametrize(
    "sets,expected",
    [
        (["budgets.latency_ms.max=1", "budgets.latency_ms.batch=4"], "batch 4 is not a batch size the target times"),
        (["budgets.fid.max_delta=1", "quality.fid=off"], "a fid budget needs FID"),
        (["budgets.size_mb.most=1"], "budget size_mb has no field 'most'; its fields: max"),
        (["budgets.latency_ms.maximum=1"], "budget latency_ms has no field 'maximum'; its fields: max, batch"),
        (["budgets.foo.max=1"], "unknown key 'foo' under profile.budgets; known: fd_surrogate, fid, latency_ms, "
                                "latency_vs_baseline, psnr, size_mb, ssim"),
    ],
)
def test_budgets_that_cannot_be_checked_are_usage_errors(sets, expected):
    with pytest.raises(UsageError, match=expected):
        resolve("cpu", None, sets)


def test_yaml_on_off_are_read_as_fid_modes():
    assert resolve("cpu", None, ["quality.fid=off"]).profile.quality.fid == "off"
    assert resolve("cpu", None, ["quality.fid=on"]).profile.quality.fid == "on"


def test_an_unknown_budget_lists_the_known_ones():
    from compressor.release.gate import budgets_with_overrides

    with pytest.raises(UsageError, match="unknown key 'foo' under profile.budgets; known: fd_surrogate, fid, latency_ms"):
        budgets_with_overrides({}, ["budgets.foo.max=1"])


def test_null_drops_a_stage():
    config = resolve("cpu", None, ["stages.ptq.samples=32", "stages.ptq=null"])
    assert [stage.kind for stage in config.profile.stages] == ["rewrite"]
