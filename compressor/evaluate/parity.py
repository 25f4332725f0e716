"""Check an exported artifact against the torch model on the same seeded inputs (optimum's validate step)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from compressor.config import ParitySettings
from compressor.errors import ParityError
from compressor.evaluate.paired import data_range_of, psnr


def check_parity(
    reference: Callable[[dict[str, np.ndarray]], list[np.ndarray]],
    runner: Callable[[dict[str, np.ndarray]], list[np.ndarray]],
    inputs: dict[str, np.ndarray],
    settings: ParitySettings,
    min_psnr: float | None = None,
    value_range: tuple[float, float] | None = None,
) -> dict[str, float | bool | None]:
    """Largest absolute error, and that error relative to the reference's largest magnitude.

    An fp32 artifact passes when max_abs <= atol + rtol * max|reference| (numpy.allclose's rule, applied to
    the whole output); a quantized one (min_psnr given) when its PSNR vs the reference reaches min_psnr.
    """
    expected = reference(inputs)
    actual = runner(inputs)
    shapes = ([list(a.shape) for a in actual], [list(e.shape) for e in expected])
    if shapes[0] != shapes[1]:
        raise ParityError(f"artifact outputs have shapes {shapes[0]}, the torch model's {shapes[1]}; the export is broken")
    max_abs = max(float(np.abs(a - e).max()) for a, e in zip(actual, expected))
    scale = max(float(np.abs(e).max()) for e in expected)
    max_rel = max_abs / max(scale, 1e-12)
    worst_psnr = min(psnr(e, a, data_range_of(value_range, e)) for a, e in zip(actual, expected))
    within_tolerance = max_abs <= settings.atol + settings.rtol * scale
    return {
        "max_abs_error": max_abs,
        "max_rel_error": max_rel,
        "atol": settings.atol,
        "rtol": settings.rtol,
        "samples": int(next(iter(inputs.values())).shape[0]),
        "psnr_db": worst_psnr,
        "min_psnr": min_psnr,
        "ok": bool(within_tolerance if min_psnr is None else worst_psnr >= min_psnr),
    }
