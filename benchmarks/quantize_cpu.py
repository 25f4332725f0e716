"""int8 on ONNX Runtime CPU, side by side, in one run: for each demo model, on the same fp32 ONNX export,

- fp32: the plain export, run by ORT;
- compressor-ptq: our int8 artifact (`compressor run --target cpu`: rewrites + U8S8 per-channel PTQ with
  7-bit weights);
- compressor-qat: `compressor run --target cpu --profile qat` (rewrites + NNCF QAT, same grid);
- compressor-ptq-8bit: PTQ for `--target cpu-x86-vnni` (all 8 weight bits), which only VNNI cores run
  without saturating: on a CPU without VNNI this row shows what saturation costs;
- ort-defaults: onnxruntime.quantization.quantize_static with its defaults;
- nncf-defaults: nncf.quantize with its defaults (ONNX backend);
- compressor-fp32: our rewritten fp32 export (the release's model.fp32.onnx, no quantization), which
  separates what the rewrites gain from what int8 gains.

Each gets its file size, latency at batch 1 and 16 (2 threads, warm-up, then the median over rounds that
interleave the variants so drift hits all alike), PSNR and max error vs the fp32 export on the same seeded
latents, executed MACs (from the ONNX graph) and achieved MAC/s against this CPU's peaks, measured in the
same run with ORT's own kernels on a large matrix product (uint8 x int8 and fp32), and an ORT profile at
batch 16: the share of kernel time per op type, which says where the time goes.

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
from compressor.hostcpu import cpu_flags
from compressor.runtimes.base import Artifact
from compressor.runtimes.onnx.export import export_onnx
from compressor.runtimes.onnxruntime import OnnxRuntime
from compressor.runtimes.onnxruntime_peaks import kernel_peaks
from compressor.seeds import (
    BENCHMARK_QUALITY_SEED_OFFSET,
    BENCHMARK_SEED_OFFSET,
    CALIBRATION_SEED_OFFSET,
)
from compressor.stages.ptq import PTQConfig

ROOT = Path(__file__).resolve().parents[1]
DEMOS = ["digits-dcgan", "digits-vae"]
BATCHES = (1, 16)
# PSNR of one artifact moved by 2-3 dB between sets of 32-64 latents: comparisons need many more.
QUALITY_SAMPLES = 512


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="timed runs per variant and batch size")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    target = resolve("cpu").target
    results = {
        "machine": platform.processor() or platform.machine(),
        "cpu_flags": sorted(cpu_flags()),
        "threads": target.benchmark.threads,
        "peak_macs_per_s": kernel_peaks(target.benchmark.threads),
        "models": {},
    }
    with tempfile.TemporaryDirectory() as scratch:
        for demo in DEMOS:
            results["models"][demo] = measure_demo(demo, Path(scratch) / demo, target, args.runs, results["peak_macs_per_s"])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quantize_cpu.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown_table(results)
    (args.out / "quantize_cpu.md").write_text(table)
    print(table)


def measure_demo(demo: str, work: Path, target, runs: int, peaks: dict[str, float]) -> dict:
    work.mkdir(parents=True)
    loaded = load_checkpoint(ROOT / "examples" / demo)
    fp32 = export_onnx(loaded.model, loaded.card, work / "fp32.onnx", opset=target.runtime.opset)
    ptq = PTQConfig()  # what the ptq stage draws by default
    calibration = batches(prior_samples(loaded.card, ptq.samples, seed=CALIBRATION_SEED_OFFSET), ptq.batch)

    def ours(target_name: str, profile: str | None, artifact: str = "model.onnx") -> Path:
        out = work / f"{target_name}-{profile or 'ptq'}"
        if not out.exists():  # quality (FID) is the run's business, not this table's: skip its minutes
            config = api.RunConfig(checkpoint=ROOT / "examples" / demo, target=target_name, profile=profile, out=out, sets=("quality.fid=off",))
            api.run(config)
        return next(out.iterdir()) / artifact  # the one release folder

    variants = {
        "fp32": fp32,
        "compressor-fp32": ours("cpu", None, "model.fp32.onnx"),
        "compressor-ptq": ours("cpu", None),
        "compressor-qat": ours("cpu", "qat"),
        "compressor-ptq-8bit": ours("cpu-x86-vnni", None),
        "ort-defaults": ort_defaults(fp32, work / "ort.onnx", calibration),
        "nncf-defaults": nncf_defaults(fp32, work / "nncf.onnx", calibration),
    }
    latents = prior_samples(loaded.card, QUALITY_SAMPLES, seed=BENCHMARK_QUALITY_SEED_OFFSET)
    ort = OnnxRuntime(target)
    runners = {name: ort.load(Artifact(path, "onnx", name, "final")) for name, path in variants.items()}
    reference = runners["fp32"](latents)[0]
    data_range = data_range_of(loaded.card.output_range, reference)
    latency = interleaved_latency(runners, loaded.card, runs)
    rows = {}
    for name, path in variants.items():
        output = runners[name](latents)[0]
        macs = executed_macs(path)
        median16 = latency[name]["16"]["median_ms"]
        precision = "fp32" if name in ("fp32", "compressor-fp32") else "int8"
        rows[name] = {
            "bytes": path.stat().st_size,
            "latency": latency[name],
            "psnr_vs_fp32_db": psnr(reference, output, data_range),
            "max_abs_error_vs_fp32": float(np.abs(output - reference).max()),
            "executed_macs_per_sample": macs,
            "achieved_macs_per_s_batch16": macs * 16 / (median16 / 1e3),
            "fraction_of_peak_batch16": macs * 16 / (median16 / 1e3) / peaks[precision],
            "time_by_op_type_batch16": ort_profile(path, target, loaded.card),
        }
    return rows


def ort_defaults(fp32: Path, out: Path, calibration: list[dict]) -> Path:
    from onnxruntime.quantization import quantize_static

    from compressor.runtimes.onnxruntime_quantize import calibration_reader

    quantize_static(str(fp32), str(out), calibration_reader(calibration))  # every other argument: its default
    return out


def nncf_defaults(fp32: Path, out: Path, calibration: list[dict]) -> Path:
    import nncf

    quantized = nncf.quantize(onnx.load(str(fp32)), nncf.Dataset(calibration))
    onnx.save(quantized, str(out))
    return out


def ort_profile(path: Path, target, card) -> dict[str, float]:
    """Share of ORT's kernel time per op type at batch 16, from the runtime's own profile of the session the
    latency figures come from (OnnxRuntime.op_times), largest first."""
    artifact = Artifact(path=path, format="onnx", precision="as exported", role="final")
    times = OnnxRuntime(target).op_times(artifact, card, seed=BENCHMARK_SEED_OFFSET + 16, batch=16)
    total = sum(times.values())
    return {op: time / total for op, time in times.items()}


def interleaved_latency(runners: dict, card, runs: int, rounds: int = 5) -> dict:
    """Median over rounds of each round's median, per variant and batch size (each round's value is kept too);
    rounds alternate the variants so machine drift is shared."""
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
    model = onnx.shape_inference.infer_shapes(model, data_prop=True)  # reshapes computed from Shape ops too
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
    peaks = results["peak_macs_per_s"]
    lines = [
        f"CPU flags: {', '.join(results['cpu_flags']) or 'none found'}. Threads: {results['threads']}. "
        f"Measured peaks (ORT, 1024^3 matrix product): int8 {peaks['int8'] / 1e9:.0f} GMAC/s, "
        f"fp32 {peaks['fp32'] / 1e9:.0f} GMAC/s.",
        f"Latency: median ms over interleaved rounds. PSNR and max error vs the fp32 export on the same "
        f"{QUALITY_SAMPLES} latents.",
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
    lines += [
        "",
        "Where the time goes at batch 16 (ORT profiler, share of kernel time by op type, top 6):",
        "",
        "| model | variant | op types |",
        "|---|---|---|",
    ]
    for demo, rows in results["models"].items():
        for name, row in rows.items():
            shares = list(row["time_by_op_type_batch16"].items())[:6]
            lines.append(f"| {demo} | {name} | {', '.join(f'{op} {100 * share:.0f}%' for op, share in shares)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
