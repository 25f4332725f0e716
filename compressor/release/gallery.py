"""The report's gallery: reference and artifact samples on the same latents, with their difference.

Each group of up to 8 latents is three labelled rows: the original model's samples, the artifact's, and
|artifact - original| as a heat map (black = identical). The heat map is scaled to the largest difference
among the samples shown, and its label and colour bar give that scale: a fixed gain left a 46 dB int8 model's
difference all but black, telling a person nothing about where it changed. Each column carries its sample's
PSNR, so the worst sample is found at a glance.

Drawn with matplotlib's object API on the Agg canvas (no pyplot: no global figure state, no display needed).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from compressor.evaluate.paired import psnr

GALLERY_FILE = "gallery.png"
COLUMNS = 8
CELL_INCHES = 1.1  # one sample's square on the figure; 32-pixel digits are hard to see any smaller
DPI = 100


def write_gallery(path: Path, reference: np.ndarray, actual: np.ndarray, value_range: tuple[float, float],
                  artifact: str = "artifact") -> dict[str, Any]:
    """Draw [N, C, H, W] reference and artifact images (C = 1 or 3) in `value_range` to `path` as a labelled PNG;
    returns the manifest's record of it: file, samples, each sample's PSNR (None: identical) and the diff scale."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    reference, actual = np.asarray(reference, np.float64), np.asarray(actual, np.float64)
    data_range = float(value_range[1] - value_range[0])
    difference = np.abs(actual - reference).max(axis=1)  # [N, H, W]: the largest change over colour channels
    scale = float(difference.max())
    scores = [sample_psnr(ref, art, data_range) for ref, art in zip(reference, actual)]
    groups = math.ceil(len(reference) / COLUMNS)
    columns = min(len(reference), COLUMNS)
    figure = Figure(figsize=(2.2 + CELL_INCHES * columns, 0.6 + groups * (3 * CELL_INCHES + 0.45)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(3 * groups, columns, squeeze=False)
    rows = (_unit(reference, value_range), _unit(actual, value_range), difference)
    for group in range(groups):
        _draw_group(figure, axes[3 * group : 3 * group + 3], rows, group * COLUMNS, scale, scores, artifact)
    figure.suptitle(f"Original model vs {artifact} on the same {len(reference)} latents; PSNR per sample under each column")
    path = Path(path)
    figure.savefig(path, dpi=DPI)
    return {"file": path.name, "samples": len(reference), "psnr_db": [_json_psnr(score) for score in scores],
            "diff_max": scale, "value_range": [float(value_range[0]), float(value_range[1])]}


def sample_psnr(reference: np.ndarray, actual: np.ndarray, data_range: float) -> float:
    """One sample's PSNR (dB) vs the reference; infinite when identical."""
    return psnr(reference, actual, data_range)


def diff_label(scale: float) -> str:
    """The difference row's label: how much the heat map magnifies, e.g. '|diff| × 1/0.0121' (brightest = 0.0121)."""
    return "|diff|\n(identical)" if scale == 0 else f"|diff|\n× 1/{scale:.3g}"


def psnr_text(score: float | None) -> str:
    """'45.3 dB', or 'identical' for an infinite (or unrecorded, None) PSNR."""
    return "identical" if score is None or math.isinf(score) else f"{score:.1f} dB"


def _draw_group(figure, axes: np.ndarray, rows, start: int, scale: float, scores: list[float], artifact: str) -> None:
    """Three rows of axes (original, artifact, difference) for the samples from `start` on; empty cells hidden."""
    original, compressed, difference = rows
    heat = None
    for column in range(axes.shape[1]):
        index = start + column
        if index >= len(original):
            for ax in axes[:, column]:
                ax.set_visible(False)
            continue
        _show_image(axes[0, column], original[index])
        _show_image(axes[1, column], compressed[index])
        heat = axes[2, column].imshow(difference[index], cmap="inferno", vmin=0, vmax=scale or 1, interpolation="nearest")
        axes[2, column].set_xlabel(psnr_text(scores[index]), fontsize=10)
    for ax, label in zip(axes[:, 0], ("original", _short(artifact), diff_label(scale))):
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=10)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    figure.colorbar(heat, ax=list(axes[2]), shrink=0.9, pad=0.01, label="|artifact - original|")


def _show_image(ax, image: np.ndarray) -> None:
    """A [C, H, W] image in [0, 1]: gray for one channel, colour for three."""
    if image.shape[0] == 1:
        ax.imshow(image[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(image.transpose(1, 2, 0), interpolation="nearest")


def _unit(images: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    low, high = value_range
    return np.clip((images - low) / (high - low), 0, 1)


def _short(name: str, width: int = 18) -> str:
    """A row label that fits beside the images: long artifact names cut in the middle."""
    return name if len(name) <= width else f"{name[: width // 2 - 1]}...{name[-(width // 2 - 2):]}"


def _json_psnr(score: float) -> float | None:
    """JSON has no infinity: an identical sample's PSNR is recorded as None."""
    return None if math.isinf(score) else round(score, 2)
