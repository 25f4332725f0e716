"""Budgets: limits on the final artifact's (the one whose role is `final`) size, latency and quality, checked from the manifest alone.

A profile's `budgets:` section (each entry overridable with `--set budgets.<name>.<field>=...`) names
the limits; `check_budgets` reads the values a run recorded and returns `{value, limit, ok}` per budget.
`compressor run` stores the result in the manifest and exits 3 when one fails; `compressor gate`
re-checks a finished release the same way without recomputing anything.
"""

from __future__ import annotations

from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from compressor.errors import CompressorError


class BudgetError(CompressorError):
    """A budget names a metric the release did not compute (bad input: exit 1)."""


class BudgetFailed(CompressorError):
    """At least one budget is exceeded: the release is written, and the process exits 3 for CI."""

    exit_code = 3


class BudgetPending(CompressorError):
    """A budget cannot be judged yet (a TensorRT release's latency, until its engine is built); exit 4."""

    exit_code = 4


class _Limit(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MaxLimit(_Limit):
    max: float = Field(description="Largest allowed value.")


class LatencyLimit(_Limit):
    max: float = Field(description="Largest allowed median latency, ms.")
    batch: PositiveInt = Field(1, description="Batch size it applies to; must be one the target times.")


class DeltaLimit(_Limit):
    max_delta: float = Field(description="Largest allowed increase over the reference model's own score.")


class MinLimit(_Limit):
    min: float = Field(description="Smallest allowed value.")


class Budgets(_Limit):
    """Limits on the final artifact; a budget left out is not checked."""

    size_mb: MaxLimit | None = Field(None, description="Artifact file size, MB (10^6 bytes).")
    latency_ms: LatencyLimit | None = Field(None, description="Median latency on the target's runtime.")
    latency_vs_baseline: MaxLimit | None = Field(
        None,
        description="Median latency divided by the fp32 baseline artifact's, at the largest batch timed: above 1 the "
        "compressed artifact is slower than the model it replaces.",
    )
    fid: DeltaLimit | None = Field(None, description="FID increase over the reference model (Inception weights needed).")
    fd_surrogate: DeltaLimit | None = Field(None, description="FD-surrogate increase over the reference model.")
    psnr: MinLimit | None = Field(None, description="PSNR vs the reference model on the same latents, dB.")
    ssim: MinLimit | None = Field(None, description="SSIM vs the reference model on the same latents.")

    def named(self) -> dict[str, _Limit]:
        return {name: limit for name, limit in self if limit is not None}


def check_budgets(manifest: dict[str, Any], budgets: Budgets) -> dict[str, dict[str, Any]]:
    """`{name: {value, limit, ok, ...}}` for every budget, from the values the manifest recorded."""
    _, artifact = final_artifact(manifest)
    return {name: _check(name, limit, artifact) for name, limit in budgets.named().items()}


def final_artifact(manifest: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(file name, record) of the artifact the release ships: the one whose role is final."""
    for name, record in manifest.get("artifacts", {}).items():
        if record.get("role") == "final":
            return name, record
    raise BudgetError(
        "the manifest marks no artifact as final: it is not a finished release, or an older compressor made it; "
        "rerun compressor run"
    )


def failures(checks: dict[str, dict[str, Any]]) -> list[str]:
    """One phrase per failed budget, e.g. 'size_mb 1.05 > max 0.50' (a pending budget has not failed)."""
    return [
        f"{name} {check['value']:.4g} {'<' if check['bound'] == 'min' else '>'} {check['bound']} {check['limit']:.4g}"
        for name, check in checks.items()
        if check["ok"] is False
    ]


def pending(checks: dict[str, dict[str, Any]]) -> list[str]:
    """One phrase per budget that cannot be judged yet, with why."""
    return [f"{name}: {check['pending']}" for name, check in checks.items() if check["ok"] is None]


def verdict(check: dict[str, Any]) -> str:
    """'pass', 'FAIL' or 'pending' (cannot be judged yet)."""
    return {True: "pass", False: "FAIL", None: "pending"}[check["ok"]]


def value_text(check: dict[str, Any]) -> str:
    return "pending" if check["value"] is None else f"{check['value']:.4g}"


def limit_text(check: dict[str, Any]) -> str:
    """'max 1.2', 'min 35' or 'max 3 (batch 16)': a check's bound as people read it."""
    batch = f" (batch {check['batch']})" if "batch" in check else ""
    return f"{check['bound']} {check['limit']:.4g}{batch}"


def _check(name: str, limit: _Limit, artifact: dict[str, Any]) -> dict[str, Any]:
    value = _MEASURED[name](artifact, limit)
    if isinstance(limit, MinLimit):
        check = {"value": value, "limit": limit.min, "bound": "min"}
    else:
        bound = limit.max_delta if isinstance(limit, DeltaLimit) else limit.max
        check = {"value": value, "limit": bound, "bound": "max_delta" if isinstance(limit, DeltaLimit) else "max"}
    if isinstance(limit, LatencyLimit):
        check["batch"] = limit.batch
    if isinstance(value, str):  # why it cannot be judged yet: neither a pass nor a failure
        return {**check, "value": None, "ok": None, "pending": value}
    return {**check, "ok": value >= check["limit"] if check["bound"] == "min" else value <= check["limit"]}


def _pending(artifact: dict[str, Any]) -> str:
    """Why the artifact's latency is not known yet, in the runtime's words, and what then judges the budget."""
    return f"{artifact['latency']['pending']}; then run compressor gate"


def _latency(artifact: dict[str, Any], limit: LatencyLimit) -> float | str:
    if "pending" in artifact.get("latency", {}):
        return _pending(artifact)
    batches = artifact.get("latency", {}).get("batches", {})
    if str(limit.batch) not in batches:
        raise BudgetError(
            f"budget latency_ms: batch {limit.batch} was not timed (timed: {', '.join(batches) or 'none'}); "
            "set budgets.latency_ms.batch to one of those, or add it to target.benchmark.batch_sizes"
        )
    return float(batches[str(limit.batch)]["median_ms"])


def _latency_ratio(artifact: dict[str, Any], limit: MaxLimit) -> float | str:
    if "pending" in artifact.get("latency", {}):
        return _pending(artifact)
    if "latency_vs_fp32" not in artifact:
        raise BudgetError(
            "budget latency_vs_baseline: the release has no baseline artifact to compare with (the profile quantizes "
            "nothing); remove the budget"
        )
    return float(artifact["latency_vs_fp32"]["ratio"])


def _quality(budget: str, metric: str, key: str | None = None) -> Callable[[dict[str, Any], _Limit], float]:
    """Reads artifact.quality[metric] (or its [key]); a missing value is an error that says why it is missing."""

    def value(artifact: dict[str, Any], limit: _Limit) -> float:
        quality = artifact.get("quality") or {}
        found = quality.get(metric)
        if key is not None and isinstance(found, dict):
            reason, found = found.get("reason"), found.get(key)
        else:
            reason = quality.get("reason")
        if found is None:
            why = f" ({reason})" if reason else ""
            raise BudgetError(
                f"budget {budget}: the release has no {budget} value{why}; remove the budget or rerun so it is computed"
            )
        return float(found)

    return value


_MEASURED: dict[str, Callable[[dict[str, Any], Any], float | str]] = {
    "size_mb": lambda artifact, limit: artifact["bytes"] / 1e6,
    "latency_ms": _latency,
    "latency_vs_baseline": _latency_ratio,
    "fid": _quality("fid", "fid", "delta"),
    "fd_surrogate": _quality("fd_surrogate", "fd_surrogate", "delta"),
    "psnr": _quality("psnr", "psnr_db"),
    "ssim": _quality("ssim", "ssim"),
}
