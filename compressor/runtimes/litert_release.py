"""What a LiteRT release carries beside the `.tflite`: a short Python example that runs it as an app would
(drawing inputs from the model card's prior, quantizing them with the interpreter's own scale and zero point),
and a script that times it on an Android phone with LiteRT's `benchmark_model` over adb."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from compressor.config import Target
    from compressor.modelcard import InputSpec, ModelCard
    from compressor.runtimes.base import Artifact

RUN_EXAMPLE = "run_tflite.py"
PHONE_BENCHMARK = "benchmark_model.sh"
# LiteRT's prebuilt benchmark tool for 64-bit Android (the classic interpreter, with XNNPACK).
BENCHMARK_MODEL_URL = (
    "https://storage.googleapis.com/tensorflow-nightly-public/prod/tensorflow/release/lite/tools/nightly/latest/"
    "android_aarch64_benchmark_model"
)


def write_release_files(final: Artifact, card: ModelCard, target: Target, out: Path) -> list[Path]:
    example = out / RUN_EXAMPLE
    example.write_text(run_example(final.name, card, target.benchmark.threads))
    script = out / PHONE_BENCHMARK
    threads = sorted({target.benchmark.threads, *target.runtime.extra_threads})
    script.write_text(phone_benchmark(final.name, threads, target.benchmark.warmup, target.benchmark.runs))
    script.chmod(0o755)
    return [example, script]


def run_example(model_file: str, card: ModelCard, threads: int) -> str:
    draws = "\n".join(f"    {_prior(spec)},  # {name}: {spec.prior} prior" for name, spec in card.inputs.items())
    return f'''"""Run {model_file} ({card.name}) with LiteRT, as a phone app would: pip install ai-edge-litert numpy"""

import numpy as np
from ai_edge_litert.interpreter import Interpreter

interpreter = Interpreter(model_path="{model_file}", num_threads={threads})  # XNNPACK is applied by default
runner = interpreter.get_signature_runner()
inputs, outputs = runner.get_input_details(), runner.get_output_details()


def to_model(x, detail):
    """Quantize a float input with the model's own scale and zero point when the model takes int8."""
    scale, zero_point = detail["quantization"]
    if detail["dtype"] == np.int8 and scale:
        return np.clip(np.round(x / scale) + zero_point, -128, 127).astype(np.int8)
    return x.astype(detail["dtype"])


def from_model(y, detail):
    scale, zero_point = detail["quantization"]
    return (y.astype(np.float32) - zero_point) * scale if y.dtype == np.int8 and scale else y


rng = np.random.default_rng(0)
samples = [  # one sample (batch 1) of each input, in the order the model takes them: args_0, args_1, ...
{draws}
]
results = runner(**{{f"args_{{k}}": to_model(x, inputs[f"args_{{k}}"]) for k, x in enumerate(samples)}})
for name, y in sorted(results.items()):
    y = from_model(y, outputs[name])
    print(name, y.shape, f"min {{y.min():.3f}} max {{y.max():.3f}}")
'''


def phone_benchmark(model_file: str, threads: list[int], warmup: int, runs: int) -> str:
    loops = " ".join(str(count) for count in threads)
    return f"""#!/bin/sh
# Time {model_file} on an Android phone (arm64) with LiteRT's benchmark_model, XNNPACK on the CPU, over adb.
# benchmark_model: {BENCHMARK_MODEL_URL}
# (or build it: bazel build -c opt --config=android_arm64 //tflite/tools/benchmark:benchmark_model)
# Usage: sh {PHONE_BENCHMARK} [path/to/benchmark_model]; add --enable_op_profiling=true for time per op.
set -e
TOOL=${{1:-./android_aarch64_benchmark_model}}
adb push {model_file} /data/local/tmp/{model_file}
adb push "$TOOL" /data/local/tmp/benchmark_model
adb shell chmod +x /data/local/tmp/benchmark_model
for threads in {loops}; do
  adb shell /data/local/tmp/benchmark_model --graph=/data/local/tmp/{model_file} --use_xnnpack=true \\
    --num_threads=$threads --warmup_runs={warmup} --num_runs={runs}
done
"""


def _prior(spec: InputSpec) -> str:
    shape = (1, *spec.shape)
    dtype = "np.int64" if spec.dtype == "int64" else "np.float32"
    if spec.prior == "normal":
        return f"rng.standard_normal({shape}).astype({dtype})"
    if spec.prior == "uniform":
        low, high = spec.range or (-1.0, 1.0)
        return f"rng.uniform({low}, {high}, {shape}).astype({dtype})"
    if spec.prior == "integers":
        return f"rng.integers({int(spec.range[0])}, {int(spec.range[1]) + 1}, {shape}).astype({dtype})"
    if spec.prior == "fixed":
        return f"np.full({shape}, {spec.value}, {dtype})"
    return f"rng.choice({spec.values}, {shape}).astype({dtype})"
