"""The release folder is atomic: success replaces the old release, any failure leaves it byte-for-byte intact."""

from __future__ import annotations

import json
import os

import pytest

from compressor.errors import OutputError
from compressor.release.manifest import Manifest, ReleaseFolder, read_manifest


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def old_release(tmp_path):
    release = tmp_path / "out" / "cpu-x86"
    release.mkdir(parents=True)
    (release / "model.onnx").write_bytes(b"old model")
    (release / "manifest.json").write_text('{"status": "complete"}')
    return release


def test_success_replaces_the_previous_release(old_release):
    with ReleaseFolder(old_release.parent, "cpu-x86") as work:
        (work / "model.onnx").write_bytes(b"new model")
    assert (old_release / "model.onnx").read_bytes() == b"new model"
    assert not (old_release / "manifest.json").exists()
    assert sorted(p.name for p in old_release.parent.iterdir()) == ["cpu-x86"]


@pytest.mark.parametrize("error", [RuntimeError("stage failed"), KeyboardInterrupt()])
def test_failure_or_interrupt_leaves_old_release_untouched(old_release, error):
    before = _snapshot(old_release)
    with pytest.raises(type(error)):
        with ReleaseFolder(old_release.parent, "cpu-x86") as work:
            (work / "model.onnx").write_bytes(b"half-written")
            raise error
    assert _snapshot(old_release) == before
    assert sorted(p.name for p in old_release.parent.iterdir()) == ["cpu-x86"]  # no partial folder left


def test_unwritable_output_root_is_a_clear_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputError) as info:
        with ReleaseFolder(blocker / "out", "cpu-x86"):
            pass
    assert str(blocker / "out") in info.value.message and "--out" in info.value.message


def test_manifest_is_rewritten_after_each_stage(tmp_path):
    manifest = Manifest(tmp_path / "manifest.json", {"status": "running"})
    manifest.add_stage("rewrite", 0.5, metrics={"x": 1})
    manifest.add_stage("export", 1.25)
    data = json.loads((tmp_path / "manifest.json").read_text())
    assert [s["name"] for s in data["stages"]] == ["rewrite", "export"]
    assert read_manifest(tmp_path) == data


def test_reading_a_missing_or_broken_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(OutputError, match="not found"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(OutputError, match="not a valid manifest"):
        read_manifest(tmp_path)


def test_a_folder_that_is_not_a_release_is_never_replaced(tmp_path):
    precious = tmp_path / "out" / "cpu-x86"
    precious.mkdir(parents=True)
    (precious / "thesis.tex").write_text("years of work")
    release = ReleaseFolder(tmp_path / "out", "cpu-x86")
    with pytest.raises(OutputError, match="is not a compressor release"):
        release.preflight()
    assert (precious / "thesis.tex").read_text() == "years of work"


def test_failed_final_rename_puts_the_old_release_back(old_release, monkeypatch):
    before = _snapshot(old_release)
    real_replace = os.replace

    def failing_second_rename(src, dst):
        if ".partial-" in str(src):
            raise OSError("disk on fire")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_second_rename)
    with pytest.raises(OSError, match="disk on fire"):
        with ReleaseFolder(old_release.parent, "cpu-x86") as work:
            (work / "model.onnx").write_bytes(b"new")
    assert _snapshot(old_release) == before
    assert sorted(p.name for p in old_release.parent.iterdir()) == ["cpu-x86"]
