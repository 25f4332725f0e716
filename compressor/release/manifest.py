"""The run manifest (written after every stage) and the atomic release folder.

A run works in a hidden temporary folder beside the release and renames it into place only when it
finished: a failed or interrupted run (Ctrl-C included) deletes its temporary folder and leaves any
previous release byte-for-byte untouched. One run at a time writes a release: it holds an exclusive
flock on OUT/.<target>.lock from entering the folder until its release is in place or it failed; a
second run fails fast instead of silently replacing the first's release. The kernel drops the lock
with the process, so a run killed with SIGKILL leaves no stale lock, only its temporary folder,
which the next run removes.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import signal
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from compressor import __version__
from compressor.errors import OutputError, first_line
from compressor.release.lock import check_unlocked, release_lock, take_lock

MANIFEST_FILE = "manifest.json"
# 2: artifacts carry a role (final / baseline) and a format; the runtime is named at the top.
# 3: an overall `verdict`, `started_at` / `finished_at`, the `host` CPU; latency statistics carry p10_ms and `noisy`.
SCHEMA_VERSION = 3
_VERSIONED = ("torch", "onnx", "onnxruntime", "onnxscript", "numpy", "nvidia-modelopt")
# Distributions that install the same module under another name: the version recorded is whichever is installed.
_ALSO_SHIPPED_AS = {"onnxruntime": ("onnxruntime-gpu",)}

log = logging.getLogger("compressor")


def library_versions() -> dict[str, str]:
    versions = {"compressor": __version__, "python": platform.python_version()}
    for name in _VERSIONED:
        versions[name] = next(filter(None, map(_installed_version, (name, *_ALSO_SHIPPED_AS.get(name, ())))),
                              "not installed")
    versions["platform"] = platform.platform()
    return versions


def _installed_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def utc_now() -> str:
    """The time now as ISO 8601 UTC to the second, e.g. '2025-03-01T12:34:56Z' (the manifest's timestamps)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def release_verdict(checks: dict[str, dict[str, Any]]) -> str:
    """The release's overall verdict from its budget checks: 'fail' when one failed, 'pending' when one cannot be
    judged yet (latency measured on the device later), else 'pass' (all pass, or the profile sets no budgets)."""
    outcomes = {check["ok"] for check in checks.values()}
    return "fail" if False in outcomes else "pending" if None in outcomes else "pass"


@dataclass
class Manifest:
    """What a run did, as plain JSON data; `write` replaces the file atomically each time."""

    path: Path
    data: dict[str, Any] = field(default_factory=dict)

    def add_stage(self, name: str, seconds: float, **record: Any) -> None:
        self.data.setdefault("stages", []).append({"name": name, "seconds": round(seconds, 3), **record})
        self.write()

    def write(self) -> None:
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=False, default=str) + "\n")
        os.replace(tmp, self.path)


def read_manifest(path: Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise OutputError(f"{path}: manifest not found; pass a release folder or its manifest.json") from None
    except json.JSONDecodeError as exc:
        raise OutputError(f"{path}: not a valid manifest ({first_line(exc)}); rerun compressor run") from exc


class ReleaseFolder:
    """Context manager: yields a temporary folder, renamed to `root/name` only if the block succeeds; the
    release's lock is held for the whole block."""

    def __init__(self, root: Path, name: str) -> None:
        self.root = Path(root)
        self.final = self.root / name
        self.lock_path = self.root / f".{name}.lock"
        # What outlives a failed run so the next can continue (a training checkpoint); never part of the release.
        self.state_dir = self.root / f".{name}.state"
        self.work: Path | None = None
        self._lock: int | None = None  # file descriptor holding the flock

    def preflight(self) -> None:
        """Fail before any work when the release root can neither be created nor written, or when another run
        is writing this release. Creates nothing: a run that fails before its work leaves OUT as it was."""
        existing = self.root
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir() or not os.access(existing, os.W_OK):
            reason = "not a folder" if not existing.is_dir() else "permission denied"
            raise OutputError(f"{self.root}: output folder cannot be written ({existing}: {reason}); pass --out to a writable folder")
        if self.final.exists() and not (self.final / MANIFEST_FILE).is_file():
            # Only a previous release may be replaced: never delete a folder compressor did not write.
            raise OutputError(f"{self.final}: exists and is not a compressor release; move it away or pass another --out")
        check_unlocked(self.lock_path, self.final)

    def __enter__(self) -> Path:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._lock = take_lock(self.lock_path, self.final)
            try:
                self._remove_leftovers()
                self.work = Path(tempfile.mkdtemp(prefix=self._partial_prefix, dir=self.root))
                self.work.chmod(0o755)  # mkdtemp makes it private; a release is meant to be shared
            except BaseException:
                self._unlock()
                raise
        except OSError as exc:
            raise OutputError(
                f"{self.root}: output folder cannot be written ({exc.strerror or first_line(exc)}); pass --out to a writable folder"
            ) from exc
        return self.work

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is not None:  # any failure, KeyboardInterrupt included: drop the partial work
                shutil.rmtree(self.work, ignore_errors=True)
                return False
            self._swap_into_place()
            return False
        finally:
            self._unlock()

    @property
    def _partial_prefix(self) -> str:
        return f".{self.final.name}.partial-"

    def _remove_leftovers(self) -> None:
        """Delete the temporary folders of runs killed before they could (SIGKILL, power loss): with the lock
        held, no live run owns one."""
        leftovers = [p for p in self.root.iterdir() if p.name.startswith(self._partial_prefix) and p.is_dir()]
        for folder in leftovers:
            shutil.rmtree(folder, ignore_errors=True)
        removed = sum(not folder.exists() for folder in leftovers)
        if removed:
            log.warning("%s: removed %d unfinished folder(s) left by killed runs (%s*)",
                        self.final, removed, self._partial_prefix)

    def _unlock(self) -> None:
        if self._lock is not None:
            release_lock(self._lock, self.lock_path)
            self._lock = None

    def _swap_into_place(self) -> None:
        """Move the finished folder into place; the old release is removed only after the new one is there.

        Ctrl-C and SIGTERM are held back for the two renames, so no interruption can fall between them;
        if the second rename fails, the old release is put back.
        """
        old = None
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            if self.final.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.old-", dir=self.root)) / self.final.name
                os.replace(self.final, old)
            try:
                os.replace(self.work, self.final)
            except OSError:
                if old is not None:
                    os.replace(old, self.final)
                    old.parent.rmdir()
                    old = None
                shutil.rmtree(self.work, ignore_errors=True)
                raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)  # a held-back Ctrl-C is delivered here
        if old is not None:
            shutil.rmtree(old.parent, ignore_errors=True)

