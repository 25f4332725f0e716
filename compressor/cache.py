"""Results cached by a hash of their inputs, so a rerun does not pay for them again: the sensitivity table
and the features of a reference model's samples. They live under $COMPRESSOR_CACHE, else ~/.cache/compressor;
each entry is written whole (a temporary file, then a rename), and deleting the folder is always safe.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np


def cache_dir(kind: str) -> Path:
    """The folder of one kind of cached result."""
    root = os.environ.get("COMPRESSOR_CACHE") or Path.home() / ".cache" / "compressor"
    return Path(root) / kind


def cached_array(kind: str, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """The array stored under `key`, or `compute()` stored there first."""
    path = cache_dir(kind) / f"{key}.npy"
    if path.is_file():
        return np.load(path, allow_pickle=False)
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{key}.{os.getpid()}.tmp.npy")
    np.save(tmp, value, allow_pickle=False)
    os.replace(tmp, path)
    return value
