"""`compressor build-engine RELEASE`: finish a TensorRT release on the device.

It builds the engine from the release's final artifact with the device's own TensorRT, times it at each of
the target's batch sizes, and adds the engine, its sha256, the device, the TensorRT version and the latency to
the release's manifest and report. The release is rewritten as a whole (a copy finished beside it, then
swapped into place), so an interrupted build leaves the release as it was. The budgets are judged again:
the latency budget, pending until now, gets its verdict.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from compressor.errors import CompressorError, OutputError
from compressor.files import sha256_file
from compressor.release.budgets import Budgets, check_budgets, final_artifact
from compressor.release.html_report import write_reports
from compressor.release.manifest import MANIFEST_FILE, Manifest, ReleaseFolder, read_manifest, release_verdict, utc_now
from compressor.runtimes.tensorrt import SPARSE_LAYERS
from compressor.seeds import BENCHMARK_SEED_OFFSET

log = logging.getLogger("compressor")


def build_release_engine(release: Path, timing_cache: Path | None = None) -> dict[str, Any]:
    """Build and time the engine of `release` and add it to the release; returns the new manifest."""
    from compressor.runtimes import tensorrt_engine

    release = Path(release)
    manifest = _tensorrt_release(release)
    reason = tensorrt_engine.unavailable_reason()
    if reason:
        raise CompressorError(f"build-engine: {reason}")
    runtime, card = _runtime_and_card(manifest)
    name, record = final_artifact(manifest)
    spec = runtime.engine_spec(card, record["precision"], sparse=bool(record.get("details", {}).get(SPARSE_LAYERS)))
    settings = runtime.target.benchmark
    with ReleaseFolder(release.parent, release.name) as work:
        shutil.copytree(release, work, dirs_exist_ok=True)
        engine = work / Path(name).with_suffix(".engine").name
        built = tensorrt_engine.build_engine(work / name, engine, spec, timing_cache)
        latency = tensorrt_engine.time_engine(engine, spec, settings.warmup, settings.runs,
                                              seed=manifest["seed"] + BENCHMARK_SEED_OFFSET)
        manifest["engine"] = _engine_record(engine, built, runtime.options.tensorrt_version)
        record["latency"] = latency
        manifest["budgets"] = check_budgets(manifest, Budgets.model_validate(manifest["config"]["profile"]["budgets"]))
        manifest["verdict"] = release_verdict(manifest["budgets"])  # a pending latency budget is judged now
        Manifest(work / MANIFEST_FILE, manifest).write()
        write_reports(manifest, work)
    return manifest


def _tensorrt_release(release: Path) -> dict[str, Any]:
    if not (release / MANIFEST_FILE).is_file():
        raise OutputError(f"{release}: not a compressor release (no {MANIFEST_FILE}); pass the folder `compressor run` wrote")
    manifest = read_manifest(release)
    if manifest.get("status") != "complete":
        raise OutputError(f"{release}: the release is not complete (status {manifest.get('status')}); rerun compressor run")
    runtime = manifest["config"]["target"]["runtime"]["kind"]
    if runtime != "tensorrt":
        raise CompressorError(
            f"{release}: a release for target {manifest['config']['target']['name']} (runtime {runtime}); build-engine "
            "finishes TensorRT releases only (--target jetson or gpu)"
        )
    return manifest


def _runtime_and_card(manifest: dict[str, Any]):
    from compressor.config import Target
    from compressor.modelcard import ModelCard
    from compressor.runtimes.tensorrt import TensorRT

    return TensorRT(Target.model_validate(manifest["config"]["target"])), ModelCard.model_validate(manifest["model"]["card"])


def _engine_record(engine: Path, built: dict[str, Any], target_version: str) -> dict[str, Any]:
    """What the manifest keeps of the engine; a TensorRT other than the target's is warned about and recorded."""
    found = ".".join(str(built["tensorrt_version"]).split(".")[:2])
    mismatch = found != target_version
    if mismatch:
        log.warning("build-engine: this device has TensorRT %s, the release was made for %s; the engine is built with "
                    "%s and both are recorded", built["tensorrt_version"], target_version, found)
    return {
        "file": engine.name, "sha256": sha256_file(engine), "bytes": engine.stat().st_size,
        "device": built["device"], "tensorrt_version": built["tensorrt_version"],
        "target_tensorrt_version": target_version, "version_mismatch": mismatch,
        "built_at": utc_now(),  # the run's own started_at/finished_at stay the host's; this is the device's moment
        "build_seconds": built["build_seconds"], "precision_counts": built["precision_counts"], "layers": built["layers"],
    }
