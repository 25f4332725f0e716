"""Time a callable the way runtime benchmarks should: warm-up runs first, then median and p90 of many runs."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np


def time_callable(fn: Callable[[], object], warmup: int, runs: int) -> dict[str, float]:
    """Milliseconds per call: median, p90, mean, min over `runs` timed calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        fn()
        times[i] = (time.perf_counter() - start) * 1e3
    return summarize(times, warmup)


def summarize(times: np.ndarray, warmup: int) -> dict[str, float]:
    """The statistics every runtime reports of its timed runs (milliseconds): median, p90, mean, min."""
    runs = len(times)
    return {
        "median_ms": float(np.median(times)),
        "p90_ms": float(np.percentile(times, 90)),
        "mean_ms": float(times.mean()),
        "min_ms": float(times.min()),
        "runs": runs,
        "warmup": warmup,
    }
