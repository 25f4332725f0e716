"""run(RunConfig) -> RunResult: the one orchestration loop.

load -> profile stages (torch -> torch; a quantizing stage last, which hands the runtime its plan) -> the
runtime's export (its artifacts: a baseline and the final one) -> for each artifact parity, benchmark and
quality -> budgets -> report, all inside a temporary release folder that is renamed into `OUT/<target>/` only when everything finished. The
manifest is rewritten after every step, so a run that is still going can be followed from its work
folder. A budget that fails does not stop the release from being written: RunResult.budgets records
it, and the CLI exits 3 (so CI can still upload the release and its report).
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from compressor.checkpoint import LoadedModel, load_checkpoint
from compressor.config import ResolvedConfig, apply_overrides, resolve
from compressor.context import RunContext
from compressor.distributed import model_hash, world
from compressor.errors import ParityError, UsageError
from compressor.evaluate.latency import time_callable
from compressor.evaluate.parity import check_parity
from compressor.evaluate.quality import QualityEvaluator, prepare_fid
from compressor.hostcpu import host_record
from compressor.progress import StepListener
from compressor.release.budgets import check_budgets
from compressor.release.gallery import GALLERY_FILE, write_gallery
from compressor.release.html_report import REPORT_HTML_FILE, write_reports
from compressor.release.manifest import (
    MANIFEST_FILE,
    SCHEMA_VERSION,
    Manifest,
    ReleaseFolder,
    library_versions,
    release_verdict,
    utc_now,
)
from compressor.release.report import REPORT_FILE
from compressor.release.student import write_student
from compressor.runtimes import RUNTIMES, runtime_for
from compressor.runtimes.base import Artifact, Runtime
from compressor.sampler import torch_call
from compressor.seeds import BENCHMARK_SEED_OFFSET, PARITY_SEED_OFFSET
from compressor.summary import summarize

log = logging.getLogger("compressor")


@dataclass(frozen=True)
class RunConfig:
    """What the user asked for; `resolve()` turns its names and overrides into a ResolvedConfig."""

    checkpoint: Path
    target: str = "cpu"
    profile: str | None = None
    sets: tuple[str, ...] = ()
    out: Path = Path("release")
    seed: int = 0
    arch: str | None = None
    card: Path | None = None
    trust_pickle: bool = False
    calibration: Path | None = None  # set on the profile's quantizing stage, whichever it is
    resume: bool = False  # continue an interrupted training stage from its checkpoint in OUT/.<target>.state/


@dataclass
class RunResult:
    release_dir: Path
    manifest: dict[str, Any]
    report: Path

    @property
    def budgets(self) -> dict[str, dict[str, Any]]:
        """Each budget's {value, limit, ok}; empty when the profile sets none."""
        return self.manifest.get("budgets", {})

    @property
    def report_html(self) -> Path:
        """report.html beside report.md: the same report as one self-contained page, with plots."""
        return self.release_dir / REPORT_HTML_FILE


@dataclass
class Steps:
    """Runs the named steps of a command, records how long each took, and tells an optional listener (the CLI's
    progress display, compressor/progress.py) when each starts ("step k/n"), advances and ends."""

    listener: StepListener | None = None
    planned: int = 0  # how many steps the command will take; 0 when not known
    seconds: dict[str, float] = field(default_factory=dict)
    started: int = 0

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        self.started += 1
        if self.listener:
            self.listener.step_started(name, self.started, max(self.planned, self.started) if self.planned else 0)
        start = time.perf_counter()
        try:
            value = fn()
        except BaseException:
            if self.listener:
                self.listener.step_finished(name, False, time.perf_counter() - start)
            raise
        self.seconds[name] = time.perf_counter() - start
        if self.listener:
            self.listener.step_finished(name, True, self.seconds[name])
        return value

    def progress(self, name: str) -> Callable[..., None]:
        """`report(text, done=None, total=None)` for the long loop of a running step: 'inception-v3 features
        64/256 images', 64, 256 (a bar with an ETA where done and total are given)."""
        def report(text: str, done: int | None = None, total: int | None = None) -> None:
            if self.listener:
                self.listener.step_advanced(name, text, done, total)

        return report


def plan(config: RunConfig) -> dict[str, Any]:
    """The resolved configuration and the ordered steps a run would take (what --dry-run prints), after checking
    that every input file it names exists."""
    resolved = _resolve(config)
    _check_inputs_exist(config, resolved)
    runtime = RUNTIMES[resolved.target.runtime.kind]
    return {
        "checkpoint": str(config.checkpoint),
        "release_dir": str(Path(config.out) / resolved.target.name),
        "config_sha256": resolved.sha256(),
        "config": resolved.model_dump(mode="json"),
        "runtime_unavailable": runtime.unavailable_reason(),
        "steps": _planned_steps(resolved, runtime(resolved.target)),
    }


