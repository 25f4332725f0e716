"""Full int8 post-training quantization of an fp32 `.tflite` by litert-quantizer (Google's AI Edge quantizer).

Its `static_wi8_ai8` recipe is what XNNPACK and phone NPUs run fastest: int8 weights, symmetric and per
output channel (zero point 0), int8 activations with one scale and zero point per tensor, int32 biases, and
int8 TRANSPOSE_CONV included. The recipe is a list of (scope regex, op, algorithm) entries where the last
match wins, so a layer kept in float is one `no_quantize` entry per op of that layer (litert_graph.py finds
them), and float input/output tensors are `no_quantize` entries for the model's INPUT and OUTPUT.

Why not the alternatives a user would try first: litert-torch's own PT2E quantizer leaves ConvTranspose in
float, and converting the ONNX export with onnx2tf gave wrong output on a Linear -> view -> ConvTranspose
generator (benchmarks/litert_mobile.py measures the PT2E path beside this one).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compressor.errors import ExportError, first_line
from compressor.quiet import native_stderr_silenced, quieted

# Values kept per tensor for its range: enough for a 99.999th percentile, bounded memory on large models.
_MAX_VALUES = 4_000_000
# litert-quantizer truncates op scopes to this many characters before matching (tfl_flatbuffer_utils.get_op_scope).
_SCOPE_LIMIT = 10000
# The quantizer's calibration and conversion log through absl and tqdm; the CLI shows our own progress.
_LOGGERS = ("", "absl", "litert_quantizer")  # calibration also prints a tqdm bar: see quieted(stderr=True)


@dataclass
class Calibrated:
    """An fp32 model with the activation ranges one calibration pass measured on it: later quantizations of the
    same model (auto precision tries many sets of float layers) reuse the ranges instead of calibrating again."""

    fp32: Path
    ranges: Any


def calibrate(fp32: Path, samples: list[dict[str, np.ndarray]], method: str, percentile: float) -> Calibrated:
    """Activation ranges of the fp32 model over every calibration sample (batch 1, named as the model's signature
    names its inputs): the whole range seen (`minmax`) or the central `percentile` of all values (`percentile`).

    litert-quantizer's own calibration keeps a moving average of each sample's min and max (smoothing 0.95),
    which depends on the order of the samples and clips whatever the last few did not reach: the demos' int8
    models were 37.2 dB (DCGAN) and 31.9 dB (VAE) from torch that way, 46.2 and 45.0 dB with the 99.999th
    percentile (benchmarks/litert_mobile.py). So the ranges are computed here from the interpreter's tensors,
    and the quantizer is given them in its own format (the result of a one-sample calibration says which
    tensors it wants, and their shape)."""
    from litert_quantizer import quantizer, recipe

    from compressor.runtimes.litert_graph import SIGNATURE

    qt = quantizer.Quantizer(str(fp32))
    qt.load_quantization_recipe(recipe.static_wi8_ai8())
    with quieted(_LOGGERS, stderr=True), native_stderr_silenced(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its interpreter warns that preserving all tensors is for debugging
        wanted = qt.calibrate({SIGNATURE: samples[:1]})
    values = _activations(fp32, samples, set(wanted))
    ranges = {}
    for name, stats in wanted.items():
        if name not in values:  # not an interpreter tensor (none so far): keep what the quantizer measured
            ranges[name] = stats
            continue
        low, high = _range(values[name], method, percentile)
        ranges[name] = {**stats, "min": np.full_like(stats["min"], min(low, 0.0)), "max": np.full_like(stats["max"], max(high, 0.0))}
    return Calibrated(fp32, ranges)


def _activations(fp32: Path, samples: list[dict[str, np.ndarray]], names: set[str]) -> dict[str, np.ndarray]:
    """Every value each named tensor takes over the samples (subsampled evenly past _MAX_VALUES per tensor)."""
    from ai_edge_litert import interpreter as tflite

    from compressor.runtimes.litert_graph import SIGNATURE

    with warnings.catch_warnings(), native_stderr_silenced():
        warnings.simplefilter("ignore")  # preserve_all_tensors warns that it is meant for debugging, which this is
        interpreter = tflite.Interpreter(model_path=str(fp32), experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    index = {detail["name"]: detail["index"] for detail in interpreter.get_tensor_details() if detail["name"] in names}
    inputs = interpreter.get_signature_runner(SIGNATURE).get_input_details()
    collected: dict[str, list[np.ndarray]] = {name: [] for name in index}
    for sample in samples:
        for name, array in sample.items():
            interpreter.set_tensor(inputs[name]["index"], array.astype(inputs[name]["dtype"], copy=False))
        interpreter.invoke()
        for name, i in index.items():
            collected[name].append(interpreter.get_tensor(i).ravel().astype(np.float32))
    values = {}
    for name, parts in collected.items():
        joined = np.concatenate(parts)
        step = -(-joined.size // _MAX_VALUES)
        values[name] = joined[::step] if step > 1 else joined
    return values


def _range(values: np.ndarray, method: str, percentile: float) -> tuple[float, float]:
    if method == "minmax":
        return float(values.min()), float(values.max())
    tail = (100.0 - percentile) / 2  # the central `percentile` percent of the values
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def quantize(calibrated: Calibrated, out: Path, float_scopes: list[str], float_io: bool) -> Path:
    """Write the int8 model; ops whose scope is in `float_scopes` stay float (with QUANTIZE/DEQUANTIZE around
    them), and with `float_io` the model takes and returns float tensors (QUANTIZE/DEQUANTIZE inside it)."""
    from litert_quantizer import quantizer

    qt = quantizer.Quantizer(str(calibrated.fp32))
    qt.load_quantization_recipe(recipe_for(float_scopes, float_io))
    try:
        with quieted(_LOGGERS, stderr=True), native_stderr_silenced():
            result = qt.quantize(calibrated.ranges)
            result.export_model(str(out), overwrite=True)
    except (ValueError, RuntimeError, KeyError) as exc:
        raise ExportError(
            f"{calibrated.fp32.name}: litert-quantizer could not quantize it to int8: {first_line(exc)}; keep the "
            "layer it names in float with a ptq rule (rules: [{match: <layer>, skip: true}])"
        ) from exc
    return out


def recipe_for(float_scopes: list[str], float_io: bool) -> list[dict[str, Any]]:
    """static_wi8_ai8 for every op, then one `no_quantize` entry per op kept in float (the last match wins)."""
    from litert_quantizer import recipe

    entries = list(recipe.static_wi8_ai8())
    for scope in float_scopes:
        entries.append({"regex": "^" + re.escape(scope[:_SCOPE_LIMIT]) + "$", "operation": "*", "algorithm_key": "no_quantize"})
    if float_io:
        entries += [{"regex": ".*", "operation": io, "algorithm_key": "no_quantize"} for io in ("INPUT", "OUTPUT")]
    return entries

