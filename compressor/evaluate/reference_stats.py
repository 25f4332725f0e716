"""`compressor fid-stats`: feature statistics of a reference image set, for runs to measure FID against.

The source is real images (a folder, or an .npz with an `images` array) or a model (folder with
compressor.yaml, or a checkpoint), whose own samples are drawn on the seeds a run uses for its
reference set. The .npz written holds mu, sigma, count and the extractor's name and sha256, so a run
refuses statistics made with other weights.

A model's features go through the same cache as a run's reference set (features.ModelSamples: checkpoint,
card, seed, sample count, output probe, extractor): `fid-stats` on a model a run already measured writes what the cache
holds at once, and a run after `fid-stats` finds its reference features cached.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from compressor.checkpoint import load_checkpoint
from compressor.evaluate import fd_surrogate, fid
from compressor.evaluate.features import FeatureExtractor, ModelSamples, extract, model_sample_features, output_probe
from compressor.evaluate.frechet import FeatureStats, stats_of
from compressor.evaluate.images import (
    ImageSetError,
    is_image_batch,
    load_real_images,
    to_unit_rgb,
)
from compressor.modelcard import CARD_FILE
from compressor.sampler import generate_all, sampler_for, torch_call
from compressor.seeds import QUALITY_REFERENCE_SEED_OFFSET

Extractor = Literal["inception", "fd-surrogate"]


def make_extractor(kind: Extractor, fid_weights: str | None = None) -> FeatureExtractor:
    if kind == "fd-surrogate":
        return fd_surrogate.RandomConvFeatures()
    path, source = fid.find_weights(fid_weights)
    return fid.InceptionFeatures(path, source)


def is_model_source(source: Path) -> bool:
    """A model folder (with compressor.yaml) or a checkpoint file, as opposed to real images."""
    return (source.is_dir() and (source / CARD_FILE).is_file()) or (source.is_file() and source.suffix != ".npz")


def reference_stats(
    source: Path,
    out: Path,
    extractor: FeatureExtractor,
    samples: int = 256,
    seed: int = 0,
    batch: int = 32,
    progress: Callable[..., None] | None = None,
    trust_pickle: bool = False,
) -> tuple[FeatureStats, bool]:
    """Statistics of `source`'s images (or its model's samples), written atomically to `out`; also says whether
    the features came from the cache (a model's only)."""
    source = Path(source)
    if is_model_source(source):
        features, cached = _model_features(source, extractor, samples, seed, batch, progress, trust_pickle)
    else:
        features, cached = extract(extractor, load_real_images(source), batch, progress), False
    stats = stats_of(features, extractor.name, extractor.sha256)
    partial = Path(out).with_name(Path(out).name + ".partial.npz")  # np.savez appends .npz to other names
    stats.save(partial)
    os.replace(partial, out)
    return stats, cached


def _model_features(
    source: Path, extractor: FeatureExtractor, samples: int, seed: int, batch: int, progress, trust_pickle: bool
) -> tuple[np.ndarray, bool]:
    loaded = load_checkpoint(source, trust_pickle=trust_pickle)
    sampler = sampler_for(loaded.card)
    reference_seed = seed + QUALITY_REFERENCE_SEED_OFFSET  # what the quality step draws its reference set from

    def images() -> np.ndarray:
        start = sampler.start(samples, reference_seed)
        outputs = generate_all(sampler, torch_call(loaded.model), start, batch, reference_seed)
        if not is_image_batch(outputs.shape) or sampler.range is None:
            raise ImageSetError(
                f"{source}: the model's first output must be [N, 1|3, H, W] images with a declared range "
                f"(outputs: range: [low, high] in {CARD_FILE}); got shape {list(outputs.shape)}, range {sampler.range}"
            )
        return to_unit_rgb(outputs, sampler.range)

    probe = output_probe(sampler, torch_call(loaded.model))
    named = ModelSamples(loaded.sha256, loaded.card.model_dump(mode="json"), reference_seed, samples, probe)
    return model_sample_features(named, extractor, images, batch, progress)
