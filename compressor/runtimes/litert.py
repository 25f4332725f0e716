"""LiteRT (TensorFlow Lite) for phones: a fully int8 `.tflite` that an app loads with LiteRT and runs on XNNPACK,
or hands to a vendor delegate.

The path (litert_convert.py, litert_quantize.py): fold BatchNorm in torch, convert to an fp32 `.tflite` with
litert-torch at batch 1, then quantize it to int8 with litert-quantizer, calibrated on the ptq stage's samples.
The fp32 `.tflite` is kept as the baseline. Mixed precision works as on the other runtimes: layer rules and
auto mode choose layers (`compressor.quantization.choose_precisions`), and litert_graph.py finds each layer's
ops in the `.tflite` so the quantizer leaves them float.

Every artifact is run here by the `ai-edge-litert` interpreter with its XNNPACK delegate, as on a phone's CPU:
parity and quality are the phone's numerics, while latency is measured on this host's CPU and says so. The
release carries a Python example that feeds int8 inputs with the interpreter's scale and zero point, and the
commands that time the file on a phone with LiteRT's `benchmark_model` over adb (litert_release.py).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from compressor.errors import ConfigError
from compressor.quantization import CalibrationPlan, as_quantized, choose_precisions, float_layers
from compressor.runtimes.base import Artifact, Runner, Runtime, RuntimeOptions

if TYPE_CHECKING:
    import torch.nn as nn

    from compressor.config import Target
    from compressor.modelcard import ModelCard
    from compressor.quantization import QuantizationPlan
    from compressor.runtimes.litert_convert import Converted

log = logging.getLogger("compressor")

FINAL = "model.tflite"
BASELINE = "model.fp32.tflite"
PRUNED_FP32 = "pruned.fp32.tflite"  # scratch: a pruned model's fp32 conversion, the quantizer's input
_NEEDED = {"litert_torch": "litert-torch", "litert_quantizer": "litert-quantizer", "ai_edge_litert": "ai-edge-litert"}
INSTALL_HINT = "pip install 'compressor[tflite]' (after torch: make install does both)"


class LiteRTOptions(RuntimeOptions):
    """The target's `runtime:` section for LiteRT."""

    kind: Literal["litert"] = "litert"
    qat_quantizer: ClassVar[str | None] = None  # qat has no LiteRT export yet: check_profile refuses it
    io_dtype: Literal["int8", "float32"] = Field(
        "int8", description="Type of the model's input and output tensors: int8 (the app quantizes them with the "
        "interpreter's scale and zero point) or float32 (QUANTIZE/DEQUANTIZE ops inside the model).",
    )
    normalizations: Literal["int8", "float"] = Field(
        "int8", description="Precision of the ops GroupNorm, LayerNorm and InstanceNorm decompose into (a float "
        "island with QUANTIZE/DEQUANTIZE around it, or int8 like the rest).",
    )
    output_head: Literal["int8", "float"] = Field(
        "int8", description="Precision of the last weighted layer and every op after it (an image head's conv and "
        "Tanh): float keeps them as a float island, when int8's 256 levels across the Tanh's whole input range "
        "posterize mid-tones (measured on the VAE demo: FID +2.90 int8, +0.20 float).",
    )
    extra_threads: list[int] = Field(
        [4], description="XNNPACK thread counts timed beside benchmark.threads (the headline), each capped at this "
        "host's cores.",
    )

    @property
    def float_precision(self) -> str:
        return "fp32"