def _check_inputs_exist(config: RunConfig, resolved: ResolvedConfig) -> None:
    """Only that each named file is there (reading them is the run's job): a dry run that passes, then a run that
    fails at once on a typo, would make the dry run useless in CI."""
    from compressor.errors import CheckpointError, ConfigError

    if not Path(config.checkpoint).exists():
        raise CheckpointError(f"{config.checkpoint}: no such file or folder; check the path")
    quality = resolved.profile.quality
    files = {"--card": config.card, "--fid-weights or quality.fid_weights": quality.fid_weights,
             "--fid-stats or quality.fid_stats": quality.fid_stats}
    for source, path in files.items():
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"{path}: no such file (given by {source}); check the path")
    for stage in resolved.profile.stages:  # --calibration lands on the quantizing stage; a profile may name one too
        calibration = getattr(stage, "calibration", None)
        if calibration and not (Path(calibration).is_file() or any(Path(calibration).glob("*.npz"))):
            raise ConfigError(f"{calibration}: calibration data not found (given by --calibration or stages.{stage.kind}."
                              "calibration); pass an .npz file or a folder of them")


def _planned_steps(resolved: ResolvedConfig, runtime: Runtime) -> list[str]:
    stages = resolved.profile.stages
    files = runtime.artifact_names(
        quantized=any(stage.quantizes for stage in stages), changes_model=any(s.changes_model for s in stages)
    )
    checks = [f"{check} {name}" for name in files for check in ("parity", "benchmark", "quality")]
    return ["load", *(stage.kind for stage in stages), "export", "quality reference", *checks, "budgets", "report"]


def run(config: RunConfig, listener: StepListener | None = None) -> RunResult | None:
    """Compress, export, check and time the model; write the release atomically to OUT/<target-name>/. Under
    torchrun every rank runs the stages (sharing their work, compressor/distributed.py) and rank 0 alone goes on
    to write the release; the other ranks return None."""
    started_at = utc_now()
    ranks = world()
    resolved = _resolve(config)
    ranks.agree(resolved.sha256(), "the resolved config", "launch every rank with the same command, options and files")
    runtime = runtime_for(resolved.target)  # fail before any work if the runtime is missing
    runtime.check_profile(resolved.profile)
    release = ReleaseFolder(config.out, resolved.target.name)
    if not ranks.is_main:
        return _run_stages_as_helper(config, resolved, release.state_dir)
    release.preflight()
    steps = Steps(listener, planned=len(_planned_steps(resolved, runtime)))
    # Missing FID weights, or reference statistics made with others, fail here, before any work.
    fid_source = prepare_fid(resolved.profile.quality, budget_needs_fid=resolved.profile.budgets.fid is not None)
    loaded = steps.run("load", lambda: _load(config))
    ranks.agree(loaded.sha256, "the checkpoint", "give every rank the same model files")
    _check_calibration_files(resolved, loaded)
    with release as work:
        manifest = Manifest(work / MANIFEST_FILE, _header(config, resolved, loaded, runtime, started_at))
        manifest.data["artifacts"] = {}
        manifest.add_stage("load", steps.seconds["load"], metrics={"format": loaded.format})
        ctx = RunContext.create(loaded.model, loaded.card, resolved, work, state_dir=release.state_dir,
                                resume=config.resume, input_sha256=loaded.sha256)
        model, plan, student = _run_stages(loaded.model, ctx, steps, manifest)
        original = ctx.reference if student else None  # the baseline is the user's architecture (see Runtime.export)
        runtime.progress = steps.progress("export")  # calibration and bias correction report through it
        artifacts = steps.run("export", lambda: runtime.export(model, ctx.card, plan, work, original))
        manifest.add_stage("export", steps.seconds["export"], artifacts=[artifact.name for artifact in artifacts])
        quality = QualityEvaluator(ctx, resolved.profile.quality, fid_source, steps.progress("quality reference"))
        steps.run("quality reference", quality.prepare)
        manifest.data["quality_reference"] = quality.describe()
        manifest.add_stage("quality reference", steps.seconds["quality reference"])
        for artifact in artifacts:
            min_psnr = plan.min_psnr if plan is not None and artifact.role == "final" else None
            # A pruned model's artifact is checked against the pruned torch model it was exported from; how far it
            # is from the user's model is what quality (PSNR, FID vs the reference) measures.
            source = model if student and artifact.role == "final" else ctx.reference
            _check_and_time(artifact, source, min_psnr, runtime, ctx, steps, manifest)
            _judge(artifact, quality, runtime, ctx, steps, manifest)
        _compare_with_baseline(manifest.data["artifacts"], artifacts, runtime, ctx)
        shipped = runtime.release_files(artifacts, ctx.card, work) + (write_student(work, *student) if student else [])
        manifest.data["release_files"] = [path.name for path in shipped]
        manifest.data["budgets"] = steps.run("budgets", lambda: check_budgets(manifest.data, resolved.profile.budgets))
        manifest.data["status"] = "complete"
        manifest.data["verdict"] = release_verdict(manifest.data["budgets"])
        manifest.data["finished_at"] = utc_now()
        manifest.write()
        steps.run("report", lambda: write_reports(manifest.data, work))
    return RunResult(release_dir=release.final, manifest=manifest.data, report=release.final / REPORT_FILE)


