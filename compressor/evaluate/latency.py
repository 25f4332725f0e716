"""Time a callable the way runtime benchmarks should: warm-up runs first, then median and spread of many runs.

Every runtime's latency statistics come from `summarize`, which also marks a timing `noisy` when its spread is
too large to trust (see NOISY_P90_OVER_MEDIAN).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

# A timing is `noisy` when its p90 is more than twice its median: at least one run in ten took over twice the
# typical time, which on a CPU means preemption, frequency changes or other load, not the model. Its median may
# still be right, but comparisons with timings taken at another moment (int8 vs fp32, one release vs the last)
# are not to be trusted.
NOISY_P90_OVER_MEDIAN = 2.0


def time_callable(fn: Callable[[], object], warmup: int, runs: int) -> dict[str, Any]:
    """Milliseconds per call: median, p10, p90, mean, min over `runs` timed calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        fn()
        times[i] = (time.perf_counter() - start) * 1e3
    return summarize(times, warmup)


def summarize(times: np.ndarray, warmup: int) -> dict[str, Any]:
    """The statistics every runtime reports of its timed runs (milliseconds): median, p10, p90, mean, min, and
    whether the spread makes the timing noisy (with why, when it does)."""
    runs = len(times)
    stats: dict[str, Any] = {
        "median_ms": float(np.median(times)),
        "p10_ms": float(np.percentile(times, 10)),
        "p90_ms": float(np.percentile(times, 90)),
        "mean_ms": float(times.mean()),
        "min_ms": float(times.min()),
        "runs": runs,
        "warmup": warmup,
    }
    reason = noisy_reason(stats["median_ms"], stats["p90_ms"])
    stats["noisy"] = reason is not None
    if reason:
        stats["noisy_reason"] = reason
    return stats


def noisy_reason(median_ms: float, p90_ms: float) -> str | None:
    """Why a timing with this median and p90 is too noisy to trust, or None when it is not."""
    if median_ms <= 0 or p90_ms <= NOISY_P90_OVER_MEDIAN * median_ms:
        return None
    return (f"p90 {p90_ms:.3g} ms is {p90_ms / median_ms:.1f}x the median {median_ms:.3g} ms (over "
            f"{NOISY_P90_OVER_MEDIAN:g}x): the machine was busy; rerun on a quiet one before comparing")
