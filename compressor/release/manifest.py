"""The run manifest (written after every stage) and the atomic release folder.

A run works in a hidden temporary folder beside the release and renames it into place only when it
finished: a failed or interrupted run (Ctrl-C included) deletes its temporary folder and leaves any
previous release byte-for-byte untouched.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from compressor import __version__
from compressor.errors import OutputError, first_line

MANIFEST_FILE = "manifest.json"
SCHEMA_VERSION = 2  # 2: artifacts carry a role (final / baseline) and a format; the runtime is named at the top
_VERSIONED = ("torch", "onnx", "onnxruntime", "onnxscript", "numpy", "nvidia-modelopt")


def library_versions() -> dict[str, str]:
    versions = {"compressor": __version__, "python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    versions["platform"] = platform.platform()
    return versions


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
    """Context manager: yields a temporary folder, renamed to `root/name` only if the block succeeds."""

    def __init__(self, root: Path, name: str) -> None:
        self.root = Path(root)
        self.final = self.root / name
        self.work: Path | None = None

    def preflight(self) -> None:
        """Fail before any work when the release root can neither be created nor written."""
        existing = self.root
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir() or not os.access(existing, os.W_OK):
            reason = "not a folder" if not existing.is_dir() else "permission denied"
            raise OutputError(f"{self.root}: output folder cannot be written ({existing}: {reason}); pass --out to a writable folder")
        if self.final.exists() and not (self.final / MANIFEST_FILE).is_file():
            # Only a previous release may be replaced: never delete a folder compressor did not write.
            raise OutputError(f"{self.final}: exists and is not a compressor release; move it away or pass another --out")

    def __enter__(self) -> Path:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.work = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.partial-", dir=self.root))
            self.work.chmod(0o755)  # mkdtemp makes it private; a release is meant to be shared
        except OSError as exc:
            raise OutputError(
                f"{self.root}: output folder cannot be written ({exc.strerror or first_line(exc)}); pass --out to a writable folder"
            ) from exc
        return self.work

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:  # any failure, KeyboardInterrupt included: drop the partial work
            shutil.rmtree(self.work, ignore_errors=True)
            return False
        self._swap_into_place()
        return False

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