def _run_stages_as_helper(config: RunConfig, resolved: ResolvedConfig, state_dir: Path) -> None:
    """A torchrun rank other than 0: load, then the same stages as rank 0, doing this rank's share of their work;
    rank 0 writes the release. Its work folder is temporary: nothing of it is part of a release."""
    loaded = _load(config)
    world().agree(loaded.sha256, "the checkpoint", "give every rank the same model files")
    with tempfile.TemporaryDirectory(prefix="compressor-rank-") as work:
        ctx = RunContext.create(loaded.model, loaded.card, resolved, Path(work), state_dir=state_dir,
                                resume=config.resume, input_sha256=loaded.sha256)
        _run_stages(loaded.model, ctx, Steps(None), None)


def _run_stages(model: torch.nn.Module, ctx: RunContext, steps: Steps, manifest: Manifest | None):
    """The profile's stages in order, each recorded in the manifest as soon as it ends; returns the model as it
    leaves torch, the quantizing stage's plan (None without one) and, when a stage changed the architecture,
    the torch student the release ships: (weights as the last pruning or training stage left them, their record).
    Under torchrun the ranks check after each stage that they hold the same model."""
    plan, student = None, None
    for stage in ctx.config.profile.stages:
        ctx.progress = steps.progress(stage.kind)
        result = steps.run(stage.kind, lambda: stage.run(model, ctx))
        model, plan = result.model, result.plan or plan
        if world().distributed:
            world().agree(model_hash(model), f"the model after the {stage.kind} stage",
                          "a stage made a different decision on some rank (please report it, with the profile)")
        if manifest is None:
            continue
        manifest.add_stage(
            stage.kind, steps.seconds[stage.kind], config=stage.model_dump(mode="json"),
            state=result.state, metrics=result.metrics,
        )
        if stage.changes_model:  # the architecture record stays the last one a stage gave (pruning's)
            record = {**(student[1] if student else {"architecture": None}), "weights_from": stage.kind}
            record.update({key: result.state[key] for key in ("architecture", "student") if result.state.get(key)})
            student = (model.state_dict(), record)
    return model, plan, student


def _check_and_time(
    artifact: Artifact, source: torch.nn.Module, min_psnr: float | None, runtime: Runtime, ctx: RunContext, steps: Steps,
    manifest: Manifest,
) -> None:
    """Compare the artifact with the torch model it was exported from (fail the run if it disagrees), then time
    it; both land in the manifest's record of that artifact."""
    record = {**artifact.record(), "runtime": runtime.name}
    if runtime.numerics_note():
        record["numerics"] = runtime.numerics_note()
    manifest.data["artifacts"][artifact.name] = record
    check, bench = f"parity {artifact.name}", f"benchmark {artifact.name}"
    record["parity"] = steps.run(check, lambda: _parity(runtime, artifact, source, ctx, min_psnr))
    manifest.add_stage(check, steps.seconds[check], metrics=record["parity"])
    if not record["parity"]["ok"]:
        raise ParityError(_parity_message(artifact, record["parity"]))
    seed = ctx.config.seed + BENCHMARK_SEED_OFFSET
    runtime.progress = steps.progress(bench)
    record["latency"] = steps.run(bench, lambda: _benchmark(runtime, artifact, ctx, seed))
    manifest.add_stage(bench, steps.seconds[bench], metrics=record["latency"])


