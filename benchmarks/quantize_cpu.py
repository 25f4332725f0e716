"""int8 on ONNX Runtime CPU, side by side, in one run: for each demo model, on the same fp32 ONNX export,

- fp32: the plain export, run by ORT;
- compressor: our int8 artifact (`compressor run --target cpu`: rewrites + U8S8 per-channel PTQ);
- ort-defaults: onnxruntime.quantization.quantize_static with its defaults;
- nncf-defaults: nncf.quantize with its defaults (ONNX backend), if nncf is installed.

Each gets its file size, latency at batch 1 and 16 (2 threads, warm-up, then the median over rounds that
interleave the variants so drift hits all alike), PSNR and max error vs the fp32 export on the same seeded
latents, executed MACs (from the ONNX graph) and achieved MAC/s against this CPU's measured peaks.

    python benchmarks/quantize_cpu.py [--runs 200] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import numpy as np
import onnx

from compressor import api
from compressor.calibration import batches, prior_samples
from compressor.checkpoint import load_checkpoint
from compressor.config import resolve
from compressor.evaluate.latency import time_callable
from compressor.evaluate.paired import data_range_of, psnr
from compressor.runtimes import onnxruntime as ort_runtime
from compressor.runtimes.onnx_export import export_onnx
from compressor.seeds import BENCHMARK_SEED_OFFSET, CALIBRATION_SEED_OFFSET

ROOT = Path(__file__).resolve().parents[1]
DEMOS = ["digits-dcgan", "digits-vae"]
# Measured peaks of this project's machines (DESIGN.md): 2 cores, AVX512-VNNI.
PEAK_MACS = {"int8": 1.0e12, "fp32": 0.25e12}
BATCHES = (1, 16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="timed runs per variant and batch size")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    target = resolve("cpu").target
    results = {"machine": platform.processor() or platform.machine(), "threads": target.benchmark.threads, "models": {}}
    with tempfile.TemporaryDirectory() as scratch:
        for demo in DEMOS:
            results["models"][demo] = measure_demo(demo, Path(scratch) / demo, target, args.runs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quantize_cpu.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown_table(results)
    (args.out / "quantize_cpu.md").write_text(table)
    print(table)


def measure_demo(demo: str, work: Path, target, runs: int) -> dict:
    work.mkdir(parents=True)
    loaded = load_checkpoint(ROOT / "examples" / demo)
    fp32 = export_onnx(loaded.model, loaded.card, work / "fp32.onnx", opset=target.opset)
    calibration = batches(prior_samples(loaded.card, 256, seed=CALIBRATION_SEED_OFFSET), 16)  # what ptq draws
    release = api.run(api.RunConfig(checkpoint=ROOT / "examples" / demo, target="cpu", out=work / "release"))
    variants = {
        "fp32": fp32,
        "compressor": release.release_dir / "model.onnx",
        "ort-defaults": ort_defaults(fp32, work / "ort.onnx", calibration),
    }
    nncf_model = nncf_defaults(fp32, work / "nncf.onnx", calibration)
    if nncf_model is not None:
        variants["nncf-defaults"] = nncf_model
    latents = prior_samples(loaded.card, 64, seed=5_000)
    runners = {name: ort_runtime.load(path, target) for name, path in variants.items()}
    reference = runners["fp32"](latents)[0]
    data_range = data_range_of(next(iter(loaded.card.outputs.values())).range, reference)
    latency = interleaved_latency(runners, loaded.card, runs)
    rows = {}
    for name, path in variants.items():
        output = runners[name](latents)[0]
        macs = executed_macs(path)
        median16 = latency[name]["16"]["median_ms"]
        precision = "fp32" if name == "fp32" else "int8"
        rows[name] = {
            "bytes": path.stat().st_size,
            "latency": latency[name],
            "psnr_vs_fp32_db": psnr(reference, output, data_range),
            "max_abs_error_vs_fp32": float(np.abs(output - reference).max()),
            "executed_macs_per_sample": macs,
            "achieved_macs_per_s_batch16": macs * 16 / (median16 / 1e3),
            "fraction_of_peak_batch16": macs * 16 / (median16 / 1e3) / PEAK_MACS[precision],
        }
    return rows


def ort_defaults(fp32: Path, out: Path, calibration: list[dict]) -> Path:
    from onnxruntime.quantization import quantize_static

    from compressor.runtimes.onnxruntime_quantize import calibration_reader

    quantize_static(str(fp32), str(out), calibration_reader(calibration))  # every other argument: its default
    return out


def nncf_defaults(fp32: Path, out: Path, calibration: list[dict]) -> Path | None:
    try:
        import nncf
    except ImportError:
        return None
    quantized = nncf.quantize(onnx.load(str(fp32)), nncf.Dataset(calibration))
    onnx.save(quantized, str(out))
    return out


def interleaved_latency(runners: dict, card, runs: int, rounds: int = 5) -> dict:
    """Median and p90 per variant and batch size; rounds alternate the variants so machine drift is shared."""
    feeds = {batch: prior_samples(card, batch, seed=BENCHMARK_SEED_OFFSET + batch) for batch in BATCHES}
    samples = {name: {batch: [] for batch in BATCHES} for name in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            for batch in BATCHES:
                stats = time_callable(lambda: runner(feeds[batch]), warmup=10, runs=max(1, runs // rounds))
                samples[name][batch].append(stats["median_ms"])
    return {
        name: {str(batch): {"median_ms": float(np.median(values)), "rounds": values} for batch, values in by_batch.items()}
        for name, by_batch in samples.items()
    }


def executed_macs(path: Path) -> int:
    """Multiply-accumulates per sample of the Conv / ConvTranspose / Gemm / MatMul nodes, from shape inference."""
    model = onnx.load(str(path))
    for value in model.graph.input:
        value.type.tensor_type.shape.dim[0].dim_value = 1
    model = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.value_info}
    shapes.update({v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.output})
    shapes.update({v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.input})
    shapes.update({i.name: list(i.dims) for i in model.graph.initializer})
    total = 0
    for node in model.graph.node:
        weight, out = shapes.get(node.input[1]) if len(node.input) > 1 else None, shapes.get(node.output[0])
        if not weight or not out:
            continue
        if node.op_type == "Conv":
            total += int(np.prod(out)) * int(np.prod(weight[1:]))
        elif node.op_type == "ConvTranspose":
            total += int(np.prod(shapes[node.input[0]])) * int(np.prod(weight[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            total += int(np.prod(out)) * int(shapes[node.input[0]][-1])
    return total


def markdown_table(results: dict) -> str:
    lines = [
        f"Threads: {results['threads']}. Latency: median ms over interleaved rounds. PSNR and max error vs the fp32 export.",
        "",
        "| model | variant | size MB | x fp32 size | batch 1 ms | batch 16 ms | x fp32 (b16) | PSNR dB | max err | MACs/sample | % of peak (b16) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for demo, rows in results["models"].items():
        fp32 = rows["fp32"]
        for name, row in rows.items():
            b1, b16 = row["latency"]["1"]["median_ms"], row["latency"]["16"]["median_ms"]
            lines.append(
                f"| {demo} | {name} | {row['bytes'] / 1e6:.2f} | {row['bytes'] / fp32['bytes']:.2f} | {b1:.3f} | {b16:.3f} | "
                f"{b16 / fp32['latency']['16']['median_ms']:.2f} | {row['psnr_vs_fp32_db']:.1f} | "
                f"{row['max_abs_error_vs_fp32']:.3f} | {row['executed_macs_per_sample'] / 1e6:.1f}M | "
                f"{100 * row['fraction_of_peak_batch16']:.1f} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
