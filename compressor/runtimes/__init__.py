"""Runtimes, one file each, imported lazily by name (their packages are heavy or optional).

Each runtime module provides: `unavailable_reason() -> str | None`, `export(model, card, target, path)
-> Path`, `load(artifact, target) -> runner` (a callable from input arrays to output arrays) and
`benchmark(artifact, card, target, seed) -> dict`; one that runs int8 also provides `quantize(...)` (the
ptq stage) and `export_quantized(...)` (the qat stage's fake-quantized model as QDQ).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from compressor.errors import CompressorError

RUNTIMES = {"onnxruntime": "compressor.runtimes.onnxruntime"}


def get_runtime(name: str) -> ModuleType:
    if name not in RUNTIMES:
        raise CompressorError(f"runtime '{name}' is not supported yet; supported: {sorted(RUNTIMES)}")
    module = importlib.import_module(RUNTIMES[name])
    reason = module.unavailable_reason()
    if reason:
        raise CompressorError(f"runtime '{name}' cannot run here: {reason}")
    return module
