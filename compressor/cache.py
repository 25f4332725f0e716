"""Results cached by a hash of their inputs, so a rerun does not pay for them again: the sensitivity table,
the features of a reference model's own samples (keyed by the checkpoint, its sampler, seed and sample count,
a digest of its outputs and the extractor's weights), an artifact's features (keyed by its images), and FID's
Inception network exported to ONNX.

They live under $COMPRESSOR_CACHE, else ~/.cache/compressor, one folder per kind (`sensitivity/`,
`reference-features/`, `image-features/`, `extractors/`). Each entry is written whole (a temporary file, then a
rename), a reference model's cached features have a JSON file beside them saying what they were made from, and
deleting the folder is always safe.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np


def cache_dir(kind: str) -> Path:
    """The folder of one kind of cached result."""
    root = os.environ.get("COMPRESSOR_CACHE") or Path.home() / ".cache" / "compressor"
    return Path(root) / kind


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` to a temporary file beside `path`, then rename it into place: readers (another run, another
    torchrun rank) see the whole file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def cached_array(
    kind: str, key: str, compute: Callable[[], np.ndarray], describe: dict[str, Any] | None = None
) -> tuple[np.ndarray, bool]:
    """The array stored under `key`, or `compute()` stored there first (with `describe` beside it, as JSON);
    also says whether it came from the cache."""
    path = cache_dir(kind) / f"{key}.npy"
    if path.is_file():
        return np.load(path, allow_pickle=False), True
    value = compute()
    write_atomically(path, lambda tmp: np.save(tmp, value, allow_pickle=False))
    if describe is not None:
        write_atomically(path.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(describe, indent=2)))
    return value, False