def _benchmark(runtime: Runtime, artifact: Artifact, ctx: RunContext, seed: int) -> dict[str, Any]:
    """The runtime's latency per call and, for a model that takes several calls per image (diffusion), the
    latency of one image: the whole sampling loop at batch 1, the scheduler's arithmetic between calls included."""
    latency = runtime.benchmark(artifact, ctx.card, seed)
    if ctx.sampler.steps == 1 or "batches" not in latency:  # one call per image, or timed on the device later
        return latency
    runner, start, bench = runtime.load(artifact), ctx.sampler.start(1, seed), ctx.config.target.benchmark
    timing = time_callable(lambda: ctx.sampler.generate(runner, start, seed), warmup=1, runs=max(3, min(bench.runs, 10)))
    return {**latency, "per_image": {"model_calls": ctx.sampler.steps, "batch": 1, **timing}}


def _judge(artifact: Artifact, quality: QualityEvaluator, runtime: Runtime, ctx: RunContext, steps: Steps, manifest: Manifest) -> None:
    """Quality of what the artifact generates vs the reference model (FID for the final artifact only: it is
    the slow one and what budgets limit), and the report's gallery for the final artifact."""
    name = f"quality {artifact.name}"
    final = artifact.role == "final"
    runner = runtime.load(artifact)
    quality.progress = steps.progress(name)
    record, samples = steps.run(name, lambda: quality.score(runner, with_fid=final))
    manifest.data["artifacts"][artifact.name]["quality"] = record
    if final and ctx.config.profile.quality.gallery:
        count = ctx.config.profile.quality.gallery
        reference = quality.reference_outputs[:count]
        if not quality.not_images:
            gallery = write_gallery(ctx.work_dir / GALLERY_FILE, reference, samples[:count], quality.value_range, artifact.name)
            manifest.data["gallery"] = {**gallery, "artifact": artifact.name}
    manifest.add_stage(name, steps.seconds[name], metrics=_headline(record))


def _headline(record: dict[str, Any]) -> dict[str, Any]:
    """The step's metrics in the manifest's list of stages: the numbers, not the per-extractor details."""
    headline = {key: record[key] for key in ("psnr_db", "ssim") if key in record}
    for metric in ("fid", "fd_surrogate"):
        if isinstance(record.get(metric), dict) and "value" in record[metric]:
            headline[metric] = record[metric]["value"]
    return headline


def _compare_with_baseline(records: dict[str, Any], artifacts: list[Artifact], runtime: Runtime, ctx: RunContext) -> None:
    """Record each artifact's latency relative to the baseline at the largest batch. A compressed artifact slower
    than its baseline is what users most complain about: it is warned about, the `latency_vs_baseline` budget
    can fail the run on it, and the runtime's profiler says which op types cost the time in each artifact."""
    baseline = next((name for name, record in records.items() if record["role"] == "baseline"), None)
    if baseline is None or "batches" not in records[baseline]["latency"]:
        return  # nothing to compare with, or latency pending (timed on the device)
    reference = records[baseline]["latency"]["batches"]
    batch = max(reference, key=int)
    for name, record in records.items():
        if name == baseline or "batches" not in record["latency"]:
            continue
        ratio = record["latency"]["batches"][batch]["median_ms"] / reference[batch]["median_ms"]
        record["latency_vs_fp32"] = {"batch": int(batch), "ratio": ratio}
        if ratio > 1:
            log.warning("%s is %.2fx SLOWER than %s at batch %s on this machine%s", name, ratio, baseline, batch,
                        _kernel_note(record, runtime))
            seed = ctx.config.seed + BENCHMARK_SEED_OFFSET
            for artifact in artifacts:
                if artifact.name in (name, baseline) and "op_times_ms" not in records[artifact.name]:
                    times = runtime.op_times(artifact, ctx.card, seed, int(batch))
                    if times is not None:
                        records[artifact.name]["op_times_ms"] = {"batch": int(batch), "by_op_type": times}


def _kernel_note(record: dict[str, Any], runtime: Runtime) -> str:
    """Records this machine's best int8 and fp32 kernel rates in `record`, and says what they mean: on a CPU
    whose int8 kernels are no faster than fp32 ones, no choice of layers makes int8 much faster."""
    peaks = runtime.kernel_peaks()
    if not peaks:
        return ""
    record["kernel_peaks_gmacs"] = {precision: round(rate / 1e9, 1) for precision, rate in peaks.items()}
    headroom = peaks["int8"] / peaks["fp32"]
    record["kernel_peaks_gmacs"]["int8_over_fp32"] = round(headroom, 2)
    if headroom < 1.3:
        return (f"; this CPU's int8 kernels are only {headroom:.2f}x its fp32 ones ({peaks['int8'] / 1e9:.0f} vs "
                f"{peaks['fp32'] / 1e9:.0f} GMAC/s), so int8 buys size here, not speed")
    return f" (its int8 kernels are {headroom:.1f}x its fp32 ones: see the report for the ops that cost the time)"


