"""Reading the user's files safely (YAML through safe_load only) and checksumming artifacts."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml

from compressor.errors import ConfigError, first_line


def read_yaml(path: Path, what: str) -> dict[str, Any]:
    """A YAML mapping from `path`; every way it can be unreadable becomes one ConfigError line."""
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found; check the path")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: {what} is not UTF-8 text; save it as UTF-8 YAML") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML{_where(exc)}; fix the syntax") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: {what} must be a YAML mapping (key: value lines)")
    return data


def _where(exc: yaml.YAMLError) -> str:
    """' at line L, column C (problem)' for a syntax error yaml could place, else ' (its first line)'.
    yaml counts from 0; editors count from 1."""
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return f" ({first_line(exc)})"
    return f" at line {mark.line + 1}, column {mark.column + 1} ({exc.problem or first_line(exc)})"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
