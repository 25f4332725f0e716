"""The HTML report's plots, drawn from the manifest alone and returned as PNG bytes (None when there is no data).

- latency: median milliseconds per call and per sample at each batch size the target timed, one line per
  artifact, whiskers from p10 to p90 (min to p90 in manifests older than schema 3, which have no p10), and a
  red ring on every timing marked `noisy` (compressor/evaluate/latency.py).
- quality vs size: each artifact's PSNR vs the original model against its size in MB, and, where recorded,
  its FID (else FD-surrogate) increase over the original model's score; dashed lines at the budgets' limits.

Drawn with matplotlib's object API on the Agg canvas (no pyplot: no global figure state, no display needed).
"""

from __future__ import annotations

import io
from typing import Any

from compressor.evaluate.latency import NOISY_P90_OVER_MEDIAN
from compressor.release.report import psnr_text

# Above ~80 dB two outputs differ by float rounding only (the digits-vae demo's fp32 baseline scores 147 dB,
# identical ones infinity): such points are drawn at this height, with their value in their label, so they do not
# squash the compressed artifacts' (45.5 dB for that demo's int8) into a line at the bottom.
PSNR_DRAWN_MAX = 80.0
DPI = 100

Manifest = dict[str, Any]


def latency_plot(manifest: Manifest) -> bytes | None:
    """Latency per batch size for each timed artifact (per call and per sample), or None if none was timed."""
    timed = {name: record["latency"]["batches"] for name, record in manifest.get("artifacts", {}).items()
             if (record.get("latency") or {}).get("batches")}
    if not timed:
        return None
    figure, (per_call, per_sample) = _figure(2, width=11, height=4.2)
    noisy_seen = False
    for index, (name, batches) in enumerate(timed.items()):
        colour = f"C{index}"
        points = sorted((int(batch), stats) for batch, stats in batches.items())
        for ax, divide in ((per_call, False), (per_sample, True)):
            noisy_seen |= _latency_line(ax, name, points, colour, divide)
    per_call.set(title="Median latency per call (whiskers p10-p90)", xlabel="batch size", ylabel="ms per call")
    per_sample.set(title="Median latency per sample", xlabel="batch size", ylabel="ms per sample")
    _plain_log_scale(per_call)
    for ax in (per_call, per_sample):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({batch for batches in timed.values() for batch in map(int, batches)}))
        ax.get_xaxis().set_major_formatter("{x:g}")
        ax.grid(alpha=0.3)
    if noisy_seen:
        per_call.plot([], [], "o", mfc="none", mec="red", ms=13, mew=2, label=f"noisy: p90 > {NOISY_P90_OVER_MEDIAN:g}x median")
    per_call.legend(fontsize=9)
    return _png(figure)


def _plain_log_scale(ax) -> None:
    """A log y axis with ticks at 1, 2 and 5 times powers of ten, labelled 0.2, 0.5, 1, 2 (the default's 2x10^-1
    is harder to read at a glance)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _latency_line(ax, name: str, points: list[tuple[int, dict[str, Any]]], colour: str, per_sample: bool) -> bool:
    """One artifact's medians with p10-p90 whiskers; rings its noisy points; returns whether it had any."""
    batches = [batch for batch, _ in points]
    divisor = [batch if per_sample else 1 for batch in batches]
    medians = [stats["median_ms"] / d for (_, stats), d in zip(points, divisor)]
    lows = [stats.get("p10_ms", stats.get("min_ms", stats["median_ms"])) / d for (_, stats), d in zip(points, divisor)]
    highs = [stats["p90_ms"] / d for (_, stats), d in zip(points, divisor)]
    whiskers = [[m - low for m, low in zip(medians, lows)], [high - m for m, high in zip(medians, highs)]]
    ax.errorbar(batches, medians, yerr=whiskers, fmt="o-", color=colour, capsize=4, label=name)
    noisy = [(batch, m) for (batch, stats), m in zip(points, medians) if stats.get("noisy")]
    if noisy:
        ax.plot(*zip(*noisy), "o", mfc="none", mec="red", ms=13, mew=2)
    return bool(noisy)


