"""Structured pruning and distillation on ONNX Runtime CPU, side by side in one run, for each demo model:

- original, fp32 and int8 (ratio 0: the plain export, and `compressor run --target cpu`);
- every channel group cut by the same ratio (0.25, 0.5, 0.75), before and after distillation
  (`--steps` steps), each as fp32 and int8 (the prune, distill, rewrite and ptq stages of a release);
- the `smallest` profile's release (MACs budget from the sensitivity table, full distillation, int8), and its
  fp32 student: FID on the profile's 2,048 samples, with the original's own noise floor beside it, comes
  from that release's quality check (same latents and sample count for both);
- the peer: Torch-Pruning's own recipe (MagnitudePruner, L1 group importance, ratio 0.5, output layer
  ignored), no distillation, fp32.

Each row gets executed MACs (from the ONNX graph), parameters, file size, ORT latency at batch 1 and 16
(2 threads, rounds that interleave the variants so drift hits all alike), PSNR, SSIM and FD-surrogate delta
vs the original on the same seeded latents. FID (Inception on 299x299) runs at about 4 images/s on 2
cores, so only the smallest rows carry it. The run writes JSON, a Markdown table and a Pareto plot
(batch-16 latency vs FD-surrogate delta) and records the CPU flags.

    python benchmarks/prune_distill.py [--steps 1000] [--samples 512] [--runs 100] [--out benchmarks/results]
    python benchmarks/prune_distill.py --models digits-vae --merge benchmarks/results/prune_distill.json  # add a model
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import tempfile
from datetime import date
from pathlib import Path

import numpy as np
import torch
from quantize_cpu import executed_macs, interleaved_latency
from safetensors.torch import load_file

from compressor import api
from compressor.checkpoint import load_checkpoint
from compressor.config import resolve
from compressor.context import RunContext
from compressor.evaluate.quality import QualityEvaluator, prepare_fid
from compressor.hostcpu import cpu_flags
from compressor.pruning.channels import rebuild
from compressor.runtimes.base import Artifact
from compressor.runtimes.onnx.export import export_onnx
from compressor.runtimes.onnxruntime import OnnxRuntime
from compressor.summary import summarize

ROOT = Path(__file__).resolve().parents[1]
DEMOS = ["digits-dcgan", "digits-vae"]
RATIOS = (0.25, 0.5, 0.75)
# The releases that build the sweep's artifacts skip what this script measures itself, in one place for all rows.
RELEASE_SETS = ("quality.fid=off", "quality.samples=160", "budgets.fid=null", "target.benchmark.runs=3",
                "target.benchmark.warmup=1", "budgets.latency_vs_baseline=null")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="distillation steps of the ratio sweep (batch 128)")
    parser.add_argument("--samples", type=int, default=512, help="latents for PSNR, SSIM and FD-surrogate")
    parser.add_argument("--runs", type=int, default=100, help="timed runs per variant and batch size")
    parser.add_argument("--smallest", nargs="*", default=[], help="extra --set overrides of the smallest profile (tests)")
    parser.add_argument("--models", nargs="*", default=DEMOS, choices=DEMOS, help="demos to measure (none: only --merge)")
    parser.add_argument("--merge", nargs="+", type=Path, default=[],
                        help="earlier results JSON: their models are kept unless this run measures them again")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    target = resolve("cpu").target
    # Each model carries the facts of the run that measured it: its rows compare with each other, not across runs.
    run = {"machine": platform.processor() or platform.machine(), "cpu_flags": sorted(cpu_flags()),
           "threads": target.benchmark.threads, "date": date.today().isoformat(),
           "settings": {"distill_steps": args.steps, "samples": args.samples, "runs": args.runs, "smallest_sets": args.smallest}}
    results: dict = {"models": {}}
    for earlier in args.merge:
        results["models"].update(_models_of(json.loads(earlier.read_text())))
    with tempfile.TemporaryDirectory() as scratch:
        for demo in args.models:
            results["models"][demo] = {**run, **measure_demo(demo, Path(scratch) / demo, args)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "prune_distill.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown_table(results)
    (args.out / "prune_distill.md").write_text(table)
    pareto_plot(results, args.out / "prune_distill.png")
    print(table)


def _models_of(results: dict) -> dict:
    """The models of a results file, each with its run's facts (files that kept them once, at the top, included)."""
    shared = {key: results[key] for key in ("machine", "cpu_flags", "threads", "date", "settings") if key in results}
    return {demo: {**shared, **entry} for demo, entry in results["models"].items()}


