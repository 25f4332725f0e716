"""What this CPU's ONNX Runtime kernels do at best: MAC/s of a large int8 and fp32 matrix product.

Whether int8 can be faster than fp32 at all depends on the CPU more than on the model: with VNNI, or wide
AVX2 units, ORT's uint8 x int8 kernels reach about twice the fp32 rate; on cores with 128-bit units (AMD Zen 1)
the two are even, and an int8 artifact cannot beat its fp32 export by more than the Q/DQ work it adds.
A run measures this when an artifact came out slower than its baseline, so the report can say which it is.
"""

from __future__ import annotations

import numpy as np

from compressor.evaluate.latency import time_callable


def kernel_peaks(threads: int, size: int = 1024, runs: int = 20) -> dict[str, float]:
    """MAC/s of ORT's own kernels on a size^3 matrix product, uint8 x int8 (MatMulInteger, the MLAS kernel
    family QLinearConv/QGemm use) and fp32 (MatMul): the practical peak of this CPU for each precision."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    peaks = {}
    for precision, op, a_type, b in (
        ("int8", "MatMulInteger", TensorProto.UINT8, rng.integers(-64, 64, (size, size)).astype(np.int8)),
        ("fp32", "MatMul", TensorProto.FLOAT, rng.standard_normal((size, size)).astype(np.float32)),
    ):
        out_type = TensorProto.INT32 if precision == "int8" else TensorProto.FLOAT
        graph = helper.make_graph(
            [helper.make_node(op, ["a", "b"], ["y"])], "peak",
            [helper.make_tensor_value_info("a", a_type, [size, size])],
            [helper.make_tensor_value_info("y", out_type, [size, size])],
            [numpy_helper.from_array(b, "b")],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        a = rng.integers(0, 256, (size, size)).astype(np.uint8) if precision == "int8" else rng.standard_normal((size, size)).astype(np.float32)
        stats = time_callable(lambda: session.run(None, {"a": a}), warmup=3, runs=runs)
        peaks[precision] = size**3 / (stats["min_ms"] / 1e3)
    return peaks