def quality_size_plot(manifest: Manifest) -> bytes | None:
    """Quality against size for each artifact with a PSNR (and a distance panel when one was computed), or None."""
    artifacts = {name: record for name, record in manifest.get("artifacts", {}).items()
                 if "psnr_db" in (record.get("quality") or {})}
    if not artifacts:
        return None
    metric = distance_metric(artifacts)
    figure, axes = _figure(2 if metric else 1, width=11 if metric else 6, height=4.2)
    checks = manifest.get("budgets") or {}
    _psnr_panel(axes[0], artifacts, checks)
    if metric:
        _distance_panel(axes[1], artifacts, metric, checks)
    return _png(figure)


def distance_metric(artifacts: dict[str, dict[str, Any]]) -> str | None:
    """'fid' when some artifact has an FID value, else 'fd_surrogate' when some has that, else None."""
    for metric in ("fid", "fd_surrogate"):
        if any("delta" in ((record.get("quality") or {}).get(metric) or {}) for record in artifacts.values()):
            return metric
    return None


def _psnr_panel(ax, artifacts: dict[str, dict[str, Any]], checks: dict[str, Any]) -> None:
    for index, (name, record) in enumerate(artifacts.items()):
        value = record["quality"]["psnr_db"]
        drawn = min(value, PSNR_DRAWN_MAX)
        _labelled_point(ax, record["bytes"] / 1e6, drawn, f"{name}\n{psnr_text(value)}", f"C{index}")
    _limit_line(ax, checks.get("psnr"), horizontal=True)
    _limit_line(ax, checks.get("size_mb"), horizontal=False)
    ax.set(title=f"PSNR vs the original model (drawn at most {PSNR_DRAWN_MAX:g} dB)", xlabel="size (MB)",
           ylabel="PSNR (dB), higher is closer")
    _finish_quality_axes(ax)


def _distance_panel(ax, artifacts: dict[str, dict[str, Any]], metric: str, checks: dict[str, Any]) -> None:
    label = {"fid": "FID", "fd_surrogate": "FD-surrogate"}[metric]
    for index, (name, record) in enumerate(artifacts.items()):
        entry = record["quality"].get(metric) or {}
        if "delta" in entry:
            _labelled_point(ax, record["bytes"] / 1e6, entry["delta"], f"{name}\n{entry['delta']:+.3g}", f"C{index}")
    _limit_line(ax, checks.get(metric), horizontal=True)
    _limit_line(ax, checks.get("size_mb"), horizontal=False)
    ax.axhline(0, color="gray", lw=0.8)
    ax.set(title=f"{label} increase over the original model", xlabel="size (MB)", ylabel=f"{label} delta, lower is better")
    _finish_quality_axes(ax)


def _finish_quality_axes(ax) -> None:
    """Room for the point labels, a grid, and a legend when budget lines were drawn."""
    ax.margins(x=0.35, y=0.25)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def _labelled_point(ax, x: float, y: float, label: str, colour: str) -> None:
    ax.plot([x], [y], "o", color=colour, ms=9)
    ax.annotate(label, (x, y), textcoords="offset points", xytext=(8, 6), fontsize=9)


def _limit_line(ax, check: dict[str, Any] | None, horizontal: bool) -> None:
    """A dashed line at a budget's limit, red when the budget failed."""
    if not check:
        return
    colour = "red" if check.get("ok") is False else "gray"
    draw = ax.axhline if horizontal else ax.axvline
    draw(check["limit"], ls="--", color=colour, lw=1, label=f"budget {check['bound']} {check['limit']:g}")


def canvas_figure(width: float, height: float):
    """A matplotlib Figure on the Agg canvas (no pyplot: no global figure state, no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _figure(panels: int, width: float, height: float):
    figure = canvas_figure(width, height)
    # Side by side panels share their x axis (batch size, or MB): a panel with fewer points keeps the same scale.
    return figure, figure.subplots(1, panels, squeeze=False, sharex=True)[0]


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()
