"""What makes FID cheap, measured in one run on this machine:

1. the Inception pass on its two backends, the same weights (the [fid] extra's file): TorchScript and ONNX
   Runtime, interleaved over --rounds, images per second at the run's batch (32), the largest difference of
   their features and the FID between two digit sets by each;
2. the caches: `compressor run examples/<demo> --target cpu` with FID on, three times on one fresh cache folder:
   the first run fills it; the second reads the reference model's features from it and, its artifact making
   the same images, the artifact's features too; the third runs after the artifact features' folder was
   emptied, so it pays the artifact's Inception pass (the reference cache alone). Each one's wall time and its
   quality steps' seconds from the manifest.

Writes JSON and Markdown.

    python benchmarks/fid_speed.py [--demo digits-vae] [--images 128] [--rounds 3] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from compressor.evaluate.features import extract
from compressor.evaluate.fid import InceptionFeatures, find_weights
from compressor.evaluate.frechet import frechet_distance_of_features
from compressor.hostcpu import cpu_description

ROOT = Path(__file__).resolve().parents[1]
BATCH = 32  # quality.batch's default: what a run feeds Inception


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", default="digits-vae")
    parser.add_argument("--images", type=int, default=128, help="images per timed pass of each backend")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-runs", action="store_true", help="only the backends, not the two runs")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    results = {"machine": cpu_description(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
               "date": date.today().isoformat(), "backends": backends(args.images, args.rounds)}
    if not args.skip_runs:
        results["second_run"] = second_run(ROOT / "examples" / args.demo)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fid_speed.json").write_text(json.dumps(results, indent=2))
    (args.out / "fid_speed.md").write_text(markdown(results))
    print(markdown(results))


def backends(count: int, rounds: int) -> dict:
    """Images per second of each backend, interleaved so both see the same machine load."""
    with tempfile.TemporaryDirectory() as cache:
        os.environ["COMPRESSOR_CACHE"] = cache  # a fresh export of the ONNX model, timed apart
        path, source = find_weights()
        start = time.perf_counter()
        fast = InceptionFeatures(path, source)
        setup = time.perf_counter() - start
        assert fast.backend == "onnxruntime", "ONNX Runtime was refused: see the warning above"
        first, second = _digits(0, count), _digits(600, count)
        seconds = {"torchscript": [], "onnxruntime": []}
        for _ in range(rounds):
            for backend, run in (("torchscript", lambda images: _torchscript(fast, images)),
                                 ("onnxruntime", lambda images: extract(fast, images, BATCH))):
                began = time.perf_counter()
                run(first)
                seconds[backend].append(time.perf_counter() - began)
        exact = {name: _torchscript(fast, images) for name, images in (("first", first), ("second", second))}
        onnx = {name: extract(fast, images, BATCH) for name, images in (("first", first), ("second", second))}
    rates = {backend: count / float(np.median(times)) for backend, times in seconds.items()}
    return {
        "images": count, "rounds": rounds, "batch": BATCH, "setup_seconds_first_use": round(setup, 2),
        "images_per_second": {backend: round(rate, 2) for backend, rate in rates.items()},
        "speedup": round(rates["onnxruntime"] / rates["torchscript"], 2),
        "max_feature_difference": float(max(np.abs(onnx[k] - exact[k]).max() for k in exact)),
        "largest_feature": float(max(np.abs(exact[k]).max() for k in exact)),
        "fid_first_vs_second": {"torchscript": frechet_distance_of_features(exact["first"], exact["second"]),
                                "onnxruntime": frechet_distance_of_features(onnx["first"], onnx["second"])},
    }


def _torchscript(extractor: InceptionFeatures, images: np.ndarray) -> np.ndarray:
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(images), BATCH):
            x = F.interpolate(torch.from_numpy(images[start : start + BATCH]), size=(299, 299), mode="bilinear",
                              align_corners=False)
            chunks.append(extractor.network(x).reshape(len(x), -1).double().numpy())
    return np.concatenate(chunks)


def _digits(start: int, count: int) -> np.ndarray:
    from sklearn.datasets import load_digits

    images = torch.tensor(load_digits().images[start : start + count], dtype=torch.float32)[:, None] / 16
    return F.interpolate(images, size=32, mode="bilinear").repeat(1, 3, 1, 1).numpy()


def second_run(demo: Path) -> dict:
    """The same command three times on one fresh cache folder (the third without the artifact features' cache):
    wall time and the manifest's quality seconds."""
    import shutil

    from compressor.evaluate.features import IMAGE_CACHE_KIND

    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        cache = Path(scratch) / "cache"
        env = {**os.environ, "COMPRESSOR_CACHE": str(cache)}
        for number in (1, 2, 3):
            if number == 3:
                shutil.rmtree(cache / IMAGE_CACHE_KIND)
            out = Path(scratch) / f"release-{number}"
            command = [sys.executable, "-m", "compressor", "run", str(demo), "--target", "cpu", "--out", str(out),
                       "--set", "quality.fid=on", "--set", "budgets.latency_vs_baseline=null"]
            began = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - began
            if done.returncode != 0:
                raise SystemExit(f"run {number} failed ({done.returncode}): {done.stderr.strip().splitlines()[-1]}")
            manifest = json.loads(next(out.glob("*/manifest.json")).read_text())
            stages = {stage["name"]: stage["seconds"] for stage in manifest["stages"]}
            fid = manifest["quality_reference"]["fid"]
            final = manifest["artifacts"]["model.onnx"]["quality"]["fid"]
            runs.append({"wall_seconds": round(wall, 1), "quality_reference_seconds": stages["quality reference"],
                         "final_quality_seconds": stages["quality model.onnx"],
                         "reference_features_cached": all(fid["reference_features_cached"].values()),
                         "artifact_features_cached": final["features_cached"], "fid_delta": final["delta"]})
    return {"command": f"compressor run examples/{demo.name} --target cpu (FID on)", "runs": runs,
            "second_over_first": round(runs[1]["wall_seconds"] / runs[0]["wall_seconds"], 2),
            "reference_cache_only_over_first": round(runs[2]["wall_seconds"] / runs[0]["wall_seconds"], 2)}


def markdown(results: dict) -> str:
    speed = results["backends"]
    lines = [
        "# FID: the Inception backends and the reference statistics cache", "",
        f"Host: {results['machine']}, {results['cpu_count']} cores, torch threads {results['torch_threads']}; "
        f"{results['date']}.", "",
        f"## Inception on {speed['images']} digit images, batch {speed['batch']}, median of {speed['rounds']} interleaved rounds", "",
        "| backend | images/s | FID(first, second set) |", "|---|---|---|",
    ]
    for backend, rate in speed["images_per_second"].items():
        lines.append(f"| {backend} | {rate} | {speed['fid_first_vs_second'][backend]:.4f} |")
    lines += ["", f"ONNX Runtime is {speed['speedup']}x TorchScript; their features differ by at most "
                  f"{speed['max_feature_difference']:.2g} (largest feature {speed['largest_feature']:.2f}). "
                  f"First use exports the ONNX model: {speed['setup_seconds_first_use']} s, once per machine."]
    if "second_run" in results:
        rerun = results["second_run"]
        lines += ["", f"## `{rerun['command']}`, three times on one fresh cache", "",
                  "The third run follows the removal of the artifact features' cache: the reference cache alone.", "",
                  "| run | wall s | quality reference s | final artifact quality s | reference features cached | "
                  "artifact features cached | FID delta |", "|---|---|---|---|---|---|---|"]
        for number, run in enumerate(rerun["runs"], 1):
            lines.append(f"| {number} | {run['wall_seconds']} | {run['quality_reference_seconds']} | "
                         f"{run['final_quality_seconds']} | {run['reference_features_cached']} | "
                         f"{run['artifact_features_cached']} | {run['fid_delta']:.4f} |")
        lines += ["", f"Second run / first run: {rerun['second_over_first']}; third (reference cache only) / first: "
                      f"{rerun['reference_cache_only_over_first']}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
