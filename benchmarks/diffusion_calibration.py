"""Int8 of a diffusion UNet: calibrating along its sampling loops vs on single random-timestep calls, and what
keeping its input/output layers float and bias correction each bring, in one run.

For the digits-ddpm demo (20 DDIM steps), releases of `compressor run --target cpu` that differ only in the ptq
stage's settings:
- the default: calibrated on the inputs the fp32 model's own sampling loops feed it (every step of each loop),
  the layers that read the model's inputs or write its output kept float (`io_layers: auto`), biases corrected;
- `one timestep`: the same, calibrated on x ~ N(0, I) all at one random timestep (given as a `--calibration`
  file), the naive recipe Q-Diffusion and PTQ4DM measured failing;
- `prior`: the same, calibrated on each input drawn from its prior (a random timestep per sample);
- the default without float io layers, without bias correction, and without both (the previous default).
Each is judged by the release's own quality step on the whole loop: the final images after 20 steps, same
seeds and sample count as the fp32 original, FID (Inception, when its weights are installed) and FD-surrogate
against the original's samples on other seeds, with the original's own score (the noise floor) recorded; plus
PSNR/SSIM paired with the original's images. Latency per image (20 calls and the scheduler, batch 1) and per
call is timed for the fp32 export and every int8 file in interleaved rounds of this one process, with the CPU
flags recorded. Writes JSON and a Markdown table.

    python benchmarks/diffusion_calibration.py [--samples 2048] [--rounds 5] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import onnxruntime as ort

from compressor import api
from compressor.checkpoint import load_checkpoint
from compressor.hostcpu import cpu_description, cpu_flags
from compressor.sampler import sampler_for

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "digits-ddpm"
ONE_TIMESTEP = "one timestep"  # stands for `stages.ptq.calibration=<a file of inputs at one timestep>`
ONE_TIMESTEP_SAMPLES = 256
# (row label, the ptq settings it changes from the default)
VARIANTS = (
    ("int8 release (default)", ()),
    ("calibrated on one timestep", (ONE_TIMESTEP,)),
    ("calibrated on the prior", ("stages.ptq.calibrate_on=prior",)),
    ("io layers int8", ("stages.ptq.io_layers=int8",)),
    ("io layers int8 but conv_in", ("stages.ptq.io_layers=int8", "stages.ptq.rules=[{match: conv_in, precision: fp32}]")),
    ("no bias correction", ("stages.ptq.bias_correction=false",)),
    ("io layers int8, no bias correction", ("stages.ptq.io_layers=int8", "stages.ptq.bias_correction=false")),
)
CALLS_PER_ROUND = 20  # single calls timed per variant and round


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2048, help="images each variant and the original generate")
    parser.add_argument("--fid", default="auto", choices=["auto", "on", "off"])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    results = {"machine": cpu_description(), "processor": platform.processor(), "cpu_flags": sorted(cpu_flags()),
               "date": date.today().isoformat(), "samples": args.samples, "variants": {}}
    with tempfile.TemporaryDirectory() as scratch:
        files = {}
        for label, changes in VARIANTS:
            start = time.perf_counter()
            one_timestep = ONE_TIMESTEP in changes
            changes = [f"stages.ptq.calibration={one_timestep_file(Path(scratch))}" if change == ONE_TIMESTEP else change
                       for change in changes]
            sets = (f"quality.samples={args.samples}", f"quality.fid={args.fid}", "budgets.latency_vs_baseline=null", *changes)
            out = Path(scratch) / f"variant-{len(files)}"
            result = api.run(api.RunConfig(checkpoint=DEMO, target="cpu", out=out, sets=sets))
            manifest = result.manifest
            row = _row(manifest["artifacts"]["model.onnx"], one_timestep)
            results["variants"][label] = {**row, "sets": list(changes), "release_seconds": round(time.perf_counter() - start, 1)}
            if "fp32 original" not in results["variants"]:
                results["variants"]["fp32 original"] = _row(manifest["artifacts"]["model.fp32.onnx"])
                results["quality_reference"] = manifest["quality_reference"]
                files["fp32 original"] = result.release_dir / "model.fp32.onnx"
            files[label] = result.release_dir / "model.onnx"
        timing = interleaved_latency(files, args.rounds)
    for name, times in timing.items():
        results["variants"][name]["this_run_latency"] = times
    fp32 = timing["fp32 original"]["per_image_ms"]
    for name, times in timing.items():
        times["per_image_vs_fp32"] = times["per_image_ms"] / fp32
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "diffusion_calibration.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (args.out / "diffusion_calibration.md").write_text(table)
    print(table)


def one_timestep_file(folder: Path, samples: int = ONE_TIMESTEP_SAMPLES, seed: int = 0) -> Path:
    """Calibration inputs at a single timestep drawn once (seeded): x ~ N(0, I), the same t for every sample."""
    rng = np.random.default_rng(seed)
    t = int(rng.integers(0, 1000))
    path = folder / f"one-timestep-{t}.npz"
    np.savez(path, sample=rng.standard_normal((samples, 1, 32, 32)).astype(np.float32),
             timestep=np.full(samples, t, dtype=np.int64))
    return path


def _row(record: dict, one_timestep: bool = False) -> dict:
    quality = record["quality"]
    row = {"bytes": record["bytes"], "psnr_db": quality["psnr_db"], "ssim": quality.get("ssim"),
           "parity_psnr_db": record["parity"]["psnr_db"]}
    for metric in ("fid", "fd_surrogate"):
        if isinstance(quality.get(metric), dict) and "value" in quality[metric]:
            row[metric] = {key: quality[metric][key] for key in ("value", "reference_model_score", "delta")}
    details = record.get("details") or {}
    if details.get("stage") == "ptq":
        source = details["calibration"]
        row["calibration"] = (source if not one_timestep
                              else f"one timestep (t={Path(source).stem.split('-')[-1]}, {ONE_TIMESTEP_SAMPLES} samples)")
        row["float_layers"] = sorted(layer for layer, entry in details["layers"].items() if entry["precision"] != "int8")
        row["bias_correction"] = details.get("bias_correction", {}).get("applied", False)
    return row


def interleaved_latency(files: dict[str, Path], rounds: int) -> dict[str, dict[str, float]]:
    """Median ms of one call and of one whole image (batch 1) for each file, the files taking turns every round."""
    loaded = load_checkpoint(DEMO)
    sampler = sampler_for(loaded.card)
    start = sampler.start(1, seed=0)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sessions = {name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]) for name, path in files.items()}
    runners = {name: (lambda feeds, s=session: s.run(None, feeds)) for name, session in sessions.items()}
    one_call = {"sample": start["sample"], "timestep": np.array([500], dtype=np.int64)}
    per_image = {name: [] for name in files}
    per_call = {name: [] for name in files}
    for name, run in runners.items():  # warm-up
        sampler.generate(run, start, 0)
    for _ in range(rounds):
        for name, run in runners.items():
            began = time.perf_counter()
            sampler.generate(run, start, 0)
            per_image[name].append((time.perf_counter() - began) * 1e3)
            began = time.perf_counter()
            for _call in range(CALLS_PER_ROUND):
                run(one_call)
            per_call[name].append((time.perf_counter() - began) * 1e3 / CALLS_PER_ROUND)
    return {name: {"per_image_ms": float(np.median(per_image[name])), "per_call_ms": float(np.median(per_call[name])),
                   "threads": 1, "rounds": rounds} for name in files}


def markdown(results: dict) -> str:
    lines = [
        f"# Diffusion int8: calibration along sampling loops, float io layers, bias correction ({results['date']})",
        "",
        f"digits-ddpm (diffusers UNet2DModel, 20 DDIM steps), `compressor run --target cpu`, {results['samples']} images "
        f"per variant from the same seeds, judged on the final images of the whole loop. Host: {results['machine']}; "
        f"avx512_vnni: {'avx512_vnni' in results['cpu_flags']}. Latency: ONNX Runtime CPU, 1 thread, batch 1, "
        "median of interleaved rounds in one run.",
        "",
        "| variant | calibration | float layers | bias corr. | MB | FID | FID delta | FD-surrogate delta | PSNR dB | SSIM "
        "| ms / call | ms / image | x fp32 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in results["variants"].items():
        fid = row.get("fid", {})
        surrogate = row.get("fd_surrogate", {})
        timing = row["this_run_latency"]
        lines.append(
            f"| {name} | {row.get('calibration', '-')} | {', '.join(row.get('float_layers', [])) or '-'} | "
            f"{'yes' if row.get('bias_correction') else '-'} | {row['bytes'] / 1e6:.2f} | {fid.get('value', float('nan')):.2f} | "
            f"{fid.get('delta', float('nan')):+.2f} | {surrogate.get('delta', float('nan')):+.3f} | {row['psnr_db']:.1f} | "
            f"{row['ssim']:.3f} | {timing['per_call_ms']:.2f} | {timing['per_image_ms']:.1f} | {timing['per_image_vs_fp32']:.2f} |"
        )
    floor = results["quality_reference"].get("fid", {}).get("reference_model_score")
    if floor is not None:
        lines += ["", f"The original's own FID against its samples on other seeds (the noise floor): {floor:.2f}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
