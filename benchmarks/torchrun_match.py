"""One process against `torchrun --nproc_per_node=N`, in one run: a sensitivity sweep and a distillation of a
demo must give the same results (within the README's tolerance), and the wall time of each is recorded.

- sweep: `compressor sensitivity examples/<demo> --ratios 0.25,0.5,0.75` (each setting scored on the images the
  model generates), every row compared between the two tables;
- distillation: `compressor run examples/<demo> --target cpu` with a profile that cuts every channel group by
  half and distils the original into it for `--steps` steps (batch 64, split over the ranks), the held-out
  PSNR after training compared.
Each side gets its own empty cache folder, so neither reads the other's table. Writes JSON and Markdown.

    python benchmarks/torchrun_match.py [--demo digits-dcgan] [--nproc 2] [--steps 300] [--out benchmarks/results]
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

import yaml

from compressor.hostcpu import cpu_description, cpu_flags

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--set", "quality.fid=off", "--set", "quality.samples=128", "--set", "target.benchmark.runs=5",
         "--set", "budgets.latency_vs_baseline=null"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", default="digits-dcgan")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    demo = ROOT / "examples" / args.demo
    results = {"machine": cpu_description(), "cpu_count": os.cpu_count(), "avx512_vnni": "avx512_vnni" in cpu_flags(),
               "date": date.today().isoformat(), "demo": args.demo, "nproc": args.nproc, "steps": args.steps}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        profile = work / "prune-distill.yaml"
        profile.write_text(yaml.safe_dump({"name": "prune-distill", "description": "half the channels, distilled", "budgets": {},
                                           "stages": [{"kind": "prune", "ratio": 0.5},
                                                      {"kind": "distill", "steps": args.steps, "batch": 64,
                                                       "check_every": max(args.steps // 3, 1), "patience": None}]}))
        sweep = ["sensitivity", str(demo), "--ratios", "0.25,0.5,0.75"]
        distill = ["run", str(demo), "--target", "cpu", "--profile", str(profile), *QUICK]
        sides = {}
        for side, launcher in (("1 process", [sys.executable, "-m", "compressor"]),
                               (f"torchrun x{args.nproc}", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                           f"--nproc_per_node={args.nproc}", "-m", "compressor"])):
            folder = work / side.replace(" ", "_")
            env = {**os.environ, "COMPRESSOR_CACHE": str(folder / "cache")}
            sides[side] = {
                "sweep_seconds": _timed(launcher + sweep + ["--out", str(folder / "sweep")], env),
                "distill_seconds": _timed(launcher + distill + ["--out", str(folder / "release")], env),
                "table": json.loads((folder / "sweep" / "sensitivity.json").read_text()),
                "distill": _distill_metrics(folder / "release"),
            }
    one, many = sides.values()
    results["sweep"] = compare_tables(one["table"], many["table"])
    results["distill"] = {side: {"psnr_db_before": s["distill"]["psnr_db_before"], "psnr_db_after": s["distill"]["psnr_db_after"],
                                 "loss_last": s["distill"]["loss_last"]} for side, s in sides.items()}
    results["seconds"] = {side: {"sweep": s["sweep_seconds"], "distill_release": s["distill_seconds"]} for side, s in sides.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "torchrun_match.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (args.out / "torchrun_match.md").write_text(table)
    print(table)


def _timed(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return round(time.perf_counter() - start, 1)


def _distill_metrics(release: Path) -> dict:
    manifest = json.loads((release / "cpu-x86" / "manifest.json").read_text())
    return next(stage["metrics"] for stage in manifest["stages"] if stage["name"] == "distill")


def compare_tables(one: dict, other: dict) -> dict:
    """Rows in both tables and the largest difference of any score between them."""
    pairs = []
    for section in ("channels", "blocks", "precision"):
        for name, row in one[section].items():
            twin = other[section].get(name)
            if twin is None:
                continue
            if section == "channels":
                pairs += [(row["settings"][r], twin["settings"].get(r, {})) for r in row["settings"]]
            elif section == "precision":
                pairs += [(row[p], twin.get(p, {})) for p in row]
            else:
                pairs.append((row, twin))
    differences = {
        metric: max((abs(a[metric] - b.get(metric, float("inf"))) for a, b in pairs if metric in a), default=0.0)
        for metric in ("psnr_db", "fd_surrogate")
    }
    same_rows = all(one[s].keys() == other[s].keys() for s in ("channels", "blocks", "precision"))
    return {"rows": len(pairs), "same_rows": same_rows, "largest_difference": differences}


def markdown(results: dict) -> str:
    sides = list(results["distill"])
    sweep = results["sweep"]
    lines = [
        f"# One process vs torchrun x{results['nproc']}: {results['demo']} ({results['date']})",
        "",
        f"Host: {results['machine']}, {results['cpu_count']} CPUs (wall times on a shared machine; ranks share its cores).",
        "",
        "| | " + " | ".join(sides) + " |",
        "|---|" + "---|" * len(sides),
        "| sensitivity sweep, s | " + " | ".join(f"{results['seconds'][s]['sweep']:.0f}" for s in sides) + " |",
        "| prune + distill release, s | " + " | ".join(f"{results['seconds'][s]['distill_release']:.0f}" for s in sides) + " |",
        "| distilled PSNR vs original, dB | " + " | ".join(f"{results['distill'][s]['psnr_db_after']:.4f}" for s in sides) + " |",
        "| last training loss | " + " | ".join(f"{results['distill'][s]['loss_last']:.6f}" for s in sides) + " |",
        "",
        f"Sweep: {sweep['rows']} rows, the same rows on both sides: {sweep['same_rows']}; largest difference of any row: "
        f"PSNR {sweep['largest_difference']['psnr_db']:.2e} dB, FD-surrogate {sweep['largest_difference']['fd_surrogate']:.2e}.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