def measure_demo(demo: str, work: Path, args) -> dict:
    """Every variant's row for one demo; artifacts are built first, then timed together."""
    work.mkdir(parents=True)
    source = ROOT / "examples" / demo
    loaded = load_checkpoint(source)
    target = resolve("cpu").target
    variants: dict[str, dict] = {}

    def add(name: str, onnx: Path, model: torch.nn.Module, **facts) -> None:
        variants[name] = {"onnx": onnx, "parameters": summarize(model, loaded.card)["parameters"], **facts}

    add("original fp32", export_onnx(loaded.model, loaded.card, work / "original.onnx", opset=target.runtime.opset),
        loaded.model, ratio=0.0, precision="fp32", distilled=None)
    original_int8 = _release(source, work / "original-int8", None, ())
    add("original int8", original_int8.release_dir / "model.onnx", loaded.model, ratio=0.0, precision="int8", distilled=None)
    for ratio in RATIOS:
        for distilled in (False, True):
            stages = [{"kind": "prune", "ratio": ratio}]
            if distilled:
                stages.append({"kind": "distill", "steps": args.steps, "batch": 128, "check_every": max(args.steps // 5, 1)})
            profile = _profile(work / f"r{ratio}-{distilled}.yaml", stages)
            result = _release(source, work / f"r{ratio}-{distilled}", profile, ())
            label = f"cut {ratio:g}{' + distill' if distilled else ''}"
            student = _student(result, loaded, work)
            facts = {"ratio": ratio, "distilled": distilled, "stages": _stage_notes(result)}
            add(f"{label} fp32", export_onnx(student, loaded.card, work / f"{label}.onnx".replace(" ", "_"), opset=target.runtime.opset),
                student, precision="fp32", **facts)
            add(f"{label} int8", result.release_dir / "model.onnx", student, precision="int8", **facts)
    smallest = _release(source, work / "smallest", "smallest", tuple(args.smallest))
    student = _student(smallest, loaded, work)
    facts = {"ratio": "budget", "distilled": True, "stages": _stage_notes(smallest), "release_quality": _release_quality(smallest)}
    add("smallest fp32", export_onnx(student, loaded.card, work / "smallest.onnx", opset=target.runtime.opset), student,
        precision="fp32", **facts)
    add("smallest int8", smallest.release_dir / "model.onnx", student, precision="int8", **facts)
    try:
        peer = torch_pruning_peer(loaded)
        add("torch-pruning magnitude 0.5 fp32", export_onnx(peer, loaded.card, work / "peer.onnx", opset=target.runtime.opset),
            peer, ratio=0.5, precision="fp32", distilled=False)
        peer_failure = None
    except Exception as exc:  # the peer's recipe failing on a demo is a result too: it goes into the table
        peer_failure = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return {"rows": measure(variants, loaded, target, args, work), "peer_failure": peer_failure}


def measure(variants: dict[str, dict], loaded, target, args, work: Path) -> dict:
    """Quality vs the original on the same latents, MACs, size, and interleaved latency of every variant."""
    resolved = resolve("cpu", None, [f"quality.samples={args.samples}", "quality.fid=off"], 0)
    ctx = RunContext.create(loaded.model, loaded.card, resolved, work)
    quality = QualityEvaluator(ctx, resolved.profile.quality, prepare_fid(resolved.profile.quality))
    quality.prepare()
    ort = OnnxRuntime(target)
    runners = {name: ort.load(Artifact(v["onnx"], "onnx", v["precision"], "final")) for name, v in variants.items()}
    rows = {}
    for name, variant in variants.items():
        scores, _ = quality.score(runners[name], with_fid=False)
        rows[name] = {
            **{k: v for k, v in variant.items() if k != "onnx"}, "bytes": variant["onnx"].stat().st_size,
            "macs_per_sample": executed_macs(variant["onnx"]), "psnr_db": scores.get("psnr_db"), "ssim": scores.get("ssim"),
            "fd_surrogate_delta": (scores.get("fd_surrogate") or {}).get("delta"),
        }
    latency = interleaved_latency(runners, loaded.card, args.runs)
    for name in rows:
        rows[name]["latency"] = latency[name]
    return rows


def torch_pruning_peer(loaded) -> torch.nn.Module:
    """Torch-Pruning's documented recipe: MagnitudePruner with L1 group importance, every layer but the output."""
    import torch_pruning as tp

    from compressor.modelcard import sample_inputs

    model = copy.deepcopy(loaded.model).train()
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    example = tuple(sample_inputs(loaded.card, 2, 0).values())
    convs = [m for m in model.modules() if isinstance(m, (torch.nn.modules.conv._ConvNd, torch.nn.Linear))]
    pruner = tp.pruner.MagnitudePruner(model, example, importance=tp.importance.GroupMagnitudeImportance(p=1),
                                       pruning_ratio=0.5, ignored_layers=[convs[-1]])
    pruner.step()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model.eval()


def _profile(path: Path, stages: list[dict]) -> str:
    all_stages = [*stages, {"kind": "rewrite"}, {"kind": "ptq", "method": "percentile", "percentile": 99.999}]
    path.write_text(json.dumps({"name": path.stem, "stages": all_stages}))  # JSON is YAML
    return str(path)


def _release(source: Path, out: Path, profile: str | None, extra: tuple[str, ...]):
    sets = extra if profile == "smallest" else RELEASE_SETS
    return api.run(api.RunConfig(checkpoint=source, target="cpu", profile=profile, out=out, sets=sets))


def _student(result, loaded, work: Path) -> torch.nn.Module:
    """The release's torch student, rebuilt from the user's model and student.json as a user would."""
    from compressor.modelcard import sample_inputs

    record = json.loads((result.release_dir / "student.json").read_text())
    model = rebuild(copy.deepcopy(loaded.model), tuple(sample_inputs(loaded.card, 2, 0).values()), record["architecture"])
    model.load_state_dict(load_file(str(result.release_dir / "student.safetensors")))
    return model.eval()


def _stage_notes(result) -> dict:
    notes = {}
    for stage in result.manifest["stages"]:
        metrics = stage.get("metrics", {})
        if stage["name"] == "prune":
            notes["channels"] = metrics["channels"]
        if stage["name"] == "distill":
            notes["distill"] = {k: metrics[k] for k in ("psnr_db_before", "psnr_db_after", "steps_run", "train_seconds")}
    return notes


def _release_quality(result) -> dict:
    """The smallest release's own quality record of its int8 artifact: FID on the profile's samples, noise floor."""
    record = result.manifest["artifacts"]["model.onnx"]["quality"]
    fid = record.get("fid") or {}
    return {"samples": record["samples"], "psnr_db": record["psnr_db"], "fid": fid.get("value"), "fid_delta": fid.get("delta"),
            "fid_noise_floor": fid.get("reference_model_score"),
            "budgets": {name: check["ok"] for name, check in result.manifest.get("budgets", {}).items()}}


def markdown_table(results: dict) -> str:
    lines = [
        f"- {demo}: one run{' on ' + entry['date'] if 'date' in entry else ''}, CPU flags "
        f"{', '.join(entry['cpu_flags']) or 'none found'}, {entry['threads']} threads; the ratio sweep distilled "
        f"{entry['settings']['distill_steps']} steps; PSNR, SSIM and FD-surrogate delta vs the original on "
        f"{entry['settings']['samples']} latents; latency: median ms over interleaved rounds of that run's variants."
        for demo, entry in results["models"].items()
    ]
    lines += [
        "",
        "| model | variant | MACs x | params x | size MB | b1 ms | b16 ms | b16 x fp32 | PSNR dB | SSIM | FD-surr. delta |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for demo, entry in results["models"].items():
        rows = entry["rows"]
        base = rows["original fp32"]
        for name, row in rows.items():
            b1, b16 = row["latency"]["1"]["median_ms"], row["latency"]["16"]["median_ms"]
            psnr = f"{row['psnr_db']:.1f}" if np.isfinite(row["psnr_db"]) else "exact"
            lines.append(
                f"| {demo} | {name} | {row['macs_per_sample'] / base['macs_per_sample']:.3f} | "
                f"{row['parameters'] / base['parameters']:.3f} | {row['bytes'] / 1e6:.2f} | {b1:.3f} | {b16:.3f} | "
                f"{b16 / base['latency']['16']['median_ms']:.3f} | {psnr} | {row['ssim']:.4f} | {row['fd_surrogate_delta']:+.4f} |"
            )
    failures = [f"{demo}: {entry['peer_failure']}" for demo, entry in results["models"].items() if entry["peer_failure"]]
    if failures:
        lines += ["", f"Torch-Pruning's recipe failed on {'; '.join(failures)}."]
    lines += ["", "The smallest profile's release (FID on its own quality latents; the floor is the original's own "
              "score against its samples on other seeds):", "", "| model | samples | FID | FID delta | noise floor | budgets |",
              "|---|---|---|---|---|---|"]
    for demo, entry in results["models"].items():
        release = entry["rows"]["smallest int8"]["release_quality"]
        fid = f"{release['fid']:.3f} | {release['fid_delta']:+.3f} | {release['fid_noise_floor']:.3f}" if release["fid"] is not None else "- | - | -"
        verdicts = ", ".join(f"{name} {'pass' if ok else 'FAIL' if ok is False else 'pending'}" for name, ok in release["budgets"].items())
        lines.append(f"| {demo} | {release['samples']} | {fid} | {verdicts or '-'} |")
    return "\n".join(lines) + "\n"


def pareto_plot(results: dict, path: Path) -> None:
    """Batch-16 latency (x the original fp32) against FD-surrogate delta, one panel per demo."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6 * len(results["models"]), 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(results["models"]), squeeze=False)[0]
    for ax, (demo, entry) in zip(axes, results["models"].items()):
        rows = entry["rows"]
        base = rows["original fp32"]["latency"]["16"]["median_ms"]
        for name, row in rows.items():
            x, y = row["latency"]["16"]["median_ms"] / base, max(row["fd_surrogate_delta"], 1e-5)
            marker = "s" if row["precision"] == "int8" else "o"
            colour = "tab:green" if row.get("distilled") else "tab:red" if row.get("distilled") is False else "tab:blue"
            ax.scatter(x, y, marker=marker, color=colour)
            ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("latency at batch 16 (x original fp32, ORT CPU)")
        ax.set_ylabel("FD-surrogate delta vs the original (lower is better)")
        ax.set_title(f"{demo}: squares int8, circles fp32; green distilled, red not")
    figure.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
