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
        raise ConfigError(f"{path}: not valid YAML ({first_line(exc)}); fix the syntax") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: {what} must be a YAML mapping (key: value lines)")
    return data


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
