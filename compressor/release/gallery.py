"""The report's gallery: reference and artifact samples on the same latents, with their difference.

Each group of up to 8 latents is three labelled rows: the original model's samples, the artifact's, and
|artifact - original| as a heat map (black = identical). The heat map is scaled to the largest difference
among the samples shown, and its label and colour bar give that scale: a fixed gain left a 46 dB int8 model's
difference all but black, telling a person nothing about where it changed. Each column carries its sample's
PSNR, so the worst sample is found at a glance.

Drawn on the same Agg canvas as the report's plots (plots.canvas_figure).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from compressor.evaluate.paired import psnr
from compressor.release.plots import DPI, canvas_figure
from compressor.release.report import psnr_text

GALLERY_FILE = "gallery.png"
COLUMNS = 8
CELL_INCHES = 1.1  # one sample's square on the figure; 32-pixel digits are hard to see any smaller
GAP = 2  # pixels of white between two samples in a row


def write_gallery(path: Path, reference: np.ndarray, actual: np.ndarray, value_range: tuple[float, float],
                  artifact: str = "artifact") -> dict[str, Any]:
    """Draw [N, C, H, W] reference and artifact images (C = 1 or 3) in `value_range` to `path` as a labelled PNG;
    returns the manifest's record of it: file, samples, each sample's PSNR (None: identical) and the diff scale."""
    reference, actual = np.asarray(reference, np.float64), np.asarray(actual, np.float64)
    data_range = float(value_range[1] - value_range[0])
    difference = np.abs(actual - reference).max(axis=1, keepdims=True)  # the largest change over colour channels
    scale = float(difference.max())
    scores = [psnr(ref, art, data_range) for ref, art in zip(reference, actual)]
    groups = math.ceil(len(reference) / COLUMNS)
    columns = min(len(reference), COLUMNS)
    figure = canvas_figure(2.2 + CELL_INCHES * columns, 0.6 + groups * (3 * CELL_INCHES + 0.45))
    # One axes per row of samples, each showing its samples side by side: a grid of one axes per sample drew
    # 48 axes for 16 samples: 2.1 s of a digits-vae run under cProfile.
    axes = figure.subplots(3 * groups, 1, squeeze=False)[:, 0]
    rows = (_unit(reference, value_range), _unit(actual, value_range), difference)
    for group in range(groups):
        _draw_group(figure, axes[3 * group : 3 * group + 3], rows, slice(group * COLUMNS, (group + 1) * COLUMNS), scale,
                    scores, artifact, columns)
    figure.suptitle(f"Original model vs {artifact} on the same {len(reference)} latents; PSNR per sample under each column")
    path = Path(path)
    figure.savefig(path, dpi=DPI)
    return {"file": path.name, "samples": len(reference), "psnr_db": [_json_psnr(score) for score in scores],
            "diff_max": scale, "value_range": [float(value_range[0]), float(value_range[1])]}


def diff_label(scale: float) -> str:
    """The difference row's label: how much the heat map magnifies, e.g. '|diff| × 1/0.0121' (brightest = 0.0121)."""
    return "|diff|\n(identical)" if scale == 0 else f"|diff|\n× 1/{scale:.3g}"


def _draw_group(figure, axes: np.ndarray, rows, chosen: slice, scale: float, scores: list[float], artifact: str,
                columns: int) -> None:
    """Three rows (original, artifact, difference) of the samples `chosen`, each sample's PSNR under its column."""
    original, compressed, difference = (row[chosen] for row in rows)
    _show_strip(axes[0], original, columns)
    _show_strip(axes[1], compressed, columns)
    heat = _show_strip(axes[2], difference, columns, cmap="inferno", vmax=scale or 1)
    width = original.shape[-1] + GAP
    axes[2].set_xticks([index * width + original.shape[-1] / 2 for index in range(len(original))],
                       [psnr_text(score) for score in scores[chosen]], fontsize=10)
    axes[2].tick_params(length=0)
    for ax, label in zip(axes, ("original", _short(artifact), diff_label(scale))):
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=10)
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    for ax in axes[:2]:
        ax.set_xticks([])
    figure.colorbar(heat, ax=axes[2], shrink=0.9, pad=0.01, label="|artifact - original|")


def _show_strip(ax, images: np.ndarray, columns: int, cmap: str = "gray", vmax: float = 1.0):
    """[N, C, H, W] images in [0, vmax] side by side in one image (gray or a heat map for one channel, colour for
    three), padded with white to `columns` samples so every row has the same width."""
    count, channels, height, width = images.shape
    strip = np.full((channels, height, columns * (width + GAP) - GAP), np.nan)
    for index, image in enumerate(images):
        strip[:, :, index * (width + GAP) : index * (width + GAP) + width] = image
    if channels == 3:
        return ax.imshow(np.nan_to_num(strip.transpose(1, 2, 0), nan=1.0), interpolation="nearest")
    from matplotlib import colormaps

    colours = colormaps[cmap].with_extremes(bad="white")  # the gaps (NaN) stay white
    return ax.imshow(np.ma.masked_invalid(strip[0]), cmap=colours, vmin=0, vmax=vmax, interpolation="nearest")


def _unit(images: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    low, high = value_range
    return np.clip((images - low) / (high - low), 0, 1)


def _short(name: str, width: int = 18) -> str:
    """A row label that fits beside the images: long artifact names cut in the middle."""
    return name if len(name) <= width else f"{name[: width // 2 - 1]}...{name[-(width // 2 - 2):]}"


def _json_psnr(score: float) -> float | None:
    """JSON has no infinity: an identical sample's PSNR is recorded as None."""
    return None if math.isinf(score) else round(score, 2)
