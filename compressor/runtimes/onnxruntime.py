"""ONNX Runtime on CPU: ONNX artifacts, int8 through ORT's own static quantizer, run and timed on this machine."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from compressor.runtimes.base import Artifact, RuntimeOptions
from compressor.runtimes.onnx.backend import OnnxBackend

if TYPE_CHECKING:
    import onnx

    from compressor.modelcard import ModelCard
    from compressor.quantization import CalibrationPlan

log = logging.getLogger("compressor")


class OnnxRuntimeOptions(RuntimeOptions):
    """The target's `runtime:` section for ONNX Runtime's CPU execution provider."""

    kind: Literal["onnxruntime"] = "onnxruntime"
    qat_quantizer: ClassVar[str] = "nncf"  # the qat stage's fake quantizer for this runtime (stages/qat.py)
    opset: int = Field(20, ge=13, description="ONNX opset of the exported artifacts.")

    @property
    def float_precision(self) -> str:
        return "fp32"  # ORT's CPU kernels for float16 are few and slow: float parts stay fp32


class OnnxRuntime(OnnxBackend):
    """ONNX Runtime, CPU execution provider."""

    name = "onnxruntime"
    Options = OnnxRuntimeOptions

    @classmethod
    def unavailable_reason(cls) -> str | None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            return f"onnxruntime is not installed ({exc}); pip install onnxruntime"
        return None

    def quantize_nodes(self, fp32: Path, out: Path, plan: CalibrationPlan, float_nodes: list[str], cache: Path) -> Path:
        """int8 QDQ model by onnxruntime.quantization (see onnxruntime_quantize.py)."""
        from compressor.runtimes import onnxruntime_quantize

        return onnxruntime_quantize.quantize(
            fp32, out, plan.feeds, self.target, plan.method, plan.percentile, float_nodes, calibration_cache=cache,
            progress=self.progress,
        )

    def check_quantizable(self, graph: onnx.ModelProto) -> None:
        """Say so when the graph defeats what int8 is for here: ORT has no int8 ConvTranspose kernel."""
        transposed = [node.name for node in graph.graph.node if node.op_type == "ConvTranspose"]
        if transposed:
            log.warning(
                "ptq: %d ConvTranspose node(s) were not rewritten (%s); ONNX Runtime has no int8 kernel for them, "
                "so they run in fp32 between Q/DQ nodes and may make int8 slower than fp32",
                len(transposed), ", ".join(transposed[:3]),
            )

    def finish_fake_quantized(self, graph: onnx.ModelProto) -> None:
        """Activations re-typed as the target says (uint8 on x86), exact requantization in front of convs that
        read an interleaved tensor, int32 biases, value-moving ops on uint8 (see onnx/qdq.py)."""
        from compressor.runtimes.onnx import qdq

        if self.target.quantization.activations == "uint8":
            qdq.retype_activations_to_uint8(graph)
        qdq.requantize_before_convs(graph)
        qdq.quantize_biases(graph)
        qdq.quantize_layout_ops(graph)

    def benchmark(self, artifact: Artifact, card: ModelCard, seed: int) -> dict[str, Any]:
        """Latency per batch size the target lists: median/p90 over `runs` after `warmup`, in milliseconds."""
        from compressor.evaluate.latency import time_callable
        from compressor.modelcard import sample_inputs

        runner = self.load(artifact)
        settings = self.target.benchmark
        results = {}
        for done, batch in enumerate(settings.batch_sizes, 1):
            feeds = {name: t.numpy() for name, t in sample_inputs(card, batch, seed).items()}
            stats = time_callable(lambda: runner(feeds), settings.warmup, settings.runs)
            self.progress(f"batch {batch}: {settings.runs} runs", done, len(settings.batch_sizes))
            stats["per_sample_ms"] = stats["median_ms"] / batch
            results[str(batch)] = stats
        return {"batches": results, "threads": settings.threads, "provider": "CPUExecutionProvider"}

    def kernel_peaks(self) -> dict[str, float]:
        from compressor.runtimes.onnxruntime_peaks import kernel_peaks

        return kernel_peaks(self.target.benchmark.threads)

    def op_times(self, artifact: Artifact, card: ModelCard, seed: int, batch: int) -> dict[str, float]:
        """ORT's own profiler: kernel time per op type, averaged over a few runs after a warm-up."""
        import json
        import tempfile

        import onnxruntime as ort

        from compressor.modelcard import sample_inputs

        feeds = {name: t.numpy() for name, t in sample_inputs(card, batch, seed).items()}
        runs = 5
        with tempfile.TemporaryDirectory() as folder:
            options = self.session_options()
            options.enable_profiling = True
            options.profile_file_prefix = str(Path(folder) / "ort")
            session = ort.InferenceSession(str(artifact.path), options, providers=["CPUExecutionProvider"])
            session.run(None, feeds)  # warm-up, counted out below
            for _ in range(runs):
                session.run(None, feeds)
            events = json.loads(Path(session.end_profiling()).read_text())
        totals: dict[str, float] = {}
        kernels = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
        per_run = len(kernels) // (runs + 1)
        for event in kernels[per_run:]:  # the warm-up run's events come first
            op = event["args"].get("op_name", "?")
            totals[op] = totals.get(op, 0.0) + event["dur"] / 1000 / runs
        return dict(sorted(totals.items(), key=lambda item: -item[1]))