class LiteRT(Runtime):
    """LiteRT with XNNPACK: `.tflite` artifacts, int8 through litert-quantizer, run and timed by ai-edge-litert."""

    name = "litert"
    Options = LiteRTOptions

    def __init__(self, target: Target) -> None:
        super().__init__(target)
        if target.benchmark.batch_sizes != [1]:
            raise ConfigError(
                f"target {target.name}: LiteRT artifacts are built for batch 1 (what a phone app runs), but "
                f"benchmark.batch_sizes is {target.benchmark.batch_sizes}; set benchmark.batch_sizes: [1]"
            )

    @classmethod
    def unavailable_reason(cls) -> str | None:
        missing = cls.missing_packages(_NEEDED)
        if missing:
            return f"{', '.join(missing)} not installed; {INSTALL_HINT}"
        return None

    def check_profile(self, profile) -> None:
        for stage in profile.stages:
            if stage.kind == "ptq" and stage.method not in ("minmax", "percentile"):
                raise ConfigError(
                    f"target {self.target.name}: ptq.method {stage.method} is not available for LiteRT (minmax or "
                    "percentile); --set stages.ptq.method=percentile"
                )
            if stage.kind == "qat":
                raise ConfigError(
                    f"target {self.target.name}: the qat stage has no LiteRT export yet; use post-training "
                    "quantization (--profile balanced, or replace qat with ptq in your profile)"
                )

    FINAL, BASELINE, PRUNED_FP32 = FINAL, BASELINE, PRUNED_FP32

    def write_fp32(self, model: nn.Module, card: ModelCard, path: Path) -> Converted:
        from compressor.runtimes.litert_convert import convert

        return convert(model, card, path)

    def fp32_artifact(self, fp32: Converted, role) -> Artifact:
        return self._artifact(fp32.path, "fp32", role, fp32.scopes)

    def _artifact(self, path: Path, precision: str, role: str, scopes: dict, details: dict | None = None) -> Artifact:
        """An artifact whose record says which ops run in int8 and which in float, and its input/output types."""
        from compressor.runtimes.litert_graph import describe, io_quantization, read_ops

        inspected = {**describe(read_ops(path, scopes)), "io": io_quantization(path)}
        if inspected["int8_weights"]["other"]:  # static_wi8_ai8 asks for per-channel symmetric weights everywhere
            log.warning("%s: int8 weights that are not per-channel symmetric (slower or refused on some delegates): %s",
                        path.name, ", ".join(inspected["int8_weights"]["other"]))
        return Artifact(path, "tflite", precision, role, {**(details or {}), **inspected})

    def quantized(self, fp32: Converted, plan: QuantizationPlan, card: ModelCard, out: Path) -> Artifact:
        from compressor.runtimes import litert_quantize
        from compressor.runtimes.litert_graph import compute_layers, int8_layers, read_ops, scopes_of

        if not isinstance(plan, CalibrationPlan):
            raise ConfigError(f"target {self.target.name}: only ptq's plan can be turned into a .tflite")
        ops = read_ops(fp32.path, fp32.scopes)
        calibrated = litert_quantize.calibrate(fp32.path, _one_sample_each(plan.feeds, card), plan.method, plan.percentile)
        float_io = self.options.io_dtype == "float32"

        float_norms = set(fp32.normalizations) if self.options.normalizations == "float" else set()
        head = _output_head(ops) if self.options.output_head == "float" else []

        def quantize(kept_float: set[str], path: Path) -> Path:
            return litert_quantize.quantize(calibrated, path, scopes_of(ops, kept_float | float_norms) + head, float_io)

        described = choose_precisions(
            plan, compute_layers(ops), self.target, self.options.float_precision, quantize,
            probe=lambda path: self._runner(path)(plan.probe)[0], fp32=fp32.path, value_range=card.output_range,
        )
        quantize(float_layers(described), out)
        described = as_quantized(described, int8_layers(read_ops(out, fp32.scopes)), self.options.float_precision)
        for layer, entry in described["layers"].items():  # say why, rather than "kept in float by the quantizer"
            if entry["precision"] != "int8" and any(op.layer == layer for op in ops if op.scope in head):
                entry["reason"] = "output head (runtime.output_head: float)"
        # Said, not silently skipped: steps the ONNX runtimes take that have no LiteRT counterpart here yet.
        if plan.bias_correction:
            described["bias_correction"] = {"applied": False, "reason": "not implemented for LiteRT's .tflite"}
        if plan.float_io:
            described["io_layers"] = {"applied": False, "reason": "not implemented for LiteRT (runtime.output_head: "
                                      "float keeps the output head float)"}
        precision = described.pop("precision")
        return self._artifact(out, precision, "final", fp32.scopes, {**plan.describe(), **described})

    def load(self, artifact: Artifact) -> Runner:
        return self._runner(artifact.path)

    def _runner(self, path: Path) -> Runner:
        """Runs the batch-1 model once per sample, quantizing float inputs and dequantizing int8 outputs with the
        model's own scale and zero point, as an app does."""
        interpreter = _interpreter(path, self.target.benchmark.threads)
        signature = interpreter.get_signature_runner()
        inputs, outputs = signature.get_input_details(), signature.get_output_details()

        ordered = sorted(outputs.items(), key=lambda item: _output_index(item[0]))

        def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            arrays = list(feeds.values())  # the card's order, which is the forward's: args_0, args_1, ...
            results: list[list[np.ndarray]] = [[] for _ in ordered]
            for i in range(len(arrays[0])):
                got = signature(**{f"args_{k}": _to_model(array[i : i + 1], inputs[f"args_{k}"]) for k, array in enumerate(arrays)})
                for slot, (name, detail) in zip(results, ordered):
                    slot.append(_from_model(got[name], detail))
            return [np.concatenate(slot) for slot in results]

        return run

    def benchmark(self, artifact: Artifact, card: ModelCard, seed: int) -> dict[str, Any]:
        """Latency of one invoke at batch 1 with XNNPACK, at benchmark.threads (the headline) and extra_threads."""
        from compressor.hostcpu import cpu_description

        settings = self.target.benchmark
        cores = len(os.sched_getaffinity(0))
        requested = [settings.threads, *self.options.extra_threads]
        timed: dict[str, dict[str, float]] = {}
        for threads in requested:
            used = min(threads, cores)  # more threads than cores would time the scheduler, not the model
            if str(used) not in timed:
                timed[str(used)] = self._time(artifact.path, card, seed, used)
        headline = str(min(settings.threads, cores))
        capped = {str(threads): cores for threads in requested if threads > cores}
        return {
            "batches": {"1": timed[headline]},
            "threads": int(headline),
            "by_threads": {threads: {"1": stats} for threads, stats in timed.items() if threads != headline},
            **({"threads_capped": capped} if capped else {}),
            "delegate": "XNNPACK",
            "note": f"this host's CPU ({cpu_description()}), not a phone: the release's benchmark_model.sh times "
                    "the file on one",
        }

    def _time(self, path: Path, card: ModelCard, seed: int, threads: int) -> dict[str, float]:
        """Milliseconds per invoke (inputs set once: what the app's inference call costs)."""
        from compressor.evaluate.latency import time_callable
        from compressor.modelcard import sample_inputs

        interpreter = _interpreter(path, threads)
        inputs = interpreter.get_signature_runner().get_input_details()
        for k, tensor in enumerate(sample_inputs(card, 1, seed).values()):
            detail = inputs[f"args_{k}"]
            interpreter.set_tensor(detail["index"], _to_model(tensor.numpy(), detail))
        settings = self.target.benchmark
        stats = time_callable(interpreter.invoke, settings.warmup, settings.runs)
        return {**stats, "per_sample_ms": stats["median_ms"], "threads": threads}

    def release_files(self, artifacts: list[Artifact], card: ModelCard, out: Path) -> list[Path]:
        from compressor.runtimes.litert_release import write_release_files

        final = next(artifact for artifact in artifacts if artifact.role == "final")
        return write_release_files(final, card, self.target, out)


