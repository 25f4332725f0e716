"""The seam every runtime plugs into: a `Runtime` back end, its options schema, and the `Artifact`s it writes.

A runtime turns the compressed torch model, and the quantization plan the profile's quantizing stage made
(if any), into files for its engine: `export(model, card, plan, out) -> [Artifact]`, a template shared by every
runtime (which files, baseline and final, in which case) over three steps each runtime supplies: `write_fp32`,
`fp32_artifact` and `quantized`. It can run them
(`load(artifact) -> runner`, a callable from input arrays by name to output arrays) and time them
(`benchmark`). Everything after the export (parity, latency, quality, budgets, gate, report, manifest)
reads `Artifact`s and never assumes a file name or a format: the artifact whose role is `final` is the
one a release ships and budgets judge; a `baseline` is the uncompressed export kept beside it (the user's own
architecture in fp32, also when pruning changed the final one).

A runtime's options are the target YAML's `runtime:` section, a pydantic model whose `kind` names the
runtime; `compressor.runtimes` gathers them into one discriminated union, so a target for one runtime
cannot carry another's options and the JSON schema says which fields each takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from compressor.files import sha256_file

if TYPE_CHECKING:
    import numpy as np
    import torch.nn as nn

    from compressor.config import Target
    from compressor.modelcard import ModelCard
    from compressor.quantization import QuantizationPlan

Runner = Callable[[dict[str, "np.ndarray"]], list["np.ndarray"]]
Role = Literal["final", "baseline"]


@dataclass(frozen=True)
class Artifact:
    """One file a runtime wrote for the release, and what it is."""

    path: Path
    format: str  # e.g. "onnx"
    precision: str  # "fp32", "fp16", "int8" or "mixed"
    role: Role
    details: dict[str, Any] | None = None  # what made it: per-layer precisions, calibration, ...

    @property
    def name(self) -> str:
        return self.path.name

    def record(self) -> dict[str, Any]:
        """What the manifest keeps of it (the file is hashed now: it is complete once a runtime returns it)."""
        record = {
            "file": self.name, "format": self.format, "precision": self.precision, "role": self.role,
            "sha256": sha256_file(self.path), "bytes": self.path.stat().st_size,
        }
        return {**record, **({"details": self.details} if self.details else {})}


class RuntimeOptions(BaseModel):
    """Base of each runtime's options: frozen, unknown keys rejected, `kind` names the runtime."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: str


