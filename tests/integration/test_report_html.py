"""report.html: one self-contained file (every image a data URI, nothing loaded from anywhere) that shows the
verdict, warnings, budgets, plots, the sensitivity heatmap and the labelled gallery, and that Chromium renders.

Built from a synthetic release (a manifest as `compressor run` writes it, its gallery and heatmap drawn from
small arrays): seconds, no model run. The screenshot test skips only where Debian's chromium is not installed.
"""

from __future__ import annotations

import base64
from html.parser import HTMLParser

import numpy as np
import pytest

from compressor.release.gallery import GALLERY_FILE, write_gallery
from compressor.release.html_report import REPORT_HTML_FILE, write_html_report
from compressor.release.report import render
from compressor.release.sensitivity_view import HEATMAP_FILE, write_heatmap
from compressor.testing.chromium import CHROMIUM, screenshot

FID_WARNING = "FID from 256 samples is biased upwards; use 2048 or more for a number comparable across runs"


def _timing(median: float, p90: float, batch: int, noisy: bool) -> dict:
    stats = {"median_ms": median, "p10_ms": median * 0.9, "p90_ms": p90, "mean_ms": median, "min_ms": median * 0.8,
             "runs": 50, "warmup": 10, "per_sample_ms": median / batch, "noisy": noisy}
    return stats | ({"noisy_reason": f"p90 {p90} ms is over twice the median {median} ms"} if noisy else {})


def _artifact(name: str, role: str, precision: str, size: int, psnr: float, scale: float, noisy_at_1: bool) -> dict:
    return {
        "file": name, "format": "onnx", "precision": precision, "role": role, "sha256": "ab" * 32, "bytes": size,
        "runtime": "onnxruntime",
        "parity": {"max_abs_error": 1e-3, "psnr_db": psnr + 0.2, "samples": 16, "ok": True},
        "latency": {"batches": {"1": _timing(0.34 * scale, 4.61 * scale if noisy_at_1 else 0.4 * scale, 1, noisy_at_1),
                                "16": _timing(6.0 * scale, 7.0 * scale, 16, False)},
                    "threads": 2, "provider": "CPUExecutionProvider"},
        "quality": {"samples": 256, "psnr_db": psnr, "ssim": 0.99,
                    "fd_surrogate": {"value": 0.3, "reference_model_score": 0.29, "delta": 0.01 if precision == "int8" else 0.0}},
    }


def _sensitivity_table() -> dict:
    groups = {"blocks.0": 22.0, "blocks.1": 31.0}
    return {
        "settings": {"ratios": [0.25, 0.5], "multiple": 8, "samples": 16, "precisions": ["int8"]},
        "channels": {name: {"channels": 32, "settings": {"0.25": {"kept": 24, "psnr_db": psnr + 6, "macs_fraction": 0.8},
                                                          "0.5": {"kept": 16, "psnr_db": psnr, "macs_fraction": 0.6}}}
                     for name, psnr in groups.items()},
        "precision": {"project": {"int8": {"psnr_db": 44.0}}, "head.0": {"int8": {"psnr_db": 39.0}}},
        "not_prunable": {},
    }


def _manifest(gallery: dict) -> dict:
    return {
        "schema_version": 3, "status": "complete", "verdict": "fail",
        "started_at": "2025-03-01T12:00:00Z", "finished_at": "2025-03-01T12:01:05Z", "runtime": "onnxruntime",
        "versions": {"compressor": "0.1.0", "python": "3.11", "platform": "Linux"},
        "host": {"cpu_model": "Test CPU 9000", "cpu_flags": ["avx2", "avx512_vnni"], "cores": 2, "cores_usable": 2},
        "input": {"path": "examples/tiny", "format": "folder", "sha256": "cd" * 32, "files": []},
        "model": {"card": {"name": "tiny-vae", "inputs": {}}, "parameters": 1000, "macs_per_sample": 10_000,
                  "fp32_bytes": 4000},
        "config": {"target": {"name": "cpu-x86", "runtime": {"kind": "onnxruntime"}}, "profile": {"name": "balanced"}},
        "config_sha256": "ef" * 32, "seed": 0,
        "stages": [{"name": "load", "seconds": 0.1},
                   {"name": "sensitivity", "seconds": 2.0,
                    "metrics": {"sensitivity": _sensitivity_table(), "heatmap": HEATMAP_FILE}}],
        "artifacts": {"model.fp32.onnx": _artifact("model.fp32.onnx", "baseline", "fp32", 990_000, 147.5, 1.0, False),
                      "model.onnx": _artifact("model.onnx", "final", "int8", 350_000, 45.5, 0.6, True)},
        "quality_reference": {"samples": 256, "warnings": [FID_WARNING]},
        "gallery": gallery,
        "budgets": {"size_mb": {"value": 0.35, "limit": 0.3, "bound": "max", "ok": False},
                    "psnr": {"value": 45.5, "limit": 35.0, "bound": "min", "ok": True}},
    }


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A release folder holding a gallery (sample 3 identical, sample 5 the worst), a heatmap and report.html."""
    folder = tmp_path_factory.mktemp("release")
    rng = np.random.default_rng(0)
    reference = np.tanh(rng.normal(size=(10, 1, 32, 32)))
    actual = np.clip(reference + rng.normal(0, 0.005, reference.shape), -1, 1)
    actual[2] = reference[2]
    actual[4, :, 8:16, 8:16] += 0.1
    gallery = write_gallery(folder / GALLERY_FILE, reference, actual, (-1.0, 1.0), "model.onnx") | {"artifact": "model.onnx"}
    manifest = _manifest(gallery)
    write_heatmap(_sensitivity_table(), folder / HEATMAP_FILE)
    path = write_html_report(manifest, folder / REPORT_HTML_FILE)
    return manifest, path


class _Page(HTMLParser):
    """What the tests read of the page: every src/href/url, the images' sources and alt texts, the visible text."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.images: list[dict[str, str]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.links += [value for key, value in attrs if key in ("src", "href", "srcset", "action") and value]
        if tag == "img":
            self.images.append(attributes)

    def handle_data(self, data):
        self.text.append(data)


