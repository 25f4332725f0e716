"""NNCF's C++ extension: a build lock left by a build that never finished is named, with the command that clears it,
instead of NNCF's opaque ExtensionLoaderTimeoutException; a too-slow build says how to give it longer; and NNCF
gets the slow-machine timeout unless the user set one.

Unit-level: the extension is never built here. Each test points the check at a tmp folder holding (or not) a
`lock` file like the one torch.utils.cpp_extension's FileBaton leaves; the last one drives NNCF's real loader
namespace with a stand-in loader that waits on that lock as torch does.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from compressor.errors import ConfigError
from compressor.stages.qat_nncf import (
    SLOW_MACHINE_TIMEOUT_S,
    TIMEOUT_ENV,
    load_unblocked,
    stale_lock_check,
)


class LoadTimedOut(Exception):
    """Stands for nncf's ExtensionLoaderTimeoutException."""


def _lock(build_dir: Path, age_s: float) -> Path:
    """A build lock last touched `age_s` seconds ago."""
    build_dir.mkdir(parents=True, exist_ok=True)
    lock = build_dir / "lock"
    lock.touch()
    then = time.time() - age_s
    os.utime(lock, (then, then))
    return lock


def _assert_stale_lock_message(message: str, lock: Path) -> None:
    assert "\n" not in message
    assert f"blocked by {lock}" in message
    assert f"`rm -rf {lock.parent}`" in message
    assert "if no other qat run is building it" in message


@pytest.fixture
def build_dir(tmp_path: Path) -> Path:
    return tmp_path / "torch_extensions" / "py311_cpu" / "nncf" / "quantized_functions_cpu" / "2.13.0+cpu"


@pytest.fixture
def timeout_env(monkeypatch: pytest.MonkeyPatch):
    """Set NNCF's timeout variable (None: unset); whatever the code under test sets is undone afterwards."""
    monkeypatch.setenv(TIMEOUT_ENV, "0")  # records the original value for the undo

    def set_to(value: str | None) -> None:
        if value is None:
            monkeypatch.delenv(TIMEOUT_ENV)
        else:
            monkeypatch.setenv(TIMEOUT_ENV, value)

    return set_to


def test_a_stale_lock_names_the_lock_and_the_command_that_clears_it(build_dir: Path) -> None:
    lock = _lock(build_dir, age_s=3600)
    with pytest.raises(ConfigError) as info:
        stale_lock_check(build_dir, SLOW_MACHINE_TIMEOUT_S)
    _assert_stale_lock_message(info.value.message, lock)
    assert re.search(r"left 36\d\d s ago by a build that never finished", info.value.message)
    assert lock.exists()  # named, never deleted: another run may be building


def test_a_fresh_lock_or_none_is_left_alone(build_dir: Path) -> None:
    stale_lock_check(build_dir, SLOW_MACHINE_TIMEOUT_S)  # no folder, no lock
    _lock(build_dir, age_s=5)  # a build in progress
    stale_lock_check(build_dir, SLOW_MACHINE_TIMEOUT_S)


def test_a_stale_lock_fails_before_waiting_on_it(build_dir: Path, timeout_env) -> None:
    timeout_env(None)
    lock = _lock(build_dir, age_s=SLOW_MACHINE_TIMEOUT_S + 60)
    calls = []
    with pytest.raises(ConfigError) as info:
        load_unblocked(build_dir, lambda: calls.append("load"), LoadTimedOut)
    _assert_stale_lock_message(info.value.message, lock)
    assert calls == []


def test_a_lock_there_before_the_wait_is_named_after_the_timeout(build_dir: Path, timeout_env) -> None:
    timeout_env("60")
    lock = _lock(build_dir, age_s=30)  # young when the load began

    def wait_then_time_out() -> None:
        _lock(build_dir, age_s=90)  # ... and older than the wait once NNCF gave up on it
        raise LoadTimedOut("The extension load function failed to execute within 60 seconds.")

    with pytest.raises(ConfigError) as info:
        load_unblocked(build_dir, wait_then_time_out, LoadTimedOut)
    _assert_stale_lock_message(info.value.message, lock)


def test_a_build_too_slow_for_the_timeout_says_how_to_give_it_longer(build_dir: Path, timeout_env) -> None:
    timeout_env("60")

    def own_build_times_out() -> None:
        _lock(build_dir, age_s=59)  # this run's own build, started as the load began
        raise LoadTimedOut("The extension load function failed to execute within 60 seconds.")

    with pytest.raises(ConfigError) as info:
        load_unblocked(build_dir, own_build_times_out, LoadTimedOut)
    message = info.value.message
    assert "\n" not in message
    assert "did not build within 60 s" in message
    assert f"`rm -rf {build_dir}`" in message and f"{TIMEOUT_ENV} set to more seconds" in message


def test_nncf_gets_the_slow_machine_timeout_unless_the_user_set_one(build_dir: Path, timeout_env) -> None:
    seen = []
    timeout_env(None)
    load_unblocked(build_dir, lambda: seen.append(os.environ[TIMEOUT_ENV]), LoadTimedOut)
    timeout_env("900")
    load_unblocked(build_dir, lambda: seen.append(os.environ[TIMEOUT_ENV]), LoadTimedOut)
    assert seen == [str(SLOW_MACHINE_TIMEOUT_S), "900"]


def test_a_bad_timeout_value_is_one_line(build_dir: Path, timeout_env) -> None:
    timeout_env("5min")
    with pytest.raises(ConfigError, match=f"^{TIMEOUT_ENV}='5min': expected whole seconds"):
        load_unblocked(build_dir, lambda: None, LoadTimedOut)


def test_nncf_timing_out_on_a_left_lock_is_translated(build_dir: Path, timeout_env) -> None:
    """NNCF's own loader namespace and exception, and torch's own wait on the lock; only the build is left out."""
    extensions = pytest.importorskip("nncf.torch.extensions")
    from torch.utils.file_baton import FileBaton

    class WaitsOnTheLock(extensions.ExtensionLoader):
        @classmethod
        def extension_type(cls):
            return extensions.ExtensionsType.CPU

        @classmethod
        def name(cls) -> str:
            return "stand_in"

        @classmethod
        def get_build_dir(cls) -> str:
            return str(build_dir)

        @classmethod
        def load(cls):
            FileBaton(str(build_dir / "lock")).wait()  # what torch does while another process holds the lock

    timeout_env("1")
    lock = _lock(build_dir, age_s=0)
    namespace = extensions.ExtensionNamespace(WaitsOnTheLock())
    try:
        with pytest.raises(ConfigError) as info:
            load_unblocked(build_dir, lambda: namespace.get("Quantize_forward"), extensions.ExtensionLoaderTimeoutException)
    finally:
        lock.unlink()  # lets NNCF's waiting thread finish
    _assert_stale_lock_message(info.value.message, lock)
    assert isinstance(info.value.__context__, extensions.ExtensionLoaderTimeoutException)  # named after NNCF gave up
