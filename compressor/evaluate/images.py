"""Images as the feature extractors see them: [N, 3, H, W] float32 in [0, 1] on 8-bit levels.

Generated outputs are mapped from the model card's value range and rounded to 8-bit levels, because
that is what a saved sample holds (clean-fid showed that skipping the rounding shifts FID); grayscale
is repeated to three channels. Real images come from an `.npz` (array `images`, NCHW or NHWC, uint8
0..255 or float in [0, 1]) or a folder of PNG/JPEG files (read with pillow, part of the `[fid]` extra).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compressor.errors import CompressorError, first_line

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class ImageSetError(CompressorError):
    """Real images that cannot be read, or outputs that are not images."""


def is_image_batch(shape: tuple[int, ...]) -> bool:
    """True for [N, C, H, W] with 1 or 3 channels: the outputs image metrics apply to."""
    return len(shape) == 4 and shape[1] in (1, 3)


def to_unit_rgb(images: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """Model outputs in `value_range` -> [N, 3, H, W] float32 in [0, 1], rounded to 8-bit levels."""
    low, high = value_range
    unit = np.clip((np.asarray(images, np.float32) - low) / (high - low), 0, 1)
    unit = np.round(unit * 255) / 255
    return np.repeat(unit, 3, axis=1) if unit.shape[1] == 1 else unit


def load_real_images(path: Path) -> np.ndarray:
    """Real images from an .npz or a folder, as [N, 3, H, W] float32 in [0, 1]."""
    path = Path(path)
    if path.is_dir():
        images = _read_folder(path)
    elif path.suffix == ".npz" and path.is_file():
        images = _read_npz(path)
    else:
        raise ImageSetError(f"{path}: expected a folder of images or an .npz with an 'images' array")
    return _as_unit_nchw(images, path)


def _read_npz(path: Path) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as data:
            if "images" not in data:
                raise ImageSetError(f"{path}: no 'images' array (found {sorted(data.files)}); save it as images=...")
            return data["images"]
    except (OSError, ValueError) as exc:
        raise ImageSetError(f"{path}: unreadable .npz ({first_line(exc)})") from exc


def _read_folder(folder: Path) -> np.ndarray:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ImageSetError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    try:
        from PIL import Image
    except ImportError:
        raise ImageSetError(
            f"{folder}: reading image files needs pillow; pip install 'compressor[fid]', or pass an .npz of images"
        ) from None
    arrays = []
    for file in files:
        try:
            with Image.open(file) as image:
                arrays.append(np.asarray(image.convert("RGB"), np.uint8))
        except OSError as exc:
            raise ImageSetError(f"{file}: unreadable image ({first_line(exc)}); remove or replace it") from exc
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ImageSetError(f"{folder}: images of different sizes {sorted(shapes)[:3]}; resize them to one size first")
    return np.stack(arrays)


def _as_unit_nchw(images: np.ndarray, path: Path) -> np.ndarray:
    if images.ndim == 3:  # [N, H, W] grayscale
        images = images[:, None]
    if images.ndim != 4:
        raise ImageSetError(f"{path}: images must be [N, C, H, W] or [N, H, W, C], got shape {list(images.shape)}")
    if images.shape[1] not in (1, 3) and images.shape[-1] in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    if images.shape[1] not in (1, 3):
        raise ImageSetError(f"{path}: images need 1 or 3 channels, got shape {list(images.shape)}")
    if images.dtype == np.uint8:
        unit = images.astype(np.float32) / 255
    elif np.issubdtype(images.dtype, np.floating):
        if images.min() < 0 or images.max() > 1:
            raise ImageSetError(f"{path}: float images must lie in [0, 1] (found {images.min():.3g}..{images.max():.3g})")
        unit = images.astype(np.float32)
    else:
        raise ImageSetError(f"{path}: images must be uint8 (0..255) or float in [0, 1], got {images.dtype}")
    return np.repeat(unit, 3, axis=1) if unit.shape[1] == 1 else unit
