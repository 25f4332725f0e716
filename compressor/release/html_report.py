"""Render a manifest as report.html: one self-contained page beside report.md, with the plots a person would
rather look at than tables.

Sections: the verdict badge, run times and host; warnings; the budgets; the artifacts; latency per batch size
and quality against size (compressor/release/plots.py); the sensitivity heatmap when a stage measured one; the
labelled gallery with each sample's PSNR; the steps; provenance. Every image is embedded as a base64 data URI
and the CSS is inline, so the file can be mailed, attached to a CI run or opened offline, and it loads nothing
from anywhere (no scripts, no external URLs).

Like report.md it is a function of the manifest, plus the PNG files the manifest names in the release folder
(the gallery, the sensitivity heatmap); a file that is missing is left out, not an error.
"""

from __future__ import annotations

import base64
import math
from html import escape
from pathlib import Path
from typing import Any

from compressor.evaluate.latency import NOISY_P90_OVER_MEDIAN
from compressor.release import plots
from compressor.release.budgets import final_artifact, limit_text, value_text, verdict
from compressor.release.report import (
    REPORT_FILE,
    gallery_diff_text,
    host_text,
    psnr_text,
    release_verdict_of,
    report_warnings,
    run_times_text,
    sample_psnr_texts,
    write_report,
)

REPORT_HTML_FILE = "report.html"

Manifest = dict[str, Any]
Cell = str | tuple[str, str]  # HTML text, or (CSS class, HTML text)

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 24px auto;
       max-width: 1140px; color: #1d232a; line-height: 1.45; }
