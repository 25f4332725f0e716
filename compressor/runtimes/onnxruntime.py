"""ONNX Runtime on CPU: export through the shared exporter, run, and time artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch.nn as nn

from compressor.config import Target
from compressor.evaluate.latency import time_callable
from compressor.modelcard import ModelCard, sample_inputs
from compressor.runtimes.onnx_export import export_onnx


def unavailable_reason() -> str | None:
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        return f"onnxruntime is not installed ({exc}); pip install onnxruntime"
    return None


def export(model: nn.Module, card: ModelCard, target: Target, path: Path) -> Path:
    return export_onnx(model, card, Path(path), opset=target.opset)


def quantize(
    fp32: Path, out: Path, batches, target: Target, method: str, percentile: float, exclude=(), calibration_cache=None
) -> Path:
    """int8 QDQ model of `fp32`; nodes named in `exclude` stay in float (see onnxruntime_quantize.py)."""
    from compressor.runtimes import onnxruntime_quantize

    return onnxruntime_quantize.quantize(fp32, out, batches, target, method, percentile, exclude, calibration_cache)


def export_quantized(model: nn.Module, card: ModelCard, target: Target, path: Path) -> Path:
    """QDQ ONNX of a fake-quantized torch model (NNCF's, after strip), made fast on this runtime: activations
    re-typed as the target says (uint8 on x86), exact requantization in front of convs that read an
    interleaved tensor, int32 biases (see onnx_qdq.py)."""
    import onnx

    from compressor.runtimes import onnx_qdq
    from compressor.runtimes.onnx_export import export_fake_quantized
    from compressor.runtimes.onnx_graph import fold_pads_into_convs

    export_fake_quantized(model, card, Path(path), opset=target.opset)
    graph = onnx.load(str(path))
    fold_pads_into_convs(graph)  # first: a Pad between the requantized tensor and its conv would block fusion
    if target.quantization.activations == "uint8":
        onnx_qdq.retype_activations_to_uint8(graph)
    onnx_qdq.requantize_before_convs(graph)
    onnx_qdq.quantize_biases(graph)
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))
    return Path(path)


def load(artifact: Path, target: Target) -> Callable[[dict[str, np.ndarray]], list[np.ndarray]]:
    """A runner: input arrays by name -> output arrays, on an ORT session set up as the target says."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(artifact), session_options(target), providers=["CPUExecutionProvider"])
    return lambda feeds: session.run(None, feeds)


def session_options(target: Target):
    """ORT session options as the target says (threads), with the optimizations int8 needs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    # ALL enables QDQ fusion and the NHWC layout pass; at BASIC int8 runs slower than fp32 (DESIGN.md).
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = target.benchmark.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return options


def benchmark(artifact: Path, card: ModelCard, target: Target, seed: int) -> dict:
    """Latency per batch size the target lists: median/p90 over `runs` after `warmup`, in milliseconds."""
    runner = load(artifact, target)
    settings = target.benchmark
    results = {}
    for batch in settings.batch_sizes:
        feeds = {name: t.numpy() for name, t in sample_inputs(card, batch, seed).items()}
        stats = time_callable(lambda: runner(feeds), settings.warmup, settings.runs)
        stats["per_sample_ms"] = stats["median_ms"] / batch
        results[str(batch)] = stats
    return {"batches": results, "threads": settings.threads, "provider": "CPUExecutionProvider"}
