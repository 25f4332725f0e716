"""What a feature extractor is (FID's Inception, the FD-surrogate), the batched loop that runs one, and the cache
of a reference model's own sample features."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any, Callable, Protocol

import numpy as np
import torch

from compressor.cache import cache_dir, cached_array

CACHE_KIND = "reference-features"
IMAGE_CACHE_KIND = "image-features"
CACHE_VERSION = 1  # bump when what a key names changes meaning (the entries it named are then never read)


class FeatureExtractor(Protocol):
    """Maps [N, 3, H, W] float32 images in [0, 1] to [N, dim] features; `sha256` identifies its weights."""

    name: str
    sha256: str
    dim: int

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


def extract(
    extractor: FeatureExtractor, images: np.ndarray, batch: int = 32, progress: Callable[..., None] | None = None
) -> np.ndarray:
    """Features of every image, `batch` at a time; `progress(text, done, total)` is told after each batch."""
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(images), batch):
            chunk = torch.from_numpy(np.ascontiguousarray(images[start : start + batch], np.float32))
            chunks.append(extractor(chunk).double().numpy())
            if progress:
                done = min(start + batch, len(images))
                progress(f"{extractor.name} features {done}/{len(images)} images", done, len(images))
    return np.concatenate(chunks)


@dataclass(frozen=True)
class ModelSamples:
    """Which samples of which model: what names their features in the cache without generating them. The card
    carries the priors, the sampler (scheduler, steps) and the output range; the seed is the one their start
    states are drawn on. `probe` is a digest of what the model makes of a few fixed start states
    (`output_probe`): the checkpoint's hash covers its files, not the code of a package its `--arch` or pickle
    names, and a model whose code changed must not find the features of the old one."""

    checkpoint_sha256: str
    card: dict[str, Any]
    seed: int
    count: int
    probe: str = ""

    def key(self, extractor: FeatureExtractor) -> str:
        named = {**asdict(self), "extractor": extractor.name, "extractor_sha256": extractor.sha256, "version": CACHE_VERSION}
        return hashlib.sha256(json.dumps(named, sort_keys=True).encode()).hexdigest()[:32]

    def cached(self, extractor: FeatureExtractor) -> bool:
        return bool(self.checkpoint_sha256) and (cache_dir(CACHE_KIND) / f"{self.key(extractor)}.npy").is_file()

    def describe(self, extractor: FeatureExtractor) -> dict[str, Any]:
        return {"model": self.card.get("name"), "checkpoint_sha256": self.checkpoint_sha256, "seed": self.seed,
                "samples": self.count, "extractor": extractor.name, "extractor_sha256": extractor.sha256}


PROBE_SAMPLES = 4
PROBE_SEED = 12_345  # its own start states, used for nothing else


def output_probe(sampler, call) -> str:
    """A digest of the model's images from PROBE_SAMPLES fixed start states, rounded to 1e-4 so that the last bits
    of a float do not decide it (where they still do, the cost is a cache miss, never a wrong hit)."""
    from compressor.sampler import generate_all

    start = sampler.start(PROBE_SAMPLES, PROBE_SEED)
    outputs = generate_all(sampler, call, start, PROBE_SAMPLES, PROBE_SEED)
    return hashlib.sha256(np.round(np.asarray(outputs, np.float64), 4).tobytes()).hexdigest()[:16]


def model_sample_features(
    samples: ModelSamples, extractor: FeatureExtractor, images: Callable[[], np.ndarray], batch: int = 32,
    progress: Callable[..., None] | None = None,
) -> tuple[np.ndarray, bool]:
    """Features of a model's samples, and whether they came from the cache. `images()` (the samples as [N, 3, H, W]
    in [0, 1]) is called only on a miss, so a rerun on the same model skips both generating them and the
    Inception pass (minutes on a CPU). Without a checkpoint hash there is no safe key: nothing is cached."""
    if not samples.checkpoint_sha256:
        return extract(extractor, images(), batch, progress), False
    return cached_array(CACHE_KIND, samples.key(extractor), lambda: extract(extractor, images(), batch, progress),
                        samples.describe(extractor))


def image_features(
    extractor: FeatureExtractor, images: np.ndarray, batch: int = 32, progress: Callable[..., None] | None = None
) -> tuple[np.ndarray, bool]:
    """Features of an artifact's samples, cached by a hash of the images themselves and the extractor's weights,
    and whether they came from the cache: a rerun whose artifact makes the very same images (the same model and
    settings: ptq is deterministic) skips its Inception pass too; any change to the artifact changes the images."""
    images = np.ascontiguousarray(images, np.float32)
    digest = hashlib.sha256(f"{extractor.name}:{extractor.sha256}:{images.shape}:{CACHE_VERSION}".encode())
    digest.update(images.tobytes())
    return cached_array(IMAGE_CACHE_KIND, digest.hexdigest()[:32], lambda: extract(extractor, images, batch, progress))
