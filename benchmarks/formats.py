"""Every model family in every format, in one run: is the int8 artifact faster than the fp32 export?

For each generator built in code with seeded weights, in the styles users write (compressor/testing/models.py:
the PyTorch tutorial's DCGAN, a pix2pix UNet with concatenated skips, a CycleGAN ResNet generator with reflection
padding and InstanceNorm, a diffusers-style denoising UNet with an int64 timestep, a diffusers-style VAE decoder
that torch.fx cannot trace), saved as a model folder, a TorchScript trace and a `.pt2` exported with a fixed
batch (as most users export them), `compressor run --target cpu` (profile balanced, FID off) is run and its
manifest read: how the rewrite stage read the graph and what it rewrote, parity PSNR, and the median latency of
`model.fp32.onnx` and `model.onnx` at batch 1 and 16, timed by the run's own benchmark step (both artifacts in
the same process, one after the other). The CPU flags are recorded with them.

    python benchmarks/formats.py [--runs 30] [--models dcgan-64,vae-decoder-32] [--formats folder] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

from compressor import api
from compressor.hostcpu import cpu_flags
from compressor.modelcard import ModelCard, sample_inputs
from compressor.testing import models

ROOT = Path(__file__).resolve().parents[1]
IMAGE = {"range": [-1.0, 1.0]}
# name -> (class, kwargs, card inputs, card outputs)
MODELS = {
    "dcgan-64": ("DCGANGenerator", {}, {"z": {"shape": [100, 1, 1]}}, {"image": IMAGE}),
    "unet-pix2pix-64": ("UNetGenerator", {}, {"image": {"shape": [3, 64, 64], "prior": "uniform"}}, {"fake": IMAGE}),
    "resnet-cyclegan-64": ("ResnetGenerator", {"width": 32}, {"image": {"shape": [3, 64, 64], "prior": "uniform"}}, {"fake": IMAGE}),
    "diffusion-unet-32": (
        "TimestepUNet", {"width": 64},
        {"sample": {"shape": [3, 32, 32]}, "timestep": {"shape": [], "dtype": "int64", "prior": "integers", "range": [0, 999]}},
        {"noise": {"image": False}},
    ),
    "vae-decoder-32": ("ShapeBranchDecoder", {"width": 128}, {"latent": {"shape": [4, 16, 16]}}, {"image": IMAGE}),
}
FORMATS = ("folder", "torchscript", "pt2-fixed-batch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="timed runs per artifact and batch size")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ", ".join(MODELS))
    parser.add_argument("--formats", default=",".join(FORMATS), help="comma-separated subset of " + ", ".join(FORMATS))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    results = {"machine": platform.processor() or platform.machine(), "cpu_flags": sorted(cpu_flags()), "models": {}}
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.models.split(","):
            results["models"][name] = {
                fmt: measure(name, fmt, Path(scratch) / name / fmt, args.runs) for fmt in args.formats.split(",")
            }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "formats.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown_table(results)
    (args.out / "formats.md").write_text(table)
    print(table)


def measure(name: str, fmt: str, folder: Path, runs: int) -> dict:
    checkpoint, card = save(name, fmt, folder)
    sets = (
        "quality.fid=off", "quality.samples=64", "quality.gallery=0", "budgets.latency_vs_baseline=null",
        f"target.benchmark.runs={runs}", "target.benchmark.warmup=3",
    )
    try:
        result = api.run(api.RunConfig(checkpoint=checkpoint, card=card, target="cpu", out=folder / "release", sets=sets))
    except Exception as exc:  # a failure is a result here: it goes in the table
        return {"error": f"{type(exc).__name__}: {exc}"}
    manifest = result.manifest
    rewrite = next((s for s in manifest["stages"] if s["name"] == "rewrite"), {}).get("state", {})
    artifacts = manifest["artifacts"]
    return {
        "format": manifest["input"]["format"],
        "graph": rewrite.get("graph"),
        "rewritten": {k: len(v) for k, v in rewrite.get("applied", {}).items() if v},
        "not_rewritten": rewrite.get("not_rewritten", {}),
        "psnr_db": artifacts["model.onnx"]["parity"].get("psnr_db"),
        "latency_ms": {
            file: {batch: stats["median_ms"] for batch, stats in record["latency"]["batches"].items()}
            for file, record in artifacts.items()
        },
        "int8_vs_fp32_batch16": artifacts["model.onnx"].get("latency_vs_fp32", {}).get("ratio"),
        "op_times_ms": {file: record["op_times_ms"] for file, record in artifacts.items() if "op_times_ms" in record},
    }


def save(name: str, fmt: str, folder: Path) -> tuple[Path, Path | None]:
    """Write the model as `fmt`; returns (checkpoint, --card file or None)."""
    cls, kwargs, inputs, outputs = MODELS[name]
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = models.randomized(getattr(models, cls)(**kwargs))
    card = {"name": name, "inputs": inputs, "outputs": outputs}
    example = tuple(sample_inputs(ModelCard.model_validate(card), 2, seed=0).values())
    if fmt == "folder":
        (folder / "model.py").write_text(f"from compressor.testing.models import {cls}\n")
        save_file(model.state_dict(), str(folder / "weights.safetensors"))
        card |= {"factory": f"model:{cls}", "kwargs": kwargs, "weights": "weights.safetensors"}
        (folder / "compressor.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
        return folder, None
    card_file = folder / "card.yaml"
    card_file.write_text(yaml.safe_dump(card, sort_keys=False))
    if fmt == "torchscript":
        torch.jit.trace(model, example).save(str(folder / "model.ts"))
        return folder / "model.ts", card_file
    torch.export.save(torch.export.export(model, example), str(folder / "model.pt2"))  # no dynamic batch
    return folder / "model.pt2", card_file


def markdown_table(results: dict) -> str:
    lines = [
        f"CPU: {results['machine']}, flags: {', '.join(f for f in results['cpu_flags'] if 'avx' in f or 'amx' in f)}",
        "",
        "| model | format | graph | fp32 ms (b16) | int8 ms (b16) | int8/fp32 | PSNR dB |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, by_format in results["models"].items():
        for fmt, row in by_format.items():
            if "error" in row:
                lines.append(f"| {name} | {fmt} | error: {row['error'][:80]} | | | | |")
                continue
            latency = row["latency_ms"]
            lines.append(
                f"| {name} | {fmt} | {row['graph']} | {latency['model.fp32.onnx']['16']:.2f} | "
                f"{latency['model.onnx']['16']:.2f} | {row['int8_vs_fp32_batch16']:.2f} | {row['psnr_db']:.1f} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
