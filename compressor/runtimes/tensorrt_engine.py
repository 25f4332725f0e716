"""TensorRT engines for NVIDIA GPUs and Jetson boards, built ON the device from the release's int8 Q/DQ ONNX.

An engine only runs on the GPU model and TensorRT version that built it, so a release carries the ONNX, and
this module (or the `build_engine.sh` that `build_script` writes, for devices without compressor) builds the
engine there. Written against the TensorRT 10 Python API; `tensorrt` and `torch` are imported inside the
functions that need them, and torch CUDA tensors, streams and events stand in for pycuda / cuda-python.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from compressor.errors import CompressorError, first_line


def unavailable_reason() -> str | None:
    """None when TensorRT imports and torch sees a CUDA GPU; else one line: what is missing, how to get it."""
    try:
        import tensorrt  # noqa: F401
    except (ImportError, OSError) as exc:  # OSError: the Python package is there but libnvinfer is not
        return (f"tensorrt is not importable ({first_line(exc)}); pip install tensorrt (its libraries come from "
                "NVIDIA's index, pypi.nvidia.com) or JetPack's python3-libnvinfer on a Jetson")
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU visible to torch; run on the NVIDIA machine, with a CUDA build of torch"
    return None


@dataclass(frozen=True)
class EngineSpec:
    inputs: dict[str, tuple[int, ...]]  # per-sample shape of each input (batch axis excluded)
    batch_sizes: tuple[int, ...]  # optimisation profile: min = smallest, opt = max = largest
    int8: bool
    fp16: bool
    workspace_mb: int
    dla_core: int | None = None  # DLA with GPU fallback when set
    sparsity: bool = False  # BuilderFlag.SPARSE_WEIGHTS (2:4 sparse tensor cores)

    def __post_init__(self) -> None:
        if not self.inputs or not self.batch_sizes or min(self.batch_sizes) < 1 or self.workspace_mb < 1:
            raise ValueError(f"EngineSpec needs inputs, batch sizes >= 1 and a workspace >= 1 MiB: {self}")

    def shapes(self, batch: int) -> dict[str, tuple[int, ...]]:
        return {name: (batch, *shape) for name, shape in self.inputs.items()}


def build_engine(onnx_path: Path, engine_path: Path, spec: EngineSpec, timing_cache: Path | None = None) -> dict:
    """Parse the ONNX, build the engine, write it (atomically) and the updated timing cache; what was built."""
    import tensorrt as trt
    import torch

    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise CompressorError(f"{onnx_path}: ONNX file not found; export the release first")
    logger = _logger(trt)
    builder = trt.Builder(logger)
    # Explicit batch is TensorRT 10's only mode; flags 0 = weakly typed, so the INT8/FP16 builder flags pick
    # the precisions (Q/DQ-fenced layers in int8, the rest fp16 where faster).
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    _parse(parser, onnx_path)
    config = _config(trt, builder, network, spec)
    _attach_timing_cache(config, timing_cache)
    logger.errors.clear()  # a refused stale cache logs an error that is not the build's
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        raise CompressorError(f"{onnx_path}: TensorRT {trt.__version__} could not build an engine "
                              f"({logger.first_error()}); a larger workspace_mb may help")
    _write_atomic(engine_path, serialized)
    if timing_cache is not None:
        _write_atomic(Path(timing_cache), config.get_timing_cache().serialize())
    inspector = _deserialize(trt, logger, serialized, spec).create_engine_inspector()
    layers = layer_precisions(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    return {"tensorrt_version": trt.__version__, "device": _device_name(torch, spec),
            "build_seconds": round(seconds, 3), "layers": layers, "precision_counts": dict(Counter(layers.values()))}


def time_engine(engine_path: Path, spec: EngineSpec, warmup: int, runs: int, seed: int = 0) -> dict:
    """Latency per batch size in the CPU runtime's benchmark shape: the GPU time of each execute_async_v3
    between two CUDA events on one stream (trtexec's "GPU Compute Time"), inputs seeded randn."""
    import tensorrt as trt
    import torch

    from compressor.evaluate.latency import summarize

    if not Path(engine_path).is_file():
        raise CompressorError(f"{engine_path}: engine not found; build it first (build_engine or build_engine.sh)")
    logger = _logger(trt)
    engine = _deserialize(trt, logger, Path(engine_path).read_bytes(), spec)
    if sorted(_io_names(engine, trt.TensorIOMode.INPUT)) != sorted(spec.inputs):
        raise CompressorError(f"{engine_path}: its inputs are not {sorted(spec.inputs)}; rebuild the engine")
    context = engine.create_execution_context()
    stream = torch.cuda.Stream()
    batches = {}
    for batch in spec.batch_sizes:
        buffers = _bind(trt, torch, engine, context, spec.shapes(batch), seed)
        times = _gpu_times(torch, logger, context, stream, warmup, runs)
        del buffers  # only now: the context pointed at them until the runs were done
        stats = summarize(times, warmup)
        batches[str(batch)] = {**stats, "per_sample_ms": stats["median_ms"] / batch}
    return {"batches": batches, "device": _device_name(torch, spec), "tensorrt_version": trt.__version__}


def trtexec_command(
    onnx_file: str, engine_file: str, spec: EngineSpec, timing_cache: str | None = "timing.cache"
) -> str:
    """The trtexec (TensorRT 10) command line that builds the engine build_engine builds."""
    low, high = min(spec.batch_sizes), max(spec.batch_sizes)
    args = ["trtexec", f"--onnx={onnx_file}", f"--saveEngine={engine_file}"]
    args += (["--int8"] if spec.int8 else []) + (["--fp16"] if spec.fp16 else [])
    for which, batch in (("min", low), ("opt", high), ("max", high)):
        args.append(f"--{which}Shapes={_shape_list(spec.shapes(batch))}")
    args.append(f"--memPoolSize=workspace:{spec.workspace_mb}M")
    if spec.dla_core is not None:
        args += [f"--useDLACore={spec.dla_core}", "--allowGPUFallback"]
    args += ["--sparsity=enable"] if spec.sparsity else []
    args += [f"--timingCacheFile={timing_cache}"] if timing_cache else []
    args += ["--profilingVerbosity=detailed", "--dumpLayerInfo", "--exportLayerInfo=layers.json"]
    return shlex.join(args)  # quotes whatever the shell would split or expand


def build_script(onnx_file: str, spec: EngineSpec, target_name: str, tensorrt_version: str) -> str:
    """`build_engine.sh`: POSIX sh that builds the engine with trtexec, next to the ONNX, on the device."""
    engine_file = str(PurePosixPath(onnx_file).with_suffix(".engine"))
    expected = ".".join(tensorrt_version.split(".")[:2])
    target = " ".join(target_name.split())  # one line: it goes into a comment
    return f"""#!/bin/sh
# Builds {engine_file} for {target} from {onnx_file} with trtexec; the release was made for TensorRT {expected}.
# Run it on the device itself: an engine only runs on the GPU and TensorRT version that built it.
set -eu
cd "$(dirname "$0")"
if ! command -v trtexec >/dev/null 2>&1; then
    if [ -x /usr/src/tensorrt/bin/trtexec ]; then
        PATH="/usr/src/tensorrt/bin:$PATH"  # where JetPack installs it, off PATH
    else
        echo "trtexec not found: JetPack has it in /usr/src/tensorrt/bin (apt install tensorrt);" \\
             "elsewhere add the bin/ folder of the TensorRT install to PATH" >&2
        exit 1
    fi
fi
expected={shlex.quote(expected)}
# trtexec's banner says "[TensorRT v101600]": major*10000 + minor*100 + patch (TensorRT 8: major*1000 + ...).
version=$(trtexec --help 2>&1 | sed -n 's/.*\\[TensorRT v\\([0-9][0-9]*\\)\\].*/\\1/p' | head -n 1)
if [ -z "$version" ]; then
    found=unknown
elif [ "$version" -ge 100000 ]; then
    found="$((version / 10000)).$((version / 100 % 100))"
else
    found="$((version / 1000)).$((version / 100 % 10))"
fi
if [ "$found" != "$expected" ]; then
    echo "warning: trtexec is TensorRT $found, the release was made for TensorRT $expected;" \\
         "the build may fail or differ from the release's report" >&2
fi
{trtexec_command(onnx_file, engine_file, spec)}
"""


_PRECISIONS = {"fp32": "fp32", "float": "fp32", "fp16": "fp16", "half": "fp16", "bfloat16": "bf16", "bf16": "bf16",
               "fp8": "fp8", "fp4": "fp4", "int8": "int8", "uint8": "uint8", "int32": "int32", "int64": "int64",
               "bool": "bool"}
_PRECISION_WORD = re.compile(r"\b(" + "|".join(_PRECISIONS) + r")\b", re.IGNORECASE)


def layer_precisions(engine_json: str) -> dict[str, str]:
    """Layer name -> the precision of its first input ("Row major Int8 format" -> int8; TensorRT's engine
    explorer counts precisions so), or its layer type where no tensor says; from the engine inspector's JSON."""
    precisions = {}
    for layer in json.loads(engine_json).get("Layers", []):
        if isinstance(layer, str):  # an engine built below DETAILED profiling verbosity lists names only
            precisions[layer] = "unknown"
            continue
        tensors = layer.get("Inputs") or layer.get("Outputs") or [{}]
        match = _PRECISION_WORD.search(tensors[0].get("Format/Datatype", ""))
        precisions[layer["Name"]] = _PRECISIONS[match[1].lower()] if match else layer.get("LayerType", "unknown")
    return precisions


def _shape_list(shapes: dict[str, tuple[int, ...]]) -> str:
    """trtexec's "z:1x64,label:1x10"; a name holding ':' goes in single quotes, the quoting trtexec reads."""
    parts = []
    for name, shape in shapes.items():
        if "," in name or "'" in name:
            raise ValueError(f"input name {name!r}: trtexec shape lists cannot hold ',' or \"'\"; rename the input")
        quoted = f"'{name}'" if ":" in name else name
        parts.append(f"{quoted}:{'x'.join(map(str, shape))}")
    return ",".join(parts)


def _logger(trt):
    """A TensorRT logger that keeps the errors (the first goes into our one-line messages) and drops the
    rest: TensorRT's warnings and info would bury compressor's output."""

    class Collecting(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg) -> None:
            if severity <= trt.ILogger.ERROR:  # INTERNAL_ERROR = 0, ERROR = 1
                self.errors.append(msg)

        def first_error(self) -> str:
            return first_line(self.errors[0]) if self.errors else "no error logged"

    return Collecting()


def _parse(parser, onnx_path: Path) -> None:
    # parse_from_file, not parse(bytes): the parser then finds external weight files next to the model.
    if parser.parse_from_file(str(onnx_path)):
        return
    if parser.num_errors == 0:
        raise CompressorError(f"{onnx_path}: TensorRT cannot read this file; is it a valid ONNX model?")
    error = parser.get_error(0)
    where = f"node '{error.node_name()}' ({error.node_operator()})" if error.node_name() else "the model"
    raise CompressorError(f"{onnx_path}: TensorRT cannot parse {where}: {first_line(error.desc())}; "
                          "keep that op out of the graph or export it with another opset")


def _config(trt, builder, network, spec: EngineSpec):
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.workspace_mb << 20)
    # hasattr: TensorRT 11 removed INT8/FP16 (every network strongly typed, precisions from the ONNX).
    for wanted, flag in ((spec.int8, "INT8"), (spec.fp16, "FP16"), (spec.sparsity, "SPARSE_WEIGHTS")):
        if wanted and hasattr(trt.BuilderFlag, flag):
            config.set_flag(getattr(trt.BuilderFlag, flag))
    if spec.dla_core is not None:
        if spec.dla_core >= builder.num_DLA_cores:
            raise CompressorError(f"DLA core {spec.dla_core} asked for; this device has {builder.num_DLA_cores}")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = spec.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)  # what DLA cannot run goes to the GPU, not a failed build
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # per-layer precisions in the inspector
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    if sorted(names) != sorted(spec.inputs):
        raise CompressorError(f"the ONNX inputs {sorted(names)} are not the spec's {sorted(spec.inputs)}")
    profile = builder.create_optimization_profile()
    low, high = spec.shapes(min(spec.batch_sizes)), spec.shapes(max(spec.batch_sizes))
    for name in names:
        profile.set_shape(name, low[name], high[name], high[name])
    config.add_optimization_profile(profile)
    return config


