"""What the ONNX-based runtimes (ONNX Runtime, TensorRT) share: export the model to ONNX, turn a quantization
plan into a Q/DQ ONNX artifact with the runtime's own quantizer, and run artifacts in ONNX Runtime.

Without a plan the fp32 export is the final artifact (`model.onnx`). With one, the fp32 export is kept as the
baseline (`model.fp32.onnx`) and the quantized model becomes `model.onnx`. When a stage changed the architecture
(pruning), the baseline is the user's original model instead, and the pruned model's fp32 export is only the
quantizer's input:
- a `CalibrationPlan` (ptq): layers are read off the export's node metadata, `choose_precisions` applies the
  rules and the auto mode, and the subclass's `quantize_nodes` writes the Q/DQ model with the chosen layers'
  nodes left in float;
- a `FakeQuantizedPlan` (qat): the fake-quantized torch model is exported as Q/DQ, and the subclass's
  `finish_fake_quantized` rewrites that graph into the form its kernels want.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from compressor.quantization import CalibrationPlan, FakeQuantizedPlan, as_quantized, choose_precisions, float_layers
from compressor.runtimes.base import Artifact, Runner, Runtime

if TYPE_CHECKING:
    import onnx
    import torch.nn as nn

    from compressor.modelcard import ModelCard
    from compressor.quantization import QuantizationPlan

FINAL = "model.onnx"
BASELINE = "model.fp32.onnx"  # kept beside a quantized or pruned final artifact
PRUNED_FP32 = "pruned.fp32.onnx"  # scratch: a pruned model's fp32 export, the quantizer's input


class OnnxBackend(Runtime):
    """A runtime whose artifacts are ONNX files. Subclasses set `name`, `Options`, `providers` and implement
    `quantize_nodes` and `finish_fake_quantized`."""

    FINAL, BASELINE, PRUNED_FP32 = FINAL, BASELINE, PRUNED_FP32
    # Why ptq's bias correction is not applied to this runtime's int8 files (None: it is). The correction measures
    # the Q/DQ file on ONNX Runtime's CPU provider, which is this runtime's own numerics only for ONNX Runtime.
    no_bias_correction: ClassVar[str | None] = None

    def write_fp32(self, model: nn.Module, card: ModelCard, path: Path) -> Path:
        from compressor.runtimes.onnx.export import export_onnx

        return export_onnx(model, card, path, opset=self.options.opset)

    def fp32_artifact(self, fp32: Path, role) -> Artifact:
        return Artifact(fp32, "onnx", "fp32", role)

    def quantized(self, fp32: Path, plan: QuantizationPlan, card: ModelCard, out: Path) -> Artifact:
        if isinstance(plan, FakeQuantizedPlan):
            return self._export_fake_quantized(plan, card, out)
        return self._quantize_calibrated(fp32, plan, card, out)

    def quantize_nodes(self, fp32: Path, out: Path, plan: CalibrationPlan, float_nodes: list[str], cache: Path) -> Path:
        """Write the Q/DQ model of `fp32` calibrated as `plan` says, the nodes `float_nodes` left in float.
        `cache` is a scratch file a quantizer may keep calibration ranges in across calls (auto mode)."""
        raise NotImplementedError

    def check_quantizable(self, graph: onnx.ModelProto) -> None:
        """Refuse, or warn about, what this runtime cannot quantize well in the fp32 export (before any work)."""

    def finish_fake_quantized(self, graph: onnx.ModelProto) -> None:
        """Rewrite, in place, the Q/DQ export of a fake-quantized model into what this runtime runs fast."""
        raise NotImplementedError

    def load(self, artifact: Artifact) -> Runner:
        """A runner on an ONNX Runtime session set up as the target says."""
        return self._runner(artifact.path)

    def _runner(self, path: Path) -> Runner:
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), self.session_options(), providers=["CPUExecutionProvider"])
        return lambda feeds: session.run(None, feeds)

    def session_options(self):
        """ORT session options as the target says (threads), with the optimizations int8 needs."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        # ALL enables QDQ fusion and the NHWC layout pass; at BASIC int8 runs slower than fp32 (docs/architecture.md).
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = self.target.benchmark.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        return options

    def _quantize_calibrated(self, fp32: Path, plan: CalibrationPlan, card: ModelCard, out: Path) -> Artifact:
        import onnx

        from compressor.runtimes.onnx.layers import compute_layers, int8_layers, io_layers, node_layers, nodes_of

        graph = onnx.load(str(fp32))
        self.check_quantizable(graph)
        cache = out.parent / "calibration-cache.json"  # calibrate once across auto mode's trials
        cache.unlink(missing_ok=True)

        def quantize(kept_float: set[str], path: Path) -> Path:
            return self.quantize_nodes(fp32, path, plan, nodes_of(graph, kept_float), cache)

        described = choose_precisions(
            plan, compute_layers(graph), self.target, self.options.float_precision, quantize,
            probe=lambda path: self._runner(path)(plan.probe)[0], fp32=fp32, value_range=card.output_range,
            io_layers=io_layers(graph),
        )
        quantize(float_layers(described), out)
        cache.unlink(missing_ok=True)  # not part of the release
        quantized = onnx.load(str(out))
        if plan.bias_correction:
            described["bias_correction"] = (self._correct_biases(graph, quantized, plan, out) if not self.no_bias_correction
                                            else {"applied": False, "reason": self.no_bias_correction})
        actual = int8_layers(quantized, node_layers(graph))
        described = as_quantized(described, actual, self.options.float_precision)
        return Artifact(out, "onnx", described.pop("precision"), "final", {**plan.describe(), **described})

    def _correct_biases(self, fp32: onnx.ModelProto, quantized: onnx.ModelProto, plan: CalibrationPlan, out: Path):
        """Bias correction of the written Q/DQ model (runtimes/onnx/bias_correction.py), saved over it; returns the
        manifest's record: how many Conv/Gemm nodes moved and the largest shift of a channel mean."""
        import onnx

        from compressor.runtimes.onnx.bias_correction import correct_biases

        shifts = correct_biases(fp32, quantized, plan.feeds, self.session_options(), self.progress)
        onnx.save(quantized, str(out))
        return {"applied": True, "nodes": len(shifts), "largest_shift": max(shifts.values(), default=0.0)}

    def _export_fake_quantized(self, plan: FakeQuantizedPlan, card: ModelCard, out: Path) -> Artifact:
        import onnx

        from compressor.layer_rules import describe_plan
        from compressor.runtimes.onnx.export import export_fake_quantized
        from compressor.runtimes.onnx.graph import fold_pads_into_convs

        export_fake_quantized(plan.model, card, out, opset=self.options.opset)
        graph = onnx.load(str(out))
        fold_pads_into_convs(graph)  # first: a Pad between a requantized tensor and its conv would block fusion
        self.finish_fake_quantized(graph)
        onnx.checker.check_model(graph)
        onnx.save(graph, str(out))
        described: dict[str, Any] = describe_plan(plan.layers)
        return Artifact(out, "onnx", described.pop("precision"), "final", {**plan.describe(), **described})