def _page(path) -> tuple[_Page, str]:
    html = path.read_text()
    page = _Page()
    page.feed(html)
    return page, " ".join(" ".join(page.text).split())


def test_the_page_is_self_contained(release):
    _, path = release
    page, _ = _page(path)
    html = path.read_text()
    assert "http://" not in html and "https://" not in html and "<script" not in html
    assert len(page.images) == 4  # latency, quality vs size, sensitivity heatmap, gallery
    for image in page.images:
        assert image["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(image["src"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(link.startswith("data:") for link in page.links)


def test_the_page_shows_verdict_times_host_warnings_and_budgets(release):
    _, path = release
    _, text = _page(path)
    assert "FAIL status complete" in text and "2025-03-01T12:00:00Z to 2025-03-01T12:01:05Z (65 s)" in text
    assert "Test CPU 9000, 2 cores (2 usable), flags avx2 avx512_vnni" in text
    assert FID_WARNING in text and "model.onnx latency at batch 1 is noisy" in text
    assert "size_mb 0.35 max 0.3 FAIL" in text and "psnr 45.5 min 35 pass" in text
    assert "noisy" in text.split("Artifacts", 1)[1]  # the noisy timing is marked in the artifacts table too


def test_the_gallery_is_labelled_with_its_scale_and_each_samples_psnr(release):
    manifest, path = release
    page, text = _page(path)
    gallery = manifest["gallery"]
    assert "Rows: original (the torch model), model.onnx on the same latents, and |diff|" in text
    assert f"heat map scaled to the largest difference shown (black = identical, brightest = {gallery['diff_max']:.3g})" in text
    assert gallery["psnr_db"][2] is None and "identical" in text  # the identical sample
    worst = min(value for value in gallery["psnr_db"] if value is not None)
    assert gallery["psnr_db"].index(worst) == 4 and f"<b>{worst:.1f}</b>" in path.read_text()
    row = text.split("worst in bold):", 1)[1].split("PSNR dB", 1)[1].split("Steps", 1)[0].split()
    assert len(row) == 10 and row[2] == "identical"  # one PSNR per sample, in gallery order
    assert {"latency per batch size", "quality vs size", "sensitivity heatmap", "original vs model.onnx"} == {
        image["alt"] for image in page.images}


def test_report_md_shows_the_same_verdict_times_host_warnings_and_noisy_marks(release):
    manifest, _ = release
    report = render(manifest)
    assert "Verdict: **FAIL**" in report and "(65 s)" in report and "Test CPU 9000" in report
    assert "## Warnings" in report and FID_WARNING in report
    assert "| `model.onnx` | 1 | 0.204 **noisy** |" in report and "| `model.onnx` | 16 | 3.600 |" in report
    assert "PSNR per sample (dB, in gallery order): " in report and ", identical, " in report


def test_a_schema_2_manifest_still_renders_with_its_verdict_from_the_budgets(release, tmp_path):
    manifest, _ = release
    old = {key: value for key, value in manifest.items() if key not in ("verdict", "started_at", "finished_at", "host")}
    old["gallery"] = {"file": GALLERY_FILE, "samples": 10, "artifact": "model.onnx"}
    for record in old["artifacts"].values():
        for stats in record["latency"]["batches"].values():
            for key in ("p10_ms", "noisy", "noisy_reason"):
                stats.pop(key, None)
    _, text = _page(write_html_report(old, tmp_path / REPORT_HTML_FILE))
    assert "FAIL status complete" in text  # the badge, from the budgets (the budget table says FAIL either way)
    assert "start and end times not recorded" in text and "Host: not recorded" in text
    assert "(gallery file not found)" in text and "their difference x4" in text


@pytest.mark.skipif(not CHROMIUM.is_file(), reason="needs Debian's chromium (apt-get install chromium)")
def test_chromium_renders_the_plots_and_the_gallery(release, tmp_path):
    import matplotlib.image

    _, path = release
    png = screenshot(path, tmp_path / "report.png", width=1200, height=2400)
    pixels = matplotlib.image.imread(png)[..., :3]
    assert pixels.shape == (2400, 1200, 3)
    assert pixels.std() > 0.1  # not a blank page
    colours = {tuple(colour) for colour in np.round(pixels.reshape(-1, 3) * 15).astype(int)}
    assert len(colours) > 200  # plots, heat maps and badges, not text on white alone
    red_badge = np.all(np.abs(pixels - np.array([0xCF, 0x22, 0x2E]) / 255) < 0.03, axis=-1)
    assert red_badge[:300].sum() > 500  # the FAIL badge at the top of the page