def _attach_timing_cache(config, path: Path | None) -> None:
    """Start from what earlier builds measured (a rebuild then takes seconds); set_timing_cache refuses a
    cache from another GPU or TensorRT version, and the build then starts from an empty one."""
    data = Path(path).read_bytes() if path is not None and Path(path).is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)


def _deserialize(trt, logger, data, spec: EngineSpec):
    runtime = trt.Runtime(logger)
    if spec.dla_core is not None:
        runtime.DLA_core = spec.dla_core  # the DLA core an engine runs on is chosen when it is loaded
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise CompressorError(f"TensorRT {trt.__version__} cannot load the engine ({logger.first_error()}); "
                              "rebuild it on this device with this TensorRT")
    return engine


def _io_names(engine, mode) -> list[str]:
    names = (engine.get_tensor_name(i) for i in range(engine.num_io_tensors))
    return [name for name in names if engine.get_tensor_mode(name) == mode]


def _bind(trt, torch, engine, context, shapes: dict[str, tuple[int, ...]], seed: int) -> dict:
    """Set input shapes and device buffers; inputs drawn as the CPU benchmark draws them (a seeded CPU
    generator, inputs in the model card's order), outputs sized by the shapes TensorRT infers."""
    dtypes = {trt.float32: torch.float32, trt.float16: torch.float16, trt.bfloat16: torch.bfloat16,
              trt.int8: torch.int8, trt.uint8: torch.uint8, trt.int32: torch.int32, trt.int64: torch.int64,
              trt.bool: torch.bool}
    generator = torch.Generator().manual_seed(seed)
    buffers = {}
    for name, shape in shapes.items():
        buffers[name] = torch.randn(shape, generator=generator).to("cuda", dtypes[engine.get_tensor_dtype(name)])
        if not context.set_input_shape(name, shape):
            raise CompressorError(f"input '{name}': shape {shape} is outside the engine's optimisation profile")
    for name in _io_names(engine, trt.TensorIOMode.OUTPUT):
        shape = tuple(context.get_tensor_shape(name))
        buffers[name] = torch.empty(shape, dtype=dtypes[engine.get_tensor_dtype(name)], device="cuda")
    for name, tensor in buffers.items():
        context.set_tensor_address(name, tensor.data_ptr())
    torch.cuda.synchronize()  # the inputs were written on the default stream; the engine runs on another
    return buffers


def _gpu_times(torch, logger, context, stream, warmup: int, runs: int) -> np.ndarray:
    for _ in range(warmup):
        context.execute_async_v3(stream.cuda_stream)
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(runs)]
    for start, end in events:
        start.record(stream)
        if not context.execute_async_v3(stream.cuda_stream):
            raise CompressorError(f"TensorRT could not run the engine ({logger.first_error()})")
        end.record(stream)
    stream.synchronize()  # one wait at the end keeps the runs back to back
    return np.array([start.elapsed_time(end) for start, end in events])


def _device_name(torch, spec: EngineSpec) -> str:
    name = torch.cuda.get_device_name()
    return name if spec.dla_core is None else f"{name} (DLA core {spec.dla_core}, GPU fallback)"


def _write_atomic(path: Path, data) -> None:
    """Write through a temp file in the same folder and os.replace: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False)
    try:
        with handle:
            handle.write(data)  # bytes, or TensorRT's IHostMemory (it has the buffer protocol)
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