def _resolve(config: RunConfig) -> ResolvedConfig:
    resolved = resolve(config.target, config.profile, list(config.sets), config.seed)
    if config.calibration is not None:
        resolved = apply_overrides(resolved, [_calibration_override(resolved, config.calibration)])
    return resolved


def _calibration_override(resolved: ResolvedConfig, calibration: Path) -> str:
    """`--calibration` as a `--set` on the profile's quantizing stage (ptq or qat), whichever it has."""
    import json

    kinds = [stage.kind for stage in resolved.profile.stages if stage.quantizes]
    if not kinds:
        raise UsageError(
            f"--calibration: profile {resolved.profile.name} has no quantizing stage (ptq or qat); pick a profile with one"
        )
    return f"stages.{kinds[0]}.calibration={json.dumps(str(calibration))}"  # JSON: a path stays a string


def _load(config: RunConfig) -> LoadedModel:
    return load_checkpoint(config.checkpoint, arch=config.arch, card=config.card, trust_pickle=config.trust_pickle)


def _check_calibration_files(resolved: ResolvedConfig, loaded: LoadedModel) -> None:
    """A user calibration file that does not fit the model fails now, not after the export and its checks."""
    from compressor.calibration import load_calibration

    for stage in resolved.profile.stages:
        if getattr(stage, "calibration", None):
            load_calibration(Path(stage.calibration), loaded.card)  # read again by the stage; cheap


def _header(
    config: RunConfig, resolved: ResolvedConfig, loaded: LoadedModel, runtime: Runtime, started_at: str
) -> dict[str, Any]:
    summary = summarize(loaded.model, loaded.card)
    return {
        "schema_version": SCHEMA_VERSION,
        "status": "running",
        "verdict": None,  # pass / fail / pending once the budgets are checked
        "started_at": started_at,
        "finished_at": None,
        "runtime": runtime.name,
        "versions": library_versions(),
        "host": host_record(),
        "input": {"path": str(config.checkpoint), "format": loaded.format, "sha256": loaded.sha256, "files": loaded.files},
        "model": {
            "card": loaded.card.model_dump(mode="json"),
            **{k: summary[k] for k in ("parameters", "macs_per_sample", "fp32_bytes")},
        },
        "config": resolved.model_dump(mode="json"),
        "config_sha256": resolved.sha256(),
        "seed": resolved.seed,
        "stages": [],
    }


def _parity(runtime: Runtime, artifact: Artifact, source: torch.nn.Module, ctx: RunContext, min_psnr: float | None) -> dict[str, Any]:
    """The artifact against the torch model on the same inputs. A model that makes an image in several calls is
    compared on the images of its whole sampling loop: one call's error says little there (the digits-ddpm
    demo's int8 noise prediction is off by 0.74 RMS at t = 0 and 0.02 at t = 900, and the last step scales
    its error by 0.006 into the image), and the final images are what a release ships."""
    settings, sampler = ctx.config.target.parity, ctx.sampler
    runner, reference = runtime.load(artifact), torch_call(source)
    seed = ctx.config.seed + PARITY_SEED_OFFSET
    inputs = sampler.start(settings.samples, seed)
    if sampler.steps > 1:
        runner, reference = (_images_of(call, sampler, seed) for call in (runner, reference))
    return check_parity(reference, runner, inputs, settings, min_psnr=min_psnr, value_range=sampler.range)


def _images_of(call, sampler, seed: int):
    """A call that makes the sampler's images from start states (for parity, which compares calls)."""
    return lambda start: [sampler.generate(call, start, seed)]


def _parity_message(artifact: Artifact, parity: dict[str, Any]) -> str:
    if parity.get("min_psnr") is not None:
        return (
            f"{artifact.name}: PSNR vs the torch model is {parity['psnr_db']:.1f} dB, below the required "
            f"{parity['min_psnr']:.1f} dB; keep sensitive layers in float (--set stages.ptq.auto_precision=true, "
            "or rules in the ptq/qat stage), or lower the stage's min_psnr (--set stages.<ptq|qat>.min_psnr=...)"
        )
    return (
        f"{artifact.name}: output differs from the torch model by {parity['max_abs_error']:.3g} "
        f"(allowed {parity['atol']:.1g} + {parity['rtol']:.1g} x output scale); "
        "check the export, or loosen target.parity with --set if this is expected"
    )