class Runtime:
    """A back end. Subclasses set `name` and `Options`, and implement the methods below; one instance serves
    one target (its options are `target.runtime`)."""

    name: ClassVar[str]
    Options: ClassVar[type[RuntimeOptions]]

    def __init__(self, target: Target) -> None:
        self.target = target
        self.options = target.runtime
        # `report(text, done, total)` of the export's long loops (calibration batches, bias correction's layers);
        # the run points it at its progress display.
        self.progress: Callable[..., None] = lambda text, done=None, total=None: None

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """None when runs for this runtime can work here; else what is missing and how to get it."""
        raise NotImplementedError

    @staticmethod
    def missing_packages(needed: dict[str, str]) -> list[str]:
        """The packages of `needed` (importable module -> package name) that are not installed here."""
        import importlib.util

        return [package for module, package in needed.items() if importlib.util.find_spec(module) is None]

    # File names of the artifacts, set by each runtime: the final one, the fp32 baseline kept beside a quantized
    # or pruned final, and the scratch fp32 export of a pruned model that only the quantizer reads.
    FINAL: ClassVar[str]
    BASELINE: ClassVar[str]
    PRUNED_FP32: ClassVar[str]

    def export(
        self, model: nn.Module, card: ModelCard, plan: QuantizationPlan | None, out: Path, original: nn.Module | None = None
    ) -> list[Artifact]:
        """Write the artifacts into the folder `out`: the baseline first (when there is one), the final last.
        `original` is the user's model when a stage changed what the model computes (pruning, training, a
        student): it is then exported as the baseline, so the release is compared with what the user brought,
        not with the pruned model. Without a plan the fp32 export is the final artifact; with one, the fp32
        export is the baseline (or, for a pruned model, only the quantizer's input) and `quantized` writes the
        final one. Runtimes provide `write_fp32`, `fp32_artifact` and `quantized`."""
        if original is None:
            fp32 = self.write_fp32(model, card, out / (self.BASELINE if plan else self.FINAL))
            if plan is None:
                return [self.fp32_artifact(fp32, "final")]
            return [self.fp32_artifact(fp32, "baseline"), self.quantized(fp32, plan, card, out / self.FINAL)]
        baseline = self.fp32_artifact(self.write_fp32(original, card, out / self.BASELINE), "baseline")
        if plan is None:
            return [baseline, self.fp32_artifact(self.write_fp32(model, card, out / self.FINAL), "final")]
        scratch = self.write_fp32(model, card, out / self.PRUNED_FP32)
        try:
            return [baseline, self.quantized(scratch, plan, card, out / self.FINAL)]
        finally:
            (out / self.PRUNED_FP32).unlink(missing_ok=True)  # not part of the release

    def write_fp32(self, model: nn.Module, card: ModelCard, path: Path) -> Any:
        """Export `model` in fp32 to `path`; returns what `fp32_artifact` and `quantized` need of it."""
        raise NotImplementedError

    def fp32_artifact(self, fp32: Any, role: Role) -> Artifact:
        """The artifact record of an fp32 export `write_fp32` returned."""
        raise NotImplementedError

    def quantized(self, fp32: Any, plan: QuantizationPlan, card: ModelCard, out: Path) -> Artifact:
        """Write the final artifact at `out` as `plan` says, from the fp32 export `fp32`."""
        raise NotImplementedError

    def check_profile(self, profile) -> None:
        """Refuse, before any work, a profile whose stages this runtime cannot turn into artifacts."""

    @classmethod
    def left_for_the_device(cls) -> str | None:
        """None when, once available, everything a release needs is done on this machine; else what is done
        here and what is left for the device (for `compressor doctor`)."""
        return None

    def artifact_names(self, quantized: bool, changes_model: bool = False) -> list[str]:
        """The file names `export` will write, in order (for --dry-run's list of steps)."""
        return [self.BASELINE, self.FINAL] if quantized or changes_model else [self.FINAL]

    def load(self, artifact: Artifact) -> Runner:
        raise NotImplementedError

    def benchmark(self, artifact: Artifact, card: ModelCard, seed: int) -> dict[str, Any]:
        """Latency per batch size the target lists: `{"batches": {"1": {"median_ms", "p90_ms", ...}}, ...}`,
        or `{"pending": why}` when this machine cannot time the artifact (it is timed on the device later)."""
        raise NotImplementedError

    def op_times(self, artifact: Artifact, card: ModelCard, seed: int, batch: int) -> dict[str, float] | None:
        """Milliseconds per run spent in each op type at `batch` (the runtime's own profiler), slowest first; None
        when this runtime cannot profile here. Asked for when an int8 artifact is slower than its baseline."""
        return None

    def kernel_peaks(self) -> dict[str, float] | None:
        """MAC/s this machine's runtime kernels reach at best per precision ({"int8": ..., "fp32": ...}); None when
        it cannot be measured here. Asked for with op_times: it says whether int8 can be faster at all."""
        return None

    def numerics_note(self) -> str | None:
        """None when `load` runs artifacts on the target's own runtime; else how they are run instead (e.g.
        simulated on ONNX Runtime's CPU), which every parity and quality figure is labelled with."""
        return None

    def release_files(self, artifacts: list[Artifact], card: ModelCard, out: Path) -> list[Path]:
        """Extra files the release needs on the device (a build script, ...); written into `out`."""
        return []
