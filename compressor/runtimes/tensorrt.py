"""TensorRT (NVIDIA GPUs, Jetson): explicit-quantization ONNX built here, the engine built on the device.

An engine is tied to one GPU and one TensorRT version, and a Jetson's TensorRT comes only with its JetPack,
so the release is made on any machine and finished on the device:
- here: the fp32 export, then int8 Q/DQ by NVIDIA Model Optimizer's ONNX PTQ (tensorrt_quantize.py), float
  parts in fp16; every artifact is checked against TensorRT's explicit-quantization rules and the operators
  its ONNX parser takes at the target's version (onnx/tensorrt_rules.py) before the release is written;
  parity and quality are measured by running the Q/DQ graph in ONNX Runtime on the CPU, labelled simulated;
  latency is pending; the release carries `build_engine.sh` (trtexec) for devices without compressor;
- on the device: `compressor build-engine RELEASE` builds and times the engine (tensorrt_engine.py) and adds
  it to the release (release/engine.py).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from compressor.errors import ConfigError, ExportError
from compressor.runtimes.base import Artifact, RuntimeOptions
from compressor.runtimes.onnx.backend import OnnxBackend

if TYPE_CHECKING:
    import onnx

    from compressor.modelcard import ModelCard
    from compressor.quantization import CalibrationPlan, QuantizationPlan

BUILD_SCRIPT = "build_engine.sh"
SPARSE_LAYERS = "sparse_2_4_layers"  # the final artifact's details: layers whose weights are 2:4
# ptq's calibration methods as ModelOpt names them; it has no percentile calibration.
_MODELOPT_METHODS = {"minmax": "max", "entropy": "entropy"}
# What `compressor run` needs for this runtime (the engine itself is built by build-engine, on the device).
_NEEDED = {"modelopt": "nvidia-modelopt", "onnx_graphsurgeon": "onnx-graphsurgeon", "onnxruntime": "onnxruntime"}


class TensorRTOptions(RuntimeOptions):
    """The target's `runtime:` section for TensorRT."""

    kind: Literal["tensorrt"] = "tensorrt"
    qat_quantizer: ClassVar[str] = "modelopt"  # TensorRT's own scheme (stages/qat_modelopt.py says why not NNCF)
    tensorrt_version: str = Field(pattern=r"^\d+\.\d+$", description="TensorRT major.minor on the device, e.g. 10.3.")
    platform: str = Field("", description="What the device runs, e.g. 'JetPack 6.2 (L4T r36.4)'.")
    opset: int = Field(19, ge=19, description="ONNX opset of the export (ModelOpt writes at least 19: fp16 Q/DQ scales).")
    max_opset: int | None = Field(None, description="Highest opset the device's parser takes; default: its version's.")
    float_dtype: Literal["fp16", "fp32"] = Field("fp16", description="Precision of the layers left out of int8.")
    workspace_mb: int = Field(1024, ge=1, description="Builder workspace (MiB) for the engine build.")
    dla_core: int | None = Field(None, ge=0, description="Build for this DLA core (Jetson), GPU fallback allowed.")

    @property
    def float_precision(self) -> str:
        return self.float_dtype


