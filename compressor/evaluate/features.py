"""What a feature extractor is (FID's Inception, the FD-surrogate) and the batched loop that runs one."""

from __future__ import annotations

from typing import Callable, Protocol

import numpy as np
import torch


class FeatureExtractor(Protocol):
    """Maps [N, 3, H, W] float32 images in [0, 1] to [N, dim] features; `sha256` identifies its weights."""

    name: str
    sha256: str
    dim: int

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


def extract(
    extractor: FeatureExtractor, images: np.ndarray, batch: int = 32, progress: Callable[[str], None] | None = None
) -> np.ndarray:
    """Features of every image, `batch` at a time; `progress` is told 'name i/N images' after each batch."""
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(images), batch):
            chunk = torch.from_numpy(np.ascontiguousarray(images[start : start + batch], np.float32))
            chunks.append(extractor(chunk).double().numpy())
            if progress:
                progress(f"{extractor.name} features {min(start + batch, len(images))}/{len(images)} images")
    return np.concatenate(chunks)


def extract_cached(
    extractor: FeatureExtractor, images: np.ndarray, batch: int = 32, progress: Callable[[str], None] | None = None
) -> np.ndarray:
    """`extract`, cached by a hash of the images and the extractor's weights: the same images give the same
    features, so a rerun on the same model skips the reference model's Inception pass (minutes on a CPU)."""
    import hashlib

    from compressor.cache import cached_array

    images = np.ascontiguousarray(images, np.float32)
    digest = hashlib.sha256(f"{extractor.name}:{extractor.sha256}:{images.shape}".encode())
    digest.update(images.tobytes())
    return cached_array("features", digest.hexdigest()[:32], lambda: extract(extractor, images, batch, progress))
