"""When an int8 artifact is slower than its baseline, the runtime's profiler says which op types cost the time."""

from __future__ import annotations

from pathlib import Path

from compressor import api
from compressor.config import resolve
from compressor.modelcard import ModelCard
from compressor.runtimes import runtime_for
from compressor.runtimes.base import Artifact
from compressor.runtimes.onnx.export import export_onnx
from compressor.testing.models import TinyDecoder, card_dict, randomized


def test_onnxruntime_measures_its_kernels_best_rates():
    peaks = runtime_for(resolve("cpu").target).kernel_peaks()
    assert set(peaks) == {"int8", "fp32"} and all(rate > 1e8 for rate in peaks.values())


def test_onnxruntime_profiles_time_per_op_type(tmp_path: Path):
    card = ModelCard.model_validate(card_dict("tiny", 4))
    path = export_onnx(randomized(TinyDecoder()), card, tmp_path / "model.onnx", opset=20)
    runtime = runtime_for(resolve("cpu").target)
    times = runtime.op_times(Artifact(path=path, format="onnx", precision="fp32", role="final"), card, seed=0, batch=4)
    # every op type the decoder runs (after ORT's fusions: GroupNorm as InstanceNormalization, SiLU as QuickGelu)
    assert {"Conv", "Gemm", "Resize", "InstanceNormalization", "QuickGelu"} <= set(times)
    assert sum(times.values()) > 0
    assert list(times.values()) == sorted(times.values(), reverse=True)  # slowest first


class _FakeRuntime:
    def __init__(self):
        self.asked = []

    def op_times(self, artifact, card, seed, batch):
        self.asked.append((artifact.name, batch))
        return {"QLinearConv": 2.0}

    def kernel_peaks(self):  # a CPU whose int8 kernels are no faster than its fp32 ones (AMD Zen 1)
        return {"int8": 42e9, "fp32": 39e9}


class _Context:
    class config:
        seed = 0

    card = None


def _records(int8_ms: float) -> dict:
    def record(role, ms):
        return {"role": role, "latency": {"batches": {"1": {"median_ms": ms / 8}, "16": {"median_ms": ms}}}}

    return {"model.fp32.onnx": record("baseline", 10.0), "model.onnx": record("final", int8_ms)}


def _artifacts() -> list[Artifact]:
    return [Artifact(path=Path(name), format="onnx", precision="x", role=role)
            for name, role in (("model.fp32.onnx", "baseline"), ("model.onnx", "final"))]


def test_a_slower_int8_artifact_is_warned_about_and_gets_both_profiles_a_faster_one_none(caplog):
    runtime = _FakeRuntime()
    slower = _records(12.5)
    api._compare_with_baseline(slower, _artifacts(), runtime, _Context())
    assert "model.onnx is 1.25x SLOWER than model.fp32.onnx at batch 16" in caplog.text
    assert "int8 kernels are only 1.08x its fp32 ones (42 vs 39 GMAC/s), so int8 buys size here" in caplog.text
    assert slower["model.onnx"]["kernel_peaks_gmacs"] == {"int8": 42.0, "fp32": 39.0, "int8_over_fp32": 1.08}
    assert slower["model.onnx"]["latency_vs_fp32"] == {"batch": 16, "ratio": 1.25}
    assert sorted(runtime.asked) == [("model.fp32.onnx", 16), ("model.onnx", 16)]
    assert slower["model.onnx"]["op_times_ms"] == {"batch": 16, "by_op_type": {"QLinearConv": 2.0}}
    faster, runtime.asked = _records(5.0), []
    api._compare_with_baseline(faster, _artifacts(), runtime, _Context())
    assert runtime.asked == [] and "op_times_ms" not in faster["model.onnx"]