class TensorRT(OnnxBackend):
    """TensorRT, through explicit-quantization ONNX; numerics simulated on ONNX Runtime's CPU until the device."""

    name = "tensorrt"
    Options = TensorRTOptions
    # ORT CPU only simulates TensorRT's int8 here; a correction fitted to that simulation is unmeasured on an engine.
    no_bias_correction = "not applied for TensorRT until measured on a device: ORT CPU only simulates its int8"

    @classmethod
    def unavailable_reason(cls) -> str | None:
        missing = cls.missing_packages(_NEEDED)
        if missing:
            return f"{', '.join(missing)} not installed; pip install 'compressor[tensorrt]'"
        return None

    @classmethod
    def left_for_the_device(cls) -> str | None:
        from compressor.runtimes.tensorrt_engine import unavailable_reason

        engine = unavailable_reason()
        if engine is None:
            return None  # tensorrt and a GPU here: build-engine finishes releases on this machine
        return (f"export, TensorRT rules check, parity and quality simulated on ONNX Runtime CPU here; engine build "
                f"and latency only on the device ({engine})")

    def export(self, model, card: ModelCard, plan: QuantizationPlan | None, out: Path, original=None) -> list[Artifact]:
        from compressor.pruning.magnitude import two_four_layers

        artifacts = super().export(model, card, plan, out, original)
        for artifact in artifacts:
            self._check_rules(artifact.path)
        sparse = two_four_layers(model)  # read from the weights: whatever made them 2:4, the engine can use it
        if sparse:
            final = artifacts[-1]
            artifacts[-1] = dataclasses.replace(final, details={**(final.details or {}), SPARSE_LAYERS: sparse})
        return artifacts

    def check_profile(self, profile) -> None:
        for stage in profile.stages:
            if stage.kind == "ptq":
                _modelopt_method(stage.kind, stage.method)

    def check_quantizable(self, graph: onnx.ModelProto) -> None:
        self._check_rules(graph)  # an op the parser lacks fails now, before calibration

    def quantize_nodes(self, fp32: Path, out: Path, plan: CalibrationPlan, float_nodes: list[str], cache: Path) -> Path:
        from compressor.runtimes import tensorrt_quantize

        return tensorrt_quantize.quantize(
            fp32, out, plan.feeds, method=_modelopt_method(plan.stage, plan.method), float_nodes=float_nodes,
            float_dtype=self.options.float_dtype,
        )

    def finish_fake_quantized(self, graph: onnx.ModelProto) -> None:
        """ModelOpt's quantizers already export in TensorRT's form (symmetric int8, per-channel weights on the
        axis TensorRT takes, float biases); the rules check in `export` verifies it. Float parts stay fp32 in
        the file: the engine is built with fp16 enabled, so TensorRT runs them in fp16 where it is faster."""

    def session_options(self):
        """ONNX Runtime with its graph optimizations off: it then computes each Q/DQ node as the ONNX spec
        defines it, as TensorRT does. With them on, ORT fuses the Q/DQ pairs into its own x86 int8 kernels,
        whose rounding is not TensorRT's (the DCGAN demo read 5-20 dB further from fp32 that way)."""
        import onnxruntime as ort

        options = super().session_options()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return options

    def numerics_note(self) -> str:
        return "simulated on ONNX Runtime CPU (TensorRT is not run here; build-engine runs it on the device)"

    def benchmark(self, artifact: Artifact, card: ModelCard, seed: int) -> dict[str, Any]:
        if artifact.role != "final":
            return {"pending": "only the final artifact is built into an engine"}
        return {"pending": f"TensorRT engines are timed on the device: run `compressor build-engine` (or {BUILD_SCRIPT}) there"}

    def release_files(self, artifacts: list[Artifact], card: ModelCard, out: Path) -> list[Path]:
        from compressor.runtimes.tensorrt_engine import build_script

        final = next(artifact for artifact in artifacts if artifact.role == "final")
        script = out / BUILD_SCRIPT
        spec = self.engine_spec(card, final.precision, sparse=bool((final.details or {}).get(SPARSE_LAYERS)))
        script.write_text(build_script(final.name, spec, self.target.name, self.options.tensorrt_version))
        script.chmod(0o755)
        return [script]

    def engine_spec(self, card: ModelCard, precision: str, sparse: bool = False):
        """What the engine is built with: the card's inputs, the target's batch sizes, its precisions, and
        sparsity when the final artifact has 2:4 weights."""
        from compressor.runtimes.tensorrt_engine import EngineSpec

        return EngineSpec(
            inputs={name: tuple(spec.shape) for name, spec in card.inputs.items()},
            batch_sizes=tuple(self.target.benchmark.batch_sizes),
            int8=precision in ("int8", "mixed"), fp16=self.options.float_dtype == "fp16",
            workspace_mb=self.options.workspace_mb, dla_core=self.options.dla_core, sparsity=sparse,
        )

    def _check_rules(self, model: onnx.ModelProto | Path) -> None:
        """Refuse what TensorRT's parser would reject at the target's version, naming the node, op and version."""
        from compressor.runtimes.onnx import tensorrt_rules

        version, max_opset = self.options.tensorrt_version, self.max_opset()
        violations = tensorrt_rules.check(model, version, max_opset)
        if violations:
            more = f" (and {len(violations) - 1} more: `compressor check-tensorrt FILE --target {self.target.name}` lists them)"
            name = model.name if isinstance(model, Path) else "the export"
            raise ExportError(
                f"{name}: TensorRT {version} would reject it: {violations[0].message}{more if len(violations) > 1 else ''}"
            )

    def max_opset(self) -> int:
        from compressor.runtimes.onnx.tensorrt_rules import parser_limits

        return self.options.max_opset or parser_limits(self.options.tensorrt_version)[1]


def _modelopt_method(stage: str, method: str) -> str:
    if method not in _MODELOPT_METHODS:
        raise ConfigError(
            f"{stage}.method {method}: ModelOpt calibrates with minmax or entropy only; "
            f"--set stages.{stage}.method=minmax (or use the tensorrt profile)"
        )
    return _MODELOPT_METHODS[method]
