"""One run at a time per release: an exclusive flock on OUT/.<target>.lock, with the holder's pid in it.

The kernel drops a flock with its process, so a run killed outright (SIGKILL, the OOM killer) leaves no stale
lock. POSIX only (fcntl), like the rest of the release writing.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from compressor.errors import OutputError


def take_lock(path: Path, release: Path) -> int:
    """An exclusive flock on `path` with this process's pid written in it; OutputError when another run holds it.

    A holder deletes the file just before letting go, so a run that opened the file before it was deleted may
    lock a file no longer there: it checks it locked the file at `path` and, if not, tries again."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if _lock_file_at(fd, path, release):
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())  # for the message of a run that finds it taken
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _lock_file_at(fd: int, path: Path, release: Path) -> bool:
    """Lock `fd` without waiting; True if it is still the file at `path`."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _busy(release, _holder(fd)) from None
    return _is_file_at(fd, path)


def release_lock(fd: int, path: Path) -> None:
    """Delete the lock file while still holding it (see take_lock), then let go."""
    try:
        path.unlink(missing_ok=True)
    finally:
        os.close(fd)


def check_unlocked(path: Path, release: Path) -> None:
    """OutputError when a run holds the lock; probes with a shared lock and creates nothing."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # no lock file: no run holds it (other failures surface when the run takes the lock)
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _busy(release, _holder(fd)) from None
    finally:
        os.close(fd)  # drops the probe's shared lock


def _is_file_at(fd: int, path: Path) -> bool:
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (opened.st_dev, opened.st_ino) == (named.st_dev, named.st_ino)


def _holder(fd: int) -> str:
    """' (pid N)' from the lock file, or '' while the holder has not written it yet."""
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return f" (pid {text})" if text.isdigit() else ""


def _busy(release: Path, holder: str) -> OutputError:
    return OutputError(f"{release}: another compressor run is writing this release{holder}; wait for it or pass another --out")
