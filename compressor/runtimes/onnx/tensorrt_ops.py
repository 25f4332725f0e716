"""What each TensorRT release's ONNX parser takes: default-domain operators, opset range, Q/DQ types (plain data).

Where it comes from (cited again at each table):
- Operators: the support matrix the parser ships with, onnx/onnx-tensorrt docs/operators.md, rows marked Y, at
  release/8.6-GA (6ba67d3), release/10.0-GA (eb43908), 10.1-GA (96e7811) and the 10.15 release; the minor
  releases between are 10.0 plus the "Added support for <op>" lines of onnx/onnx-tensorrt docs/Changelog.md.
  Every op that turns Y between 10.1 and 10.15 is named by one of those lines, so nothing is guessed.
- Opset range: the header line of the same operators.md ("TensorRT 8.6 supports operators up to Opset 17",
  "TensorRT 10.0 supports operators in the inclusive range of opset 9 to opset 20", "TensorRT 10.15 ... opset 9 to
  opset 24"). The 10.0 line was still current in February 2025, after 10.8 shipped (a maintainer points to it in
  https://github.com/NVIDIA/TensorRT/issues/4336). The file moved to 22, then 24, somewhere in 10.9..10.15 and no
  stored copy pins when, so 10.9..10.14 keep the last grounded maximum, 20: a stricter check, never a looser one.
  8.6's minimum is 7: its ModelImporter.cpp warns below opset 7 ("not guaranteed to work").
- Q/DQ types: include/NvInfer.h of NVIDIA/TensorRT (IQuantizeLayer/IDequantizeLayer: INT8 only at v8.6.1; INT8,
  FP8 and INT4 at v10.x, INT4 for weights only), and "Added support for FLOAT4E2M1 types for quantized networks"
  in the 10.8 changelog. FP8 is E4M3 only (NvInfer.h clamps FP8 to [-448, 448]).
- TensorRT's own Q/DQ ops (written by TensorRT Model Optimizer in domain "trt"): DEFINE_BUILTIN_OP_IMPORTER(TRT_*)
  in builtin_op_importers.cpp (8.6) and onnxOpImporters.cpp (10.0, 10.1).
"""

from __future__ import annotations

# release/8.6-GA docs/operators.md, every row marked Y.
OPS_8_6 = frozenset({
    "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh", "AveragePool",
    "BatchNormalization", "Cast", "Ceil", "Celu", "Clip", "Concat", "Constant", "ConstantOfShape", "Conv",
    "ConvTranspose", "Cos", "Cosh", "CumSum", "DepthToSpace", "DequantizeLinear", "Div", "Dropout", "Einsum", "Elu",
    "Equal", "Erf", "Exp", "Expand", "EyeLike", "Flatten", "Floor", "GRU", "Gather", "GatherElements", "GatherND",
    "Gemm", "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool", "Greater", "GreaterOrEqual", "GridSample",
    "GroupNormalization", "HardSigmoid", "HardSwish", "Identity", "If", "ImageScaler", "InstanceNormalization",
    "IsInf", "IsNaN", "LRN", "LSTM", "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual", "Log", "LogSoftmax",
    "Loop", "LpNormalization", "LpPool", "MatMul", "Max", "MaxPool", "Mean", "MeanVarianceNormalization", "Min",
    "Mod", "Mul", "Neg", "NonMaxSuppression", "NonZero", "Not", "OneHot", "Or", "PRelu", "Pad",
    "ParametricSoftplus", "Pow", "QuantizeLinear", "RNN", "RandomNormal", "RandomNormalLike", "RandomUniform",
    "RandomUniformLike", "Range", "Reciprocal", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
    "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare", "Relu", "Reshape",
    "Resize", "ReverseSequence", "RoiAlign", "Round", "ScaledTanh", "Scan", "Scatter", "ScatterElements",
    "ScatterND", "Selu", "Shape", "Shrink", "Sigmoid", "Sign", "Sin", "Sinh", "Size", "Slice", "Softmax",
    "Softplus", "Softsign", "SpaceToDepth", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tan", "Tanh",
    "ThresholdedRelu", "Tile", "TopK", "Transpose", "Trilu", "Unsqueeze", "Upsample", "Where", "Xor",
})

# release/10.0-GA docs/operators.md: the 8.6 rows plus four that turned Y in 9.x (none turned N).
OPS_10_0 = OPS_8_6 | {"CastLike", "Gelu", "Hardmax", "Mish"}

# docs/Changelog.md, "Added support for ..." per 10.x minor release (10.1 also in its operators.md).
ADDED_IN_10 = {
    1: frozenset({"DeformConv"}),
    4: frozenset({"BlackmanWindow", "HammingWindow", "HannWindow"}),
    5: frozenset({"STFT"}),
    14: frozenset({"Attention"}),
    15: frozenset({"RMSNormalization", "RotaryEmbedding", "TensorScatter"}),
}

# ONNX TensorProto type names, as onnx.TensorProto.DataType.Name() spells them.
QDQ_TYPES_8_6 = frozenset({"INT8"})
QDQ_TYPES_10 = frozenset({"INT8", "FLOAT8E4M3FN", "INT4"})
QDQ_TYPES_10_8 = QDQ_TYPES_10 | {"FLOAT4E2M1"}
# "TensorRT quantizes activations and weights for INT8, FP8, and FP4. Weight-only quantization is supported for INT4."
# https://docs.nvidia.com/deeplearning/tensorrt/10.11.0/inference-library/work-quantized-types.html
WEIGHT_ONLY_TYPES = frozenset({"INT4"})

TRT_DOMAIN_OPS_8_6 = frozenset({"TRT_FP8QuantizeLinear", "TRT_FP8DequantizeLinear"})
TRT_DOMAIN_OPS_10 = TRT_DOMAIN_OPS_8_6 | {"TRT_INT4QuantizeLinear", "TRT_INT4DequantizeLinear"}


def _release_10(minor: int) -> dict:
    ops = OPS_10_0.union(*(added for since, added in ADDED_IN_10.items() if since <= minor))
    return {
        "ops": ops,
        "opset": (9, 24 if minor >= 15 else 20),
        "qdq_types": QDQ_TYPES_10_8 if minor >= 8 else QDQ_TYPES_10,
        "weight_only_types": WEIGHT_ONLY_TYPES,
        "trt_domain_ops": TRT_DOMAIN_OPS_10,
        "local_functions": True,  # inlined since 9.0 EA ("Added support for ONNX local functions")
        "zero_point_required": False,
    }


# Keyed by "major.minor", oldest first (tensorrt_rules names the first release that takes an op from this order).
# "zero_point_required": 8.6's importer reads Q/DQ input 2 unconditionally (inputs.at(2)),
# so a Q/DQ without a zero point fails to parse there; 10.x defaults it (see tensorrt_rules.py).
RELEASES = {
    "8.6": {
        "ops": OPS_8_6,
        "opset": (7, 17),
        "qdq_types": QDQ_TYPES_8_6,
        "weight_only_types": frozenset(),
        "trt_domain_ops": TRT_DOMAIN_OPS_8_6,
        "local_functions": False,
        "zero_point_required": True,
    },
    **{f"10.{minor}": _release_10(minor) for minor in range(16)},
}
