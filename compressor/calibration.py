"""Calibration data for quantization: seeded samples of the model card's prior (data-free), or the user's
own `.npz` file or folder of `.npz` files, one array per model input, batch axis first."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compressor.errors import ConfigError
from compressor.modelcard import InputSpec, ModelCard, sample_inputs


def prior_samples(card: ModelCard, count: int, seed: int) -> dict[str, np.ndarray]:
    return {name: tensor.numpy() for name, tensor in sample_inputs(card, count, seed).items()}


# Fewer samples than this give ranges from too little data to trust (and no percentile tail at all).
MIN_CALIBRATION_SAMPLES = 16


def load_calibration(path: Path, card: ModelCard, minimum: int = MIN_CALIBRATION_SAMPLES) -> dict[str, np.ndarray]:
    """Read calibration inputs and check them against the card: names, per-sample shapes, float dtype, count."""
    path = Path(path)
    files = sorted(path.glob("*.npz")) if path.is_dir() else [path]
    if not files or not files[0].is_file():
        raise ConfigError(f"{path}: calibration data not found; pass an .npz file or a folder of them")
    parts: dict[str, list[np.ndarray]] = {name: [] for name in card.inputs}
    for file in files:
        arrays = _read_npz(file)
        for name, spec in card.inputs.items():
            parts[name].append(_checked(arrays, name, spec, file))
    data = {name: np.concatenate(chunks).astype(card.inputs[name].dtype) for name, chunks in parts.items()}
    counts = {len(array) for array in data.values()}
    if len(counts) != 1:
        raise ConfigError(f"{path}: inputs hold different sample counts {sorted(counts)}; give every input the same count")
    if counts.pop() < minimum:
        raise ConfigError(f"{path}: {len(next(iter(data.values())))} calibration samples, at least {minimum} needed; add more")
    return data


def batches(data: dict[str, np.ndarray], size: int) -> list[dict[str, np.ndarray]]:
    """Split calibration inputs into feeds of `size` samples (the last one may be smaller)."""
    count = len(next(iter(data.values())))
    return [{name: array[start : start + size] for name, array in data.items()} for start in range(0, count, size)]


def _read_npz(file: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(file, allow_pickle=False) as archive:  # never unpickle user data
            return {name: archive[name] for name in archive.files}
    except Exception as exc:
        raise ConfigError(f"{file}: not a readable .npz file ({type(exc).__name__}); save it with numpy.savez") from exc


def _checked(arrays: dict[str, np.ndarray], name: str, spec: InputSpec, file: Path) -> np.ndarray:
    shape = tuple(spec.shape)
    if name not in arrays:
        raise ConfigError(f"{file}: no array named '{name}' (found {sorted(arrays)}); name arrays after the model inputs")
    array = arrays[name]
    if array.shape[1:] != shape:
        raise ConfigError(f"{file}: '{name}' has samples of shape {list(array.shape[1:])}, the model takes {list(shape)}")
    if spec.dtype == "int64":
        if not np.issubdtype(array.dtype, np.integer):
            raise ConfigError(f"{file}: '{name}' has dtype {array.dtype}; the model card says int64: save integers")
        return array
    if not np.issubdtype(array.dtype, np.floating):
        raise ConfigError(f"{file}: '{name}' has dtype {array.dtype}; calibration inputs must be floating point")
    if not np.isfinite(array).all():
        raise ConfigError(f"{file}: '{name}' contains NaN or Inf; remove those samples")
    varies = spec.prior in ("normal", "uniform")  # a fixed conditioning value is constant by design
    if varies and array.size and float(array.std()) == 0.0:  # constant inputs calibrate every range to a single point
        raise ConfigError(f"{file}: '{name}' is constant (every value {array.flat[0]}); calibrate on varied inputs")
    return array
