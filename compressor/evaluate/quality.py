"""Quality of artifacts judged on what they generate, against the original (reference) torch model.

On the same seeded start states (QUALITY_SEED_OFFSET) the reference and each artifact generate images through
the model card's sampler (one call for a GAN or VAE, the whole denoising loop for a diffusion UNet):
  - paired: PSNR and SSIM of artifact vs reference outputs;
  - distribution: the Frechet distance to a reference set, with FID's Inception features when weights
    are available and always with the FD-surrogate (random conv features). The reference set is the
    user's real-image statistics (`quality.fid_stats`, Inception only) or, by default, the reference
    model's own samples on other seeds. The reference model's own score against that set is the noise
    floor; each artifact's `delta` is its score minus that floor, which is what budgets limit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from compressor.evaluate import fd_surrogate, fid
from compressor.evaluate.features import FeatureExtractor, extract, extract_cached
from compressor.evaluate.frechet import (
    FeatureStats,
    StatsError,
    frechet_distance,
    kernel_inception_distance,
    load_stats,
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


@dataclass
class QualityEvaluator:
    """Generates the reference model's samples once, then scores any number of artifacts against them."""

    ctx: RunContext
    settings: QualitySettings
    fid_source: FidSource
    progress: Callable[[str], None] | None = None  # told what a long extraction is doing
    sets: dict[str, _ReferenceSet] = field(default_factory=dict)  # by metric: fd_surrogate, fid
    # Filled by prepare(): the quality start states (latents, x_T), what the reference makes of them, their value range.
    latents: dict[str, np.ndarray] = field(default_factory=dict)
    reference_outputs: np.ndarray | None = None
    value_range: tuple[float, float] = (0.0, 1.0)
    not_images: str | None = None  # why image metrics do not apply, when they do not
    own_samples: np.ndarray | None = None  # the reference model's samples on other seeds (the default reference set)

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
        for metric, extractor in extractors.items():
            start = time.perf_counter()
            reference_set = self._reference_set(metric, extractor)
            features = self._features(extractor, self.reference_outputs, cached=True)
            reference_set.floor = frechet_distance(self._stats(extractor, features), reference_set.stats)
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
                "seconds": round(reference_set.seconds, 3),
            }
        if self.fid_unavailable:
            record["fid"] = {"computed": False, "reason": self.fid_unavailable}
        return record

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
        features = self._features(extractor, outputs)
        value = frechet_distance(self._stats(extractor, features, warn=False), reference_set.stats)
        result = {"value": value, "reference_model_score": reference_set.floor, "delta": value - reference_set.floor}
        if reference_set.features is not None:
            result["kid"] = kernel_inception_distance(features, reference_set.features)
        result["extractor_sha256"] = extractor.sha256
        result["seconds"] = round(time.perf_counter() - start, 3)
        return result

    @staticmethod
    def _stats(extractor: FeatureExtractor, features: np.ndarray, warn: bool = True) -> FeatureStats:
        return stats_of(features, extractor.name, extractor.sha256, warn=warn)  # warn once per extractor

    def _features(self, extractor: FeatureExtractor, outputs: np.ndarray, cached: bool = False) -> np.ndarray:
        """Features of `outputs`; the reference model's (the same on every run of a model) come from the cache."""
        run = extract_cached if cached else extract
        return run(extractor, to_unit_rgb(outputs, self.value_range), self.settings.batch, self.progress)

    def _latents(self, offset: int) -> dict[str, np.ndarray]:
        return self.ctx.sampler.start(self.settings.samples, self.ctx.config.seed + offset)

    def _generate(self, call: Runner, start: dict[str, np.ndarray], offset: int) -> np.ndarray:
        """What `call` makes of `start` through the sampler (the same scheduler noise for every call)."""
        return generate_all(self.ctx.sampler, call, start, self.settings.batch, self.ctx.config.seed + offset)

    def _reference_set(self, metric: str, extractor: FeatureExtractor) -> _ReferenceSet:
        """The user's real-image statistics for FID when given, else the reference model's own samples."""
        stats = self.fid_source.reference_stats
        if metric == "fid" and stats is not None:
            return _ReferenceSet(extractor, stats, None, f"statistics file {self.fid_source.stats_file} ({stats.count} images)")
        if self.own_samples is None:  # generated once, shared by the extractors
            latents = self._latents(QUALITY_REFERENCE_SEED_OFFSET)
            self.own_samples = self._generate(torch_call(self.ctx.reference), latents, QUALITY_REFERENCE_SEED_OFFSET)
        features = self._features(extractor, self.own_samples, cached=True)
        description = f"reference model samples ({len(self.own_samples)}, seed offset {QUALITY_REFERENCE_SEED_OFFSET})"
        return _ReferenceSet(extractor, self._stats(extractor, features, warn=False), features, description)

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
