"""What ONNX Runtime actually runs: the op types of a model after its full graph optimization (where QDQ
fusion into QLinearConv/QGemm happens), for tests that assert int8 kernels are used."""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx


def ops_ort_runs(model: onnx.ModelProto | Path) -> list[str]:
    import onnxruntime as ort

    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    with tempfile.TemporaryDirectory() as scratch:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(Path(scratch) / "optimized.onnx")
        ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        return [node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node]
