"""Quality of artifacts judged on what they generate, against the original (reference) torch model.

On the same seeded start states (QUALITY_SEED_OFFSET) the reference and each artifact generate images through
the model card's sampler (one call for a GAN or VAE, the whole denoising loop for a diffusion UNet):
  - paired: PSNR and SSIM of artifact vs reference outputs;
  - distribution: the Frechet distance to a reference set, with FID's Inception features when weights
    are available and always with the FD-surrogate (random conv features). The reference set is the
    user's real-image statistics (`quality.fid_stats`, Inception only) or, by default, the reference
    model's own samples on other seeds. The reference model's own score against that set is the noise
    floor; each artifact's `delta` is its score minus that floor, which is what budgets limit.

The reference model's features (its own samples, and its outputs on the quality latents) are the same on every
run of the same checkpoint, card, seed and sample count: they are cached under those (features.ModelSamples),
so a second run pays FID for its artifact only; and an artifact's features are cached by a hash of its images,
so a rerun whose artifact makes the very same images pays nothing. Before a long extraction the expected cost
is logged.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from compressor.evaluate import fd_surrogate, fid
from compressor.evaluate.features import FeatureExtractor, ModelSamples, image_features, model_sample_features, output_probe
from compressor.evaluate.frechet import (
    FeatureStats,
    StatsError,
    frechet_distance,
    frechet_distance_of_features,
    kernel_inception_distance,
    load_stats,
    sample_size_warning,
    stats_of,
)
from compressor.evaluate.images import is_image_batch, to_unit_rgb
from compressor.evaluate.paired import data_range_of, psnr, ssim
from compressor.sampler import generate_all, torch_call
from compressor.seeds import QUALITY_REFERENCE_SEED_OFFSET, QUALITY_SEED_OFFSET

if TYPE_CHECKING:
    from compressor.config import QualitySettings
    from compressor.context import RunContext

Runner = Callable[[dict[str, np.ndarray]], list[np.ndarray]]
log = logging.getLogger("compressor")


@dataclass(frozen=True)
class FidSource:
    """What FID is measured with, decided before any work: the Inception extractor and, when the user gave
    them, real-image statistics (already checked against the extractor); or why there is no FID."""

    extractor: FeatureExtractor | None = None
    reference_stats: FeatureStats | None = None
    stats_file: str | None = None
    unavailable: str | None = None


def prepare_fid(settings: QualitySettings, budget_needs_fid: bool = False) -> FidSource:
    """FID is required (missing or broken weights raise, naming the fix) with fid: on, a fid budget or
    reference statistics to compare with; with fid: auto it is skipped, saying why, when there are no weights."""
    if settings.fid == "off":
        return FidSource(unavailable="off in the profile (quality.fid: off)")
    try:
        path, source = fid.find_weights(settings.fid_weights)
    except fid.FidWeightsError as exc:
        if settings.fid == "on" or budget_needs_fid or settings.fid_stats:
            raise
        return FidSource(unavailable=exc.message)
    inception = fid.InceptionFeatures(path, source)
    if not settings.fid_stats:
        return FidSource(extractor=inception)
    stats = load_stats(Path(settings.fid_stats))
    if stats.extractor_sha256 != inception.sha256:
        raise StatsError(
            f"{settings.fid_stats}: made with another extractor ({stats.extractor} {stats.extractor_sha256[:12]}) "
            f"than this run's FID weights ({inception.sha256[:12]}); remake it with `compressor fid-stats` and the "
            "same --fid-weights, or run with the weights it was made with"
        )
    return FidSource(extractor=inception, reference_stats=stats, stats_file=settings.fid_stats)


@dataclass
class _ReferenceSet:
    """What one extractor's scores are measured against, and the reference model's own score (the floor)."""

    extractor: FeatureExtractor
    stats: FeatureStats
    features: np.ndarray | None  # kept for KID when the set was generated here; a stats file has none
    description: str
    floor: float = 0.0
    seconds: float = 0.0
    cached: dict[str, bool] = field(default_factory=dict)  # which of the reference model's features came from the cache

    def distance(self, features: np.ndarray) -> float:
        """The Frechet distance of `features` to this set. With the set's own features at hand it is computed from
        both feature arrays (exact, and milliseconds where two 2048 x 2048 eigendecompositions take seconds)."""
        if self.features is not None:
            return frechet_distance_of_features(features, self.features)
        return frechet_distance(stats_of(features, self.extractor.name, self.extractor.sha256, warn=False), self.stats)


@dataclass
class QualityEvaluator:
    """Generates the reference model's samples once, then scores any number of artifacts against them."""

    ctx: RunContext
    settings: QualitySettings
    fid_source: FidSource
    progress: Callable[..., None] | None = None  # told what a long extraction is doing: (text, done, total)
    sets: dict[str, _ReferenceSet] = field(default_factory=dict)  # by metric: fd_surrogate, fid
    # Filled by prepare(): the quality start states (latents, x_T), what the reference makes of them, their value range.
    latents: dict[str, np.ndarray] = field(default_factory=dict)
    reference_outputs: np.ndarray | None = None
    value_range: tuple[float, float] = (0.0, 1.0)
    not_images: str | None = None  # why image metrics do not apply, when they do not
    own_samples: np.ndarray | None = None  # the reference model's samples on other seeds (the default reference set)
    _probe: str | None = None  # features.output_probe of the reference model, part of its cached features' key

    @property
    def fid_unavailable(self) -> str | None:
        return self.not_images or self.fid_source.unavailable

    def prepare(self) -> None:
        """Reference outputs on the quality latents, and each extractor's reference set and floor."""
        self.latents = self._latents(QUALITY_SEED_OFFSET)
        self.reference_outputs = self._generate(torch_call(self.ctx.reference), self.latents, QUALITY_SEED_OFFSET)
        self.value_range = self._value_range()
        self.not_images = image_output_problem(self.reference_outputs.shape, self.ctx.sampler.image_declared)
        if self.not_images:  # PSNR still applies; image metrics and distances do not
            return
        extractors = {"fd_surrogate": fd_surrogate.RandomConvFeatures()}
        if self.fid_source.extractor is not None:
            extractors["fid"] = self.fid_source.extractor
            log.info(self._fid_cost())
        for metric, extractor in extractors.items():
            start = time.perf_counter()
            reference_set = self._reference_set(metric, extractor)
            features, reference_set.cached["outputs"] = self._reference_features(extractor, QUALITY_SEED_OFFSET)
            if sample_size_warning(len(features), extractor.dim, extractor.name):  # said once per extractor
                log.warning(sample_size_warning(len(features), extractor.dim, extractor.name))
            reference_set.floor = reference_set.distance(features)
            reference_set.seconds = time.perf_counter() - start
            self.sets[metric] = reference_set

    def describe(self) -> dict[str, Any]:
        """The manifest's record of what artifacts were compared with."""
        record: dict[str, Any] = {"samples": self.settings.samples, "seed_offset": QUALITY_SEED_OFFSET,
                                  "model_calls_per_sample": self.ctx.sampler.steps}
        for metric, reference_set in self.sets.items():
            record[metric] = {
                "reference_set": reference_set.description,
                "reference_model_score": reference_set.floor,
                "extractor": reference_set.extractor.name,
                "extractor_sha256": reference_set.extractor.sha256,
                "reference_features_cached": reference_set.cached,
                "seconds": round(reference_set.seconds, 3),
            }
            if getattr(reference_set.extractor, "backend", None):
                record[metric]["extractor_backend"] = reference_set.extractor.backend
        if self.fid_unavailable:
            record["fid"] = {"computed": False, "reason": self.fid_unavailable}
        record["warnings"] = self.warnings()
        return record

    def warnings(self) -> list[str]:
        """What makes the scores less comparable than they look (kept in the manifest and shown in the reports)."""
        found = [sample_size_warning(self.settings.samples, reference_set.extractor.dim, reference_set.extractor.name)
                 for reference_set in self.sets.values()]
        return [text for text in found if text]

    def score(self, runner: Runner, with_fid: bool) -> tuple[dict[str, Any], np.ndarray]:
        """Paired and distribution metrics of an artifact's samples; also returns the samples (for the gallery)."""
        outputs = self._generate(runner, self.latents, QUALITY_SEED_OFFSET)
        data_range = float(self.value_range[1] - self.value_range[0])
        record: dict[str, Any] = {"samples": len(outputs), "psnr_db": psnr(self.reference_outputs, outputs, data_range)}
        if self.not_images:
            return {**record, "reason": self.not_images}, outputs
        record["ssim"] = ssim(self.reference_outputs, outputs, data_range)
        for metric, reference_set in self.sets.items():
            if metric == "fid" and not with_fid:
                record["fid"] = {"computed": False, "reason": "computed for the final artifact only"}
                continue
            record[metric] = self._distance(reference_set, outputs)
        if "fid" not in record:
            record["fid"] = {"computed": False, "reason": self.fid_unavailable}
        return record, outputs

    def _distance(self, reference_set: _ReferenceSet, outputs: np.ndarray) -> dict[str, Any]:
        start = time.perf_counter()
        extractor = reference_set.extractor
        features, cached = image_features(extractor, to_unit_rgb(outputs, self.value_range), self.settings.batch,
                                          self.progress)
        value = reference_set.distance(features)
        result = {"value": value, "reference_model_score": reference_set.floor, "delta": value - reference_set.floor,
                  "features_cached": cached}
        if reference_set.features is not None:
            result["kid"] = kernel_inception_distance(features, reference_set.features)
        result["extractor_sha256"] = extractor.sha256
        result["seconds"] = round(time.perf_counter() - start, 3)
        return result

    @staticmethod
    def _stats(extractor: FeatureExtractor, features: np.ndarray, warn: bool = True) -> FeatureStats:
        return stats_of(features, extractor.name, extractor.sha256, warn=warn)  # warn once per extractor

    def _reference_features(self, extractor: FeatureExtractor, offset: int) -> tuple[np.ndarray, bool]:
        """Features of the reference model's samples on the seeds of `offset` (the quality latents, or its own set),
        from the cache when a run of this checkpoint, card, seed and count made them before."""
        def images() -> np.ndarray:
            outputs = self.reference_outputs if offset == QUALITY_SEED_OFFSET else self._own_samples()
            return to_unit_rgb(outputs, self.value_range)

        return model_sample_features(self._model_samples(offset), extractor, images, self.settings.batch, self.progress)

    def _model_samples(self, offset: int) -> ModelSamples:
        card = self.ctx.card.model_dump(mode="json")
        if self._probe is None:  # what the reference model makes of the probe's start states (a few calls)
            self._probe = output_probe(self.ctx.sampler, torch_call(self.ctx.reference))
        return ModelSamples(self.ctx.input_sha256, card, self.ctx.config.seed + offset, self.settings.samples, self._probe)

    def _own_samples(self) -> np.ndarray:
        """The reference model's samples on its own seeds: generated once, shared by the extractors that need them."""
        if self.own_samples is None:
            latents = self._latents(QUALITY_REFERENCE_SEED_OFFSET)
            self.own_samples = self._generate(torch_call(self.ctx.reference), latents, QUALITY_REFERENCE_SEED_OFFSET)
        return self.own_samples

    def _fid_cost(self) -> str:
        """What FID will cost, told before it starts: the Inception passes ahead and their expected time here."""
        extractor, count = self.fid_source.extractor, self.settings.samples
        offsets = [QUALITY_SEED_OFFSET] + ([] if self.fid_source.reference_stats else [QUALITY_REFERENCE_SEED_OFFSET])
        missing = [offset for offset in offsets if not self._model_samples(offset).cached(extractor)]
        images = count * (len(missing) + 1)  # + the final artifact's (unless it makes the same images as last time)
        rate = getattr(extractor, "images_per_second", None)
        expected = f", about {images / rate:.0f} s at {rate:.0f} images/s here" if rate else ""
        cached = (f"; the reference model's {len(offsets) - len(missing)} of {len(offsets)} sets come from the cache"
                  if len(missing) < len(offsets) else "; the reference model's features are cached for the next run")
        return f"FID: {images} images through {extractor.name} ({count} per set){expected}{cached}"

    def _latents(self, offset: int) -> dict[str, np.ndarray]:
        return self.ctx.sampler.start(self.settings.samples, self.ctx.config.seed + offset)

    def _generate(self, call: Runner, start: dict[str, np.ndarray], offset: int) -> np.ndarray:
        """What `call` makes of `start` through the sampler (the same scheduler noise for every call)."""
        return generate_all(self.ctx.sampler, call, start, self.settings.batch, self.ctx.config.seed + offset, self.progress)

    def _reference_set(self, metric: str, extractor: FeatureExtractor) -> _ReferenceSet:
        """The user's real-image statistics for FID when given, else the reference model's own samples."""
        stats = self.fid_source.reference_stats
        if metric == "fid" and stats is not None:
            return _ReferenceSet(extractor, stats, None, f"statistics file {self.fid_source.stats_file} ({stats.count} images)")
        features, cached = self._reference_features(extractor, QUALITY_REFERENCE_SEED_OFFSET)
        description = f"reference model samples ({len(features)}, seed offset {QUALITY_REFERENCE_SEED_OFFSET})"
        reference_set = _ReferenceSet(extractor, self._stats(extractor, features, warn=False), features, description)
        reference_set.cached["own_samples"] = cached
        return reference_set

    def _value_range(self) -> tuple[float, float]:
        declared = self.ctx.sampler.range
        if declared is not None:
            return tuple(declared)
        low = float(self.reference_outputs.min())  # no declared range: the span the reference actually uses
        return low, low + data_range_of(None, self.reference_outputs)


def image_output_problem(shape: tuple[int, ...], declared: bool | None = None) -> str | None:
    """Why image quality metrics do not apply to an output of this shape, or None when they do; the model
    card's word (`image: false` on a noise prediction) comes first."""
    if declared is False:
        return "the model card says the first output is not an image (image: false)"
    if is_image_batch(shape):
        return None
    return f"the first output has shape {list(shape)}, not [N, 1|3, H, W] images"