def _output_head(ops) -> list[str]:
    """The scopes of the last weighted op and of every op after it (the model's output head)."""
    from compressor.runtimes.litert_graph import WEIGHTED_OPS

    last = max((op.index for op in ops if op.name in WEIGHTED_OPS), default=len(ops))
    return [op.scope for op in ops if op.index >= last]


def _interpreter(path: Path, threads: int):
    """An interpreter with XNNPACK (ai-edge-litert applies it by default), tensors allocated."""
    from ai_edge_litert import interpreter as tflite

    from compressor.quiet import native_stderr_silenced

    with native_stderr_silenced():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
        interpreter = tflite.Interpreter(model_path=str(path), num_threads=threads)
        interpreter.allocate_tensors()
    return interpreter


def _to_model(array: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """A float input as the model takes it: quantized with its scale and zero point when the model takes int8."""
    dtype = detail["dtype"]
    scale, zero_point = detail["quantization"]
    if dtype in (np.int8, np.uint8, np.int16) and scale and np.issubdtype(array.dtype, np.floating):
        info = np.iinfo(dtype)
        return np.clip(np.round(array / scale) + zero_point, info.min, info.max).astype(dtype)
    return array.astype(dtype, copy=False)


def _from_model(array: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if array.dtype in (np.int8, np.uint8, np.int16) and scale:
        return (array.astype(np.float32) - zero_point) * np.float32(scale)
    return array


def _output_index(name: str) -> int:
    """litert-torch names outputs output_0, output_1, ... in the forward's order."""
    suffix = name.rsplit("_", 1)[-1]
    return int(suffix) if suffix.isdigit() else 0


def _one_sample_each(feeds: list[dict[str, np.ndarray]], card: ModelCard) -> list[dict[str, np.ndarray]]:
    """ptq's calibration batches as the batch-1 model's signature wants them: one sample per call, args_0, ..."""
    samples = []
    for feed in feeds:
        arrays = [feed[name] for name in card.inputs]
        for i in range(len(arrays[0])):
            samples.append({f"args_{k}": array[i : i + 1] for k, array in enumerate(arrays)})
    return samples
