"""One run at a time writes a release: a second run into the same --out fails fast and leaves the first's release
intact, the lock goes with the run (failed, finished or killed), and a killed run's unfinished folder is removed by
the next run.

flock locks held through two separate open files conflict even within one process, so a second ReleaseFolder
in this process stands for a second run; the subprocess tests check the same across processes and after SIGKILL.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from compressor.errors import OutputError
from compressor.release.manifest import ReleaseFolder

TARGET = "cpu-x86"
BUSY = re.compile(r"^(?P<release>\S+): another compressor run is writing this release \(pid (?P<pid>\d+)\); "
                  r"wait for it or pass another --out$")


def _release(out: Path, model: bytes) -> None:
    with ReleaseFolder(out, TARGET) as work:
        (work / "manifest.json").write_text('{"status": "complete"}')
        (work / "model.onnx").write_bytes(model)


def _busy_pid(error: pytest.ExceptionInfo, out: Path) -> int:
    """The pid a busy-release error names, after checking the rest of its one line."""
    match = BUSY.match(error.value.message)
    assert match, error.value.message
    assert match["release"] == str(out / TARGET)
    return int(match["pid"])


def _names(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir())


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def compressor_warnings():
    """Warning messages on the 'compressor' logger (its own handler: a CLI test may have turned propagation off)."""
    logger, collect = logging.getLogger("compressor"), _Collect()
    level = logger.level
    logger.addHandler(collect)
    logger.setLevel(logging.WARNING)
    yield collect.messages
    logger.removeHandler(collect)
    logger.setLevel(level)


def test_a_second_run_fails_fast_and_the_first_release_stands(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with ReleaseFolder(out, TARGET) as work:
        (work / "manifest.json").write_text('{"status": "complete"}')
        (work / "model.onnx").write_bytes(b"first")
        second = ReleaseFolder(out, TARGET)
        with pytest.raises(OutputError) as at_preflight:
            second.preflight()
        with pytest.raises(OutputError) as at_enter:
            with second:
                pytest.fail("the second run must not get a work folder")
    assert _busy_pid(at_preflight, out) == _busy_pid(at_enter, out) == os.getpid()
    assert at_enter.value.exit_code != 0
    assert (out / TARGET / "model.onnx").read_bytes() == b"first"
    assert _names(out) == [TARGET]  # lock file and work folders gone once the release is in place


def test_a_run_in_another_process_holds_the_release(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _release(out, b"old")
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from compressor.release.manifest import ReleaseFolder
            with ReleaseFolder({str(out)!r}, {TARGET!r}) as work:
                print("locked", flush=True)
                sys.stdin.readline()  # hold the lock until the test lets go
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputError) as info:
            _release(out, b"second")
        assert _busy_pid(info, out) == holder.pid
    finally:
        holder.communicate("go\n", timeout=60)
    assert holder.returncode == 0
    _release(out, b"third")  # the holder let go: the next run proceeds
    assert (out / TARGET / "model.onnx").read_bytes() == b"third"


def test_preflight_creates_nothing(tmp_path: Path) -> None:
    ReleaseFolder(tmp_path / "out", TARGET).preflight()
    assert not (tmp_path / "out").exists()


def test_the_lock_is_released_after_a_failure(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _release(out, b"old")
    with pytest.raises(RuntimeError, match="stage failed"):
        with ReleaseFolder(out, TARGET) as work:
            (work / "model.onnx").write_bytes(b"half-written")
            raise RuntimeError("stage failed")
    assert _names(out) == [TARGET]
    assert (out / TARGET / "model.onnx").read_bytes() == b"old"
    _release(out, b"new")
    assert (out / TARGET / "model.onnx").read_bytes() == b"new"


def test_a_leftover_partial_folder_is_removed_by_the_next_run(tmp_path: Path, compressor_warnings) -> None:
    out = tmp_path / "out"
    for suffix in ("a1b2c3", "d4e5f6"):
        leftover = out / f".{TARGET}.partial-{suffix}"
        leftover.mkdir(parents=True)
        (leftover / "model.onnx").write_bytes(b"unfinished")
    other_target = out / ".cpu-arm.partial-xyz"  # another target's run may still be writing it
    other_target.mkdir()
    _release(out, b"new")
    assert _names(out) == [".cpu-arm.partial-xyz", TARGET]
    assert len(compressor_warnings) == 1
    assert compressor_warnings[0].startswith(f"{out / TARGET}: removed 2 unfinished folder(s) left by killed runs")


def test_a_killed_run_leaves_no_stale_lock(tmp_path: Path, compressor_warnings) -> None:
    out = tmp_path / "out"
    killed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(f"""
            import os, signal
            from compressor.release.manifest import ReleaseFolder
            work = ReleaseFolder({str(out)!r}, {TARGET!r}).__enter__()
            (work / "model.onnx").write_bytes(b"unfinished")
            os.kill(os.getpid(), signal.SIGKILL)
        """)],
        timeout=60,
    )
    assert killed.returncode == -9
    assert f".{TARGET}.lock" in _names(out) and any(".partial-" in name for name in _names(out))
    _release(out, b"new")
    assert _names(out) == [TARGET]
    assert any("removed 1 unfinished folder(s)" in message for message in compressor_warnings)
