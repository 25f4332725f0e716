"""Post-training int8 quantization of an fp32 ONNX model into the explicit-quantization (Q/DQ) form TensorRT builds.

NVIDIA Model Optimizer's ONNX PTQ (`modelopt.onnx.quantization.quantize`) does the work, on CPU: it calibrates
with ONNX Runtime's CPU provider and places Q/DQ where TensorRT fuses them (inputs and weights of Conv,
ConvTranspose, Gemm, BatchNormalization..., never their outputs): symmetric int8, per-channel weight scales,
per-tensor activation scales, float biases. Then it casts the float parts to fp16 (or keeps fp32) and raises
the opset to at least 19, the first with fp16 Q/DQ scales (it cannot be kept lower, even in fp32).

ModelOpt's own placement rules leave some layers in float on purpose, for TensorRT speed: a Conv with under 16
input or output channels unless one of them is a multiple of 8 and one is >= 16 or it reads a graph input (an
8 -> 1 image head stays float), and a Gemm/MatMul whose output has a dimension of 1 (GEMV) or whose K or N is
under 16.

One post-pass fixes what TensorRT would misread: ModelOpt (through ORT's quantizer) puts ConvTranspose weight
scales on axis 1, the output channels of the ONNX [Cin, Cout/g, kH, kW] layout, but TensorRT's deconvolution
kernels take per-channel weight scales on axis 0 only (NVIDIA/TensorRT #2380: "We don't support per-output-channel
quant for ConvTranspose"; #1694: axis 1 gives wrong results). ModelOpt's own torch quantizer uses axis 0 for
ConvTranspose for that reason (QUANT_DESC_8BIT_CONVTRANSPOSE2D_WEIGHT_PER_CHANNEL). The TensorRT runtime then
checks every rule on the result (onnx/tensorrt_rules.py), a guard against a ModelOpt version that breaks one.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from compressor.errors import ExportError, first_line
from compressor.quiet import quieted

# ModelOpt silently maps every calibration_method other than "entropy" to ORT's MinMax ("percentile" too):
# accept only the two it implements.
METHODS = ("max", "entropy")
FLOAT_DTYPES = ("fp16", "fp32")


def quantize(
    fp32: Path, out: Path, batches: list[dict[str, np.ndarray]], *, method: str = "max",
    float_nodes: Sequence[str] = (), float_dtype: Literal["fp16", "fp32"] = "fp16",
) -> Path:
    """Write `out`: `fp32` with int8 Q/DQ calibrated on `batches` (feeds of input name -> float32 batch), the
    nodes named in `float_nodes` left in float, everything unquantized in `float_dtype`. One self-contained file,
    the same bytes for the same arguments."""
    import onnx

    if method not in METHODS or float_dtype not in FLOAT_DTYPES:
        raise ValueError(f"method must be one of {METHODS} and float_dtype one of {FLOAT_DTYPES}")
    # ModelOpt writes intermediate files (<name>_opset19.onnx, <name>_named.onnx...) beside its input and its
    # output: a private copy keeps runs that share a folder from colliding or leaving files behind.
    with tempfile.TemporaryDirectory(prefix="compressor-trt-") as tmp:
        # ModelOpt asserts an .onnx suffix; ".quant.onnx" is its own naming and cannot collide with the source.
        source, result = Path(tmp) / f"{fp32.stem}.onnx", Path(tmp) / f"{fp32.stem}.quant.onnx"
        shutil.copyfile(fp32, source)
        try:
            # ...and ORT's symbolic shape inference, which ModelOpt runs and lets fail on ops it does not know,
            # saves sym_shape_infer_temp.onnx and a <uuid>.data into the working folder: run it in ours.
            with quieted(("", "modelopt"), stderr=True), contextlib.chdir(tmp), _ort_patches_undone():
                _run_modelopt(source, result, batches, method, float_nodes, float_dtype)
            # ModelOpt only logs a failed check, and writes nothing when it has no model to write.
            model = onnx.load(str(result))
            onnx.checker.check_model(model)
        except Exception as exc:
            reason = first_line(exc).replace(str(source), str(fp32))  # name the user's file, not our copy
            raise ExportError(
                f"ModelOpt could not quantize {fp32.name} for TensorRT ({type(exc).__name__}: {reason}); "
                "keep the failing layer in float with a ptq rule, or rerun with --debug"
            ) from exc
    _requantize_deconv_weights_on_axis_0(model)  # the TensorRT runtime then checks every rule (onnx/tensorrt_rules.py)
    onnx.save(model, str(out))  # a model under 2 GB is saved whole: no external data
    return out


def _run_modelopt(source: Path, result: Path, batches, method: str, float_nodes: Sequence[str], float_dtype: str):
    from modelopt.onnx.quantization import quantize as modelopt_quantize

    modelopt_quantize(
        onnx_path=str(source),
        output_path=str(result),
        quantize_mode="int8",
        calibration_data_reader=_reader(batches),
        calibration_method=method,
        calibration_eps=["cpu"],  # its default tries TensorRT and CUDA first
        # Exclusions are regular expressions matched at the start of a name: escape and anchor each one, so
        # that "node_conv" does not also keep "node_conv_1" in float.
        nodes_to_exclude=[re.escape(name) + r"\Z" for name in float_nodes],
        high_precision_dtype=float_dtype,
        # Each call re-attaches a stdout handler to its logger at this level; ERROR would still print the
        # "Failed to get GPU count: NVML Shared Library Not Found" of every machine without a GPU.
        log_level="CRITICAL",
    )


@contextlib.contextmanager
def _ort_patches_undone():
    """ModelOpt replaces methods of onnxruntime.quantization's calibrators and quantizers, and edits its op
    registries, for the whole process (ort_patching.patch_ort_modules, ort_utils) and never puts them back:
    ONNX Runtime's own quantize_static, run later in the same process (another target, a test), then fails
    ("Histogram has not been collected") or quantizes other ops. Put them back."""
    from onnxruntime.quantization import base_quantizer, calibrate, qdq_quantizer, registry

    owners = [calibrate, calibrate.MinMaxCalibrater, calibrate.HistogramCalibrater, calibrate.HistogramCollector,
              calibrate.CalibraterBase, qdq_quantizer.QDQQuantizer, base_quantizer.BaseQuantizer]
    saved = [(owner, dict(vars(owner))) for owner in owners]
    tables = [registry.QDQRegistry, registry.QLinearOpsRegistry, registry.IntegerOpsRegistry]
    saved_tables = [(table, dict(table)) for table in tables]
    try:
        yield
    finally:
        for table, before in saved_tables:
            table.clear()
            table.update(before)
        for owner, before in saved:
            for name in set(vars(owner)) - set(before):
                delattr(owner, name)
            for name, value in before.items():
                if vars(owner).get(name) is not value:
                    setattr(owner, name, value)


def _reader(batches: list[dict[str, np.ndarray]]):
    """Hand ModelOpt the project's feeds as they are. Given arrays instead (`calibration_data`), it splits them
    into batches of one, and its GEMV rule then keeps every Gemm/MatMul in float (an output dimension of 1)."""
    from onnxruntime.quantization import CalibrationDataReader

    class Feeds(CalibrationDataReader):
        def __init__(self) -> None:
            self.rewind()

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

        def get_first(self) -> dict[str, np.ndarray]:  # the shape probe ModelOpt runs before calibrating
            return batches[0]

        def rewind(self) -> None:
            self._feeds = iter(batches)

    return Feeds()


def _requantize_deconv_weights_on_axis_0(model) -> None:
    """Give each ConvTranspose weight Q -> DQ pair one symmetric scale per input channel (axis 0), in place.
    ModelOpt duplicates shared constants, so each pair owns its scale and zero-point initializers."""
    from onnx import helper, numpy_helper

    from compressor.runtimes.onnx.graph import producers

    initializers = {init.name: init for init in model.graph.initializer}
    made_by = producers(model.graph)
    for node in (n for n in model.graph.node if n.op_type == "ConvTranspose"):
        dq = made_by.get(node.input[1])
        q = made_by.get(dq.input[0]) if dq is not None else None
        if q is None or q.op_type != "QuantizeLinear" or q.input[0] not in initializers:
            continue  # float weights (a float node), or a form the check below judges
        weight = numpy_helper.to_array(initializers[q.input[0]]).astype(np.float32)
        amax = np.abs(weight).reshape(len(weight), -1).max(axis=1)
        dtype = numpy_helper.to_array(initializers[q.input[1]]).dtype  # fp16 or fp32, as ModelOpt wrote
        scale = np.where(amax > 0, amax / 127, 1).astype(dtype)  # |w / scale| <= 127: the symmetric range
        for pair in (q, dq):
            for name, value in ((pair.input[1], scale), (pair.input[2], np.zeros(len(scale), np.int8))):
                initializers[name].CopyFrom(numpy_helper.from_array(value, name))
            kept = [a for a in pair.attribute if a.name != "axis"]
            del pair.attribute[:]
            pair.attribute.extend([*kept, helper.make_attribute("axis", 0)])