h1 { margin-bottom: 4px; } h2 { border-bottom: 1px solid #d6dbe0; padding-bottom: 4px; margin-top: 32px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 14px; }
th, td { border: 1px solid #d6dbe0; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f2f4f6; }
code { font-size: 13px; }
img { max-width: 100%; border: 1px solid #e3e6e9; }
.badge { display: inline-block; padding: 3px 12px; border-radius: 12px; color: white; font-weight: bold;
         letter-spacing: 0.05em; }
.pass { background: #1f883d; } .fail { background: #cf222e; } .pending { background: #bf8700; }
.unknown { background: #6e7781; }
td.pass, td.fail, td.pending { color: white; font-weight: bold; }
.noisy { color: #cf222e; font-weight: bold; }
.warnings { background: #fff8c5; border: 1px solid #d4a72c; padding: 8px 16px; border-radius: 6px; }
.meta { color: #57606a; }
"""


def write_reports(manifest: Manifest, folder: Path) -> None:
    """report.md and, beside it, report.html: what `compressor run` and `build-engine` write at the end."""
    write_report(manifest, Path(folder) / REPORT_FILE)
    write_html_report(manifest, Path(folder) / REPORT_HTML_FILE)


def write_html_report(manifest: Manifest, path: Path, images_dir: Path | None = None) -> Path:
    """Write report.html for `manifest` to `path`; the PNGs it names are read from `images_dir` (default: beside)."""
    path = Path(path)
    path.write_text(render_html(manifest, Path(images_dir) if images_dir else path.parent), encoding="utf-8")
    return path


def render_html(manifest: Manifest, images_dir: Path) -> str:
    sections = (
        _header(manifest), _warnings(manifest), _budgets(manifest), _artifacts(manifest), _plots(manifest),
        _sensitivity(manifest, images_dir), _gallery(manifest, images_dir), _steps(manifest), _provenance(manifest),
    )
    title = escape(f"{manifest['model']['card']['name']} for {manifest['config']['target']['name']}")
    body = "\n".join(section for section in sections if section)
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n"
            f"<style>{_STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


def _header(manifest: Manifest) -> str:
    card, target = manifest["model"]["card"], manifest["config"]["target"]
    release_verdict = release_verdict_of(manifest)
    return (
        f"<h1>{escape(card['name'])} for {escape(target['name'])}</h1>\n"
        f"<p><span class=\"badge {escape(release_verdict)}\">{escape(release_verdict.upper())}</span> "
        f"status {escape(str(manifest.get('status', 'unknown')))}, "
        f"profile <code>{escape(manifest['config']['profile']['name'])}</code>, "
        f"runtime <code>{escape(target['runtime']['kind'])}</code>, seed {manifest['seed']}</p>\n"
        f"<p class=\"meta\">Run: {escape(run_times_text(manifest))}<br>Host: {escape(host_text(manifest.get('host')))}</p>"
    )


def _warnings(manifest: Manifest) -> str:
    warnings = report_warnings(manifest)
    if not warnings:
        return ""
    items = "".join(f"<li>{escape(warning)}</li>" for warning in warnings)
    return f"<h2>Warnings</h2>\n<div class=\"warnings\"><ul>{items}</ul></div>"


def _budgets(manifest: Manifest) -> str:
    checks = manifest.get("budgets")
    if not checks:
        return "<h2>Budgets</h2>\n<p>The profile sets no budgets.</p>" if "budgets" in manifest else ""
    rows = [[escape(name), escape(value_text(check)), escape(limit_text(check)), _verdict_cell(check)]
            for name, check in checks.items()]
    return f"<h2>Budgets ({escape(final_artifact(manifest)[0])})</h2>\n" + _table(["budget", "value", "limit", "verdict"], rows)


def _verdict_cell(check: dict[str, Any]) -> tuple[str, str]:
    """A verdict cell coloured by its CSS class (pass, fail, pending)."""
    word = verdict(check)
    why = f": {escape(check['pending'])}" if check["ok"] is None else ""
    return word.lower(), f"{escape(word)}{why}"


def _artifacts(manifest: Manifest) -> str:
    records = manifest.get("artifacts", {})
    if not records:
        return ""
    header = ["file", "role", "precision", "size", "parity vs torch", "PSNR dB", "SSIM", "FID / FD-surrogate delta",
              "median latency", "vs baseline"]
    return "<h2>Artifacts</h2>\n" + _table(header, [_artifact_row(name, record) for name, record in records.items()])


def _artifact_row(name: str, record: dict[str, Any]) -> list[str]:
    quality = record.get("quality") or {}
    parity = record.get("parity")
    parity_text = "not checked" if not parity else f"{'pass' if parity['ok'] else 'FAIL'}: {psnr_text(parity['psnr_db'])}"
    relative = record.get("latency_vs_fp32")
    return [
        f"<code>{escape(name)}</code>", escape(record.get("role", "-")), escape(record.get("precision", "-")),
        f"{record['bytes'] / 1e6:.2f} MB", escape(parity_text),
        psnr_text(quality["psnr_db"]) if "psnr_db" in quality else "-",
        f"{quality['ssim']:.4f}" if "ssim" in quality else "-",
        escape(_distances(quality)), _latency_cell(record.get("latency") or {}),
        f"{relative['ratio']:.2f}x at batch {relative['batch']}" if relative else "-",
    ]


def _distances(quality: dict[str, Any]) -> str:
    found = [f"{label} {quality[key]['delta']:+.3g}" for key, label in (("fid", "FID"), ("fd_surrogate", "FD-surrogate"))
             if "delta" in (quality.get(key) or {})]
    return ", ".join(found) or "-"


def _latency_cell(latency: dict[str, Any]) -> str:
    """The median at the largest batch timed (noisy marked), or why there is none yet."""
    if "pending" in latency:
        return f"pending: {escape(latency['pending'])}"
    batches = latency.get("batches") or {}
    if not batches:
        return "-"
    batch = max(batches, key=int)
    stats = batches[batch]
    noisy = " <span class=\"noisy\">noisy</span>" if stats.get("noisy") else ""
    return f"{stats['median_ms']:.3f} ms at batch {escape(batch)}{noisy}"


def _plots(manifest: Manifest) -> str:
    parts = []
    latency = plots.latency_plot(manifest)
    if latency:
        parts.append("<h2>Latency per batch size</h2>\n<p>Median of the timed runs after warm-up; whiskers from p10 to p90. "
                     f"A red ring marks a <span class=\"noisy\">noisy</span> timing (p90 over {NOISY_P90_OVER_MEDIAN:g}x the median): the "
                     "machine was busy, do not compare it with other timings.</p>\n" + _image(latency, "latency per batch size"))
    quality = plots.quality_size_plot(manifest)
    if quality:
        parts.append("<h2>Quality vs size</h2>\n<p>Each artifact against the original model on the same seeded latents; "
                     "dashed lines are budget limits (red: failed).</p>\n" + _image(quality, "quality vs size"))
    return "\n".join(parts)


def _sensitivity(manifest: Manifest, images_dir: Path) -> str:
    """The heatmap a sensitivity-measuring stage drew into the release, with its one-line reading."""
    from compressor.release.sensitivity_view import reading

    step = next((s for s in manifest.get("stages", []) if "sensitivity" in s.get("metrics", {})), None)
    if step is None:
        return ""
    heatmap = _read_png(images_dir, step["metrics"].get("heatmap"))
    image = _image(heatmap, "sensitivity heatmap") if heatmap else "<p>(heatmap file not found)</p>"
    return (f"<h2>Sensitivity ({escape(step['name'])} stage)</h2>\n<p>{escape(reading(step['metrics']['sensitivity']))}</p>\n"
            + image)


def _gallery(manifest: Manifest, images_dir: Path) -> str:
    gallery = manifest.get("gallery")
    if not gallery:
        return ""
    picture = _read_png(images_dir, gallery["file"])
    artifact = escape(gallery["artifact"])
    rows = (f"<p>Rows: <b>original</b> (the torch model), <b>{artifact}</b> on the same latents, and "
            f"<b>|diff|</b>: {escape(gallery_diff_text(gallery))}.</p>\n")
    image = _image(picture, f"original vs {gallery['artifact']}") if picture else "<p>(gallery file not found)</p>"
    return "<h2>Gallery</h2>\n" + rows + image + _sample_psnr_table(gallery)


def _sample_psnr_table(gallery: dict[str, Any]) -> str:
    """Each sample's PSNR, worst first marked: the numbers under the gallery's columns, as text."""
    texts = sample_psnr_texts(gallery)
    if not texts:
        return ""
    values = [math.inf if value is None else value for value in gallery["psnr_db"]]
    worst = values.index(min(values)) if min(values) < math.inf else None  # all identical: no worst to mark
    cells = [f"<b>{escape(text)}</b>" if index == worst else escape(text) for index, text in enumerate(texts)]
    return ("<p>PSNR per sample (dB, worst in bold):</p>\n"
            + _table(["sample", *map(str, range(1, len(texts) + 1))], [["PSNR dB", *cells]]))


def _steps(manifest: Manifest) -> str:
    rows = [[escape(step["name"]), f"{step['seconds']:.2f}"] for step in manifest.get("stages", [])]
    return "<h2>Steps</h2>\n" + _table(["step", "seconds"], rows) if rows else ""


def _provenance(manifest: Manifest) -> str:
    source, versions = manifest["input"], manifest["versions"]
    listed = ", ".join(f"{name} {version}" for name, version in versions.items() if name != "platform")
    return (
        "<h2>Provenance</h2>\n<ul>"
        f"<li>input <code>{escape(source['path'])}</code> ({escape(source['format'])}), "
        f"sha256 <code>{escape(source['sha256'])}</code></li>"
        f"<li>config sha256 <code>{escape(manifest['config_sha256'])}</code>, schema {manifest.get('schema_version', '-')}</li>"
        f"<li>versions: {escape(listed)}</li><li>platform: {escape(versions.get('platform', '-'))}</li></ul>"
    )


def _table(header: list[str], rows: list[list[Cell]]) -> str:
    """An HTML table of already-escaped cells; a (class, text) cell gets that CSS class (the verdict colours)."""
    head = "".join(f"<th>{cell}</th>" for cell in header)
    body = "".join("<tr>" + "".join(_cell(cell) for cell in row) + "</tr>\n" for row in rows)
    return f"<table>\n<tr>{head}</tr>\n{body}</table>"


def _cell(cell: Cell) -> str:
    if isinstance(cell, tuple):
        css, text = cell
        return f"<td class=\"{css}\">{text}</td>"
    return f"<td>{cell}</td>"


def _image(png: bytes, alt: str) -> str:
    return f"<p><img alt=\"{escape(alt)}\" src=\"data:image/png;base64,{base64.b64encode(png).decode('ascii')}\"></p>"


def _read_png(folder: Path, name: str | None) -> bytes | None:
    """The bytes of a PNG the manifest names in the release folder, or None when it is not there."""
    if not name:
        return None
    path = folder / Path(name).name  # a name, never a path out of the release folder
    return path.read_bytes() if path.is_file() else None



