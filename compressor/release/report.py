"""Render a manifest as report.md: the release's verdict, when and on what host it ran, warnings, the model,
each artifact's parity, latency and quality, the budgets, the gallery, the steps. A pure function of the
manifest; the helpers that both reports need (verdict, host, warnings) live here and report.html reuses them."""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Any

from compressor.evaluate.latency import NOISY_P90_OVER_MEDIAN
from compressor.release.budgets import final_artifact, limit_text, value_text, verdict
from compressor.release.manifest import release_verdict

REPORT_FILE = "report.md"

Manifest = dict[str, Any]


def write_report(manifest: Manifest, path: Path) -> Path:
    path.write_text(render(manifest))
    return path


def render(manifest: Manifest) -> str:
    sections = (
        _title, _warnings, _budgets, _input_model, _artifacts, _latency, _op_times, _device, _phone, _quality, _gallery,
        _sensitivity, _layer_precisions, _ops, _steps, _provenance,
    )
    return "\n\n".join(text for text in (section(manifest) for section in sections) if text) + "\n"


def _title(manifest: Manifest) -> str:
    card = manifest["model"]["card"]
    target = manifest["config"]["target"]
    return (
        f"# {card['name']} for {target['name']}\n\n"
        f"Verdict: **{release_verdict_of(manifest).upper()}**. Status: **{manifest.get('status', 'unknown')}**. "
        f"Profile `{manifest['config']['profile']['name']}`, runtime `{target['runtime']['kind']}`, seed "
        f"{manifest['seed']}, config `{manifest['config_sha256'][:12]}`.\n\n"
        f"- run: {run_times_text(manifest)}\n- host: {host_text(manifest.get('host'))}"
    )


def release_verdict_of(manifest: Manifest) -> str:
    """The recorded verdict; for a manifest older than schema 3, the one its budgets give ('unknown' without)."""
    if manifest.get("verdict"):
        return manifest["verdict"]
    return release_verdict(manifest["budgets"]) if "budgets" in manifest else "unknown"


def run_times_text(manifest: Manifest) -> str:
    """'2025-03-01T12:00:00Z to 2025-03-01T12:01:05Z (65 s)', or that the manifest has no times (before schema 3)."""
    start, end = manifest.get("started_at"), manifest.get("finished_at")
    if not start:
        return "start and end times not recorded"
    if not end:
        return f"started {start}, not finished"
    seconds = datetime.fromisoformat(end.replace("Z", "+00:00")) - datetime.fromisoformat(start.replace("Z", "+00:00"))
    return f"{start} to {end} ({seconds.total_seconds():.0f} s)"


def host_text(host: dict[str, Any] | None) -> str:
    """'AMD EPYC, 2 cores (2 usable), flags avx2 avx512f ...' or that the manifest has no host (before schema 3)."""
    if not host:
        return "not recorded"
    flags = " ".join(host.get("cpu_flags") or []) or "none of the kernel-relevant ones"
    return f"{host['cpu_model']}, {host['cores']} cores ({host.get('cores_usable', host['cores'])} usable), flags {flags}"


def report_warnings(manifest: Manifest) -> list[str]:
    """What a reader must not miss: the quality reference's warnings (e.g. too few samples for FID), timings
    too noisy to trust, and compressed artifacts slower than their baseline."""
    warnings = list((manifest.get("quality_reference") or {}).get("warnings", []))
    for name, record in manifest.get("artifacts", {}).items():
        latency = record.get("latency") or {}
        timings = {f"batch {batch}": stats for batch, stats in (latency.get("batches") or {}).items()}
        if "per_image" in latency:
            timings["one image"] = latency["per_image"]
        for where, stats in timings.items():
            if stats.get("noisy"):  # summarize() gives every noisy timing its reason
                warnings.append(f"{name} latency at {where} is noisy: {stats['noisy_reason']}")
        relative = record.get("latency_vs_fp32")
        if relative and relative["ratio"] > 1:
            warnings.append(f"{name} is {relative['ratio']:.2f}x slower than the baseline at batch {relative['batch']}")
    return warnings


def _warnings(manifest: Manifest) -> str:
    warnings = report_warnings(manifest)
    return "## Warnings\n\n" + "\n".join(f"- {warning}" for warning in warnings) if warnings else ""


def _budgets(manifest: Manifest) -> str:
    checks = manifest.get("budgets")
    if not checks:
        return ""
    failed = [name for name, check in checks.items() if check["ok"] is False]
    waiting = [name for name, check in checks.items() if check["ok"] is None]
    verdict = f"**FAILED: {', '.join(failed)}**" if failed else f"pending: {', '.join(waiting)}" if waiting else "all pass"
    return f"## Budgets ({final_artifact(manifest)[0]}): {verdict}\n\n{budget_table(checks)}"


def budget_table(checks: dict[str, dict[str, Any]]) -> str:
    """A Markdown table: budget, value, limit, verdict (shared by the gate summary and the run report)."""
    rows = [
        f"| {name} | {value_text(check)} | {limit_text(check)} | "
        f"{ {'FAIL': '**FAIL**'}.get(verdict(check), verdict(check))} |"
        for name, check in checks.items()
    ]
    return "| budget | value | limit | verdict |\n|---|---|---|---|\n" + "\n".join(rows)


def _quality(manifest: Manifest) -> str:
    reference = manifest.get("quality_reference")
    if not reference:
        return ""
    rows = [_quality_row(name, artifact.get("quality") or {}) for name, artifact in manifest.get("artifacts", {}).items()]
    lines = [
        "## Quality",
        "",
        f"Each artifact and the original torch model generate from the same {reference['samples']} seeded latents. "
        "PSNR/SSIM compare their images pair by pair; FID and FD-surrogate compare each image set with the "
        "reference set below, and Δ is the artifact's score minus the original model's own (budgets limit Δ). "
        "FD-surrogate uses a fixed random conv net: it is not FID and not comparable with published numbers.",
        "",
        "| file | PSNR dB | SSIM | FD-surrogate (Δ) | FID (Δ) | KID |\n|---|---|---|---|---|---|",
        *rows,
        "",
        *_reference_notes(reference),
    ]
    return "\n".join(lines)


def _quality_row(name: str, quality: dict[str, Any]) -> str:
    def distance(key: str) -> str:
        entry = quality.get(key) or {}
        return f"{entry['value']:.4g} ({entry['delta']:+.3g})" if "value" in entry else "-"

    kid = (quality.get("fid") or {}).get("kid")
    psnr = f"{quality['psnr_db']:.1f}" if "psnr_db" in quality else "-"
    ssim = f"{quality['ssim']:.4f}" if "ssim" in quality else "-"
    return f"| `{name}` | {psnr} | {ssim} | {distance('fd_surrogate')} | {distance('fid')} | {'-' if kid is None else f'{kid:.3g}'} |"


def _reference_notes(reference: dict[str, Any]) -> list[str]:
    notes = []
    for key, label in (("fd_surrogate", "FD-surrogate"), ("fid", "FID")):
        entry = reference.get(key) or {}
        if "reference_set" in entry:
            notes.append(
                f"- {label}: against {entry['reference_set']}; the original model scores {entry['reference_model_score']:.4g}; "
                f"extractor {entry['extractor']} sha256 `{entry['extractor_sha256'][:16]}`; {entry['seconds']:.1f} s for the reference sets"
            )
        elif entry.get("reason"):
            notes.append(f"- {label} not computed: {entry['reason']}")
    return notes


def _gallery(manifest: Manifest) -> str:
    gallery = manifest.get("gallery")
    if not gallery:
        return ""
    return (
        "## Gallery\n\n"
        f"Rows in threes: the original model, `{gallery['artifact']}` on the same latents, and {gallery_diff_text(gallery)}. "
        f"{gallery['samples']} latents.\n\n![reference vs {gallery['artifact']}]({gallery['file']})"
        + (f"\n\nPSNR per sample (dB, in gallery order): {', '.join(sample_psnr_texts(gallery))}."
           if "psnr_db" in gallery else "")
    )


def gallery_diff_text(gallery: dict[str, Any]) -> str:
    """What the gallery's difference row shows: a heat map scaled to the largest difference, or (before schema
    3) the difference magnified 4x."""
    if "diff_max" not in gallery:
        return "their difference x4 (black = identical)"
    if gallery["diff_max"] == 0:
        return "their difference (none: the samples are identical)"
    return ("|artifact - original| as a heat map scaled to the largest difference shown "
            f"(black = identical, brightest = {gallery['diff_max']:.3g})")


def psnr_text(value: float | None, unit: str = " dB") -> str:
    """'45.3 dB', or 'identical' for an infinite PSNR (the gallery records it as None: JSON has no infinity)."""
    return "identical" if value is None or math.isinf(value) else f"{value:.1f}{unit}"


def sample_psnr_texts(gallery: dict[str, Any]) -> list[str]:
    """Each gallery sample's PSNR as text, without the unit (a table's header gives it)."""
    return [psnr_text(value, unit="") for value in gallery.get("psnr_db", [])]


def _input_model(manifest: Manifest) -> str:
    model = manifest["model"]
    inputs = ", ".join(f"`{name}` {spec['shape']} ~ {spec['prior']}" for name, spec in model["card"]["inputs"].items())
    return (
        "## Input model\n\n"
        "| parameters | MACs per sample | fp32 size | inputs |\n|---|---|---|---|\n"
        f"| {model['parameters']:,} | {model['macs_per_sample']:,} | {_megabytes(model['fp32_bytes'])} | {inputs} |"
    )


def _artifacts(manifest: Manifest) -> str:
    rows = [
        f"| `{name}` | {artifact['runtime']} | {artifact['precision']} | {_megabytes(artifact['bytes'])} | "
        f"{_parity_cell(artifact.get('parity'))} | {_speed_cell(artifact)} | `{artifact['sha256'][:16]}` |"
        for name, artifact in manifest.get("artifacts", {}).items()
    ]
    if not rows:
        return ""
    header = (
        "## Artifacts\n\n| file | runtime | precision | size | parity vs torch | latency vs fp32 | sha256 |\n"
        "|---|---|---|---|---|---|---|\n"
    )
    return header + "\n".join(rows) + _numerics_note(manifest)


def _numerics_note(manifest: Manifest) -> str:
    """Where parity and quality were measured, when not on the target's own runtime."""
    notes = sorted({artifact["numerics"] for artifact in manifest.get("artifacts", {}).values() if "numerics" in artifact})
    return "".join(f"\n\nParity and quality figures: **{note}**." for note in notes)


def _speed_cell(artifact: dict[str, Any]) -> str:
    relative = artifact.get("latency_vs_fp32")
    if not relative:
        return "-"
    text = f"{relative['ratio']:.2f}x at batch {relative['batch']}"
    return f"**{text}: slower than fp32**" if relative["ratio"] > 1 else text


def _parity_cell(parity: dict[str, Any] | None) -> str:
    if not parity:
        return "not checked"
    verdict = "pass" if parity["ok"] else "**FAIL**"
    required = f" (required {parity['min_psnr']:.1f})" if parity.get("min_psnr") is not None else ""
    return (
        f"{verdict}: PSNR {parity['psnr_db']:.1f} dB{required}, max abs {parity['max_abs_error']:.2e} "
        f"({parity['samples']} samples)"
    )


def _latency(manifest: Manifest) -> str:
    rows, notes = [], []
    for name, artifact in manifest.get("artifacts", {}).items():
        latency = artifact.get("latency") or {}
        if "pending" in latency:
            rows.append(f"| `{name}` | pending: {latency['pending']} | | | | | |")
        timings = [(latency.get("threads", "-"), latency.get("batches", {}))]
        timings += [(threads, batches) for threads, batches in latency.get("by_threads", {}).items()]
        for threads, batches in timings:
            for batch, stats in batches.items():
                rows.append(
                    f"| `{name}` | {batch} | {stats['median_ms']:.3f}{_noisy_mark(stats)} | {stats['p90_ms']:.3f} | "
                    f"{stats['per_sample_ms']:.4f} | {threads} | {stats['runs']} |"
                )
        if "per_image" in latency:
            image = latency["per_image"]
            rows.append(f"| `{name}` | 1 image ({image['model_calls']} calls) | {image['median_ms']:.3f}{_noisy_mark(image)} | "
                        f"{image['p90_ms']:.3f} | {image['median_ms']:.4f} | {latency.get('threads', '-')} | {image['runs']} |")
        if latency.get("note") and latency["note"] not in notes:
            notes.append(latency["note"])
    if not rows:
        return ""
    where = f" on {'; '.join(notes)}" if notes else ""
    header = (
        f"## Latency\n\nMeasured on this machine's runtime after warm-up runs{where}. **noisy**: p90 over "
        f"{NOISY_P90_OVER_MEDIAN:g}x the median, too spread to compare with other timings.\n\n"
        "| file | batch | median ms | p90 ms | ms per sample | threads | runs |\n|---|---|---|---|---|---|---|\n"
    )
    return header + "\n".join(rows)


def _noisy_mark(stats: dict[str, Any]) -> str:
    return " **noisy**" if stats.get("noisy") else ""


def _op_times(manifest: Manifest) -> str:
    """When a compressed artifact ran slower than its baseline: the runtime profiler's time per op type in each."""
    profiled = {name: record["op_times_ms"] for name, record in manifest.get("artifacts", {}).items() if "op_times_ms" in record}
    if not profiled:
        return ""
    names = list(profiled)
    ops = sorted({op for times in profiled.values() for op in times["by_op_type"]},
                 key=lambda op: -max(times["by_op_type"].get(op, 0.0) for times in profiled.values()))
    rows = [f"| {op} | " + " | ".join(f"{profiled[name]['by_op_type'].get(op, 0.0):.3f}" for name in names) + " |" for op in ops[:12]]
    batch = next(iter(profiled.values()))["batch"]
    header = " | ".join(f"`{name}` ms" for name in names)
    peaks = next((record["kernel_peaks_gmacs"] for record in manifest["artifacts"].values() if "kernel_peaks_gmacs" in record), None)
    machine = (
        f"This machine's best int8 and fp32 kernel rates (a 1024^3 matrix product): {peaks['int8']:.0f} and "
        f"{peaks['fp32']:.0f} GMAC/s, {peaks['int8_over_fp32']:.2f}x; below about 1.3x, int8 cannot be much faster "
        "than fp32 here whatever stays float.\n\n" if peaks else ""
    )
    return (
        f"## Where the time goes (batch {batch})\n\nAn artifact ran slower than its baseline; the runtime's profiler "
        "gives the milliseconds per run spent in each op type. Layers behind the costly int8 ops can stay float "
        "through the quantizing stage's `rules` (e.g. `{match: \"up_blocks.*\", precision: fp32}`).\n\n"
        f"{machine}| op type | {header} |\n|---|{'---|' * len(names)}\n" + "\n".join(rows)
    )


def _device(manifest: Manifest) -> str:
    """For releases finished on the device (TensorRT): how to build the engine, or what was built."""
    engine = manifest.get("engine")
    if engine:
        counts = ", ".join(f"{count} {precision}" for precision, count in sorted(engine["precision_counts"].items()))
        mismatch = (f" **The release was made for TensorRT {engine['target_tensorrt_version']}.**"
                    if engine.get("version_mismatch") else "")
        return (
            "## Engine\n\n"
            f"`{engine['file']}` built on {engine['device']} with TensorRT {engine['tensorrt_version']} in "
            f"{engine['build_seconds']:.1f} s, sha256 `{engine['sha256'][:16]}`; layers: {counts}.{mismatch} "
            "The latency above was measured on that engine."
        )
    from compressor.runtimes.tensorrt import BUILD_SCRIPT

    if BUILD_SCRIPT not in manifest.get("release_files", []):
        return ""
    name = final_artifact(manifest)[0]
    return (
        "## On the device\n\n"
        f"`{name}` is explicit-quantization ONNX; the TensorRT engine is built on the device itself (an engine "
        "runs only on the GPU and TensorRT version that built it), and latency is measured there:\n\n"
        "```\ncompressor build-engine RELEASE     # builds, times, and adds the engine to this release\n"
        f"sh {BUILD_SCRIPT}                   # or trtexec alone, where compressor is not installed\n```"
    )


def _phone(manifest: Manifest) -> str:
    """For LiteRT releases: how to run the `.tflite` as an app does, and how to time it on a phone."""
    from compressor.runtimes.litert_release import PHONE_BENCHMARK, RUN_EXAMPLE

    if RUN_EXAMPLE not in manifest.get("release_files", []):
        return ""
    name = final_artifact(manifest)[0]
    return (
        "## On the phone\n\n"
        f"`{name}` runs with LiteRT's interpreter (XNNPACK on the CPU, or a vendor delegate). `{RUN_EXAMPLE}` runs it "
        "as an app does, quantizing inputs with the interpreter's scale and zero point; the latency above was "
        f"measured on this host, and `{PHONE_BENCHMARK}` times the file on an Android phone over adb:\n\n"
        f"```\npython {RUN_EXAMPLE}\nsh {PHONE_BENCHMARK} path/to/android_aarch64_benchmark_model\n```"
    )


def _layer_precisions(manifest: Manifest) -> str:
    """Every quantized layer's precision and the reason for it (default, a rule, or auto sensitivity)."""
    details = final_artifact(manifest)[1].get("details") or {}
    if not details.get("layers"):
        return ""
    sensitivity = details.get("sensitivity_psnr_db", {})
    rows = [
        f"| `{layer}` | {entry['precision']} | {entry['reason']} | "
        f"{f'{sensitivity[layer]:.1f}' if layer in sensitivity else '-'} |"
        for layer, entry in details["layers"].items()
    ]
    header = (
        "## Layer precisions\n\nSensitivity: PSNR (dB) of the output when only that layer is int8 (lower = more "
        "sensitive), measured in auto mode.\n\n| layer | precision | why | sensitivity |\n|---|---|---|---|\n"
    )
    return header + "\n".join(rows) + _bias_correction(details.get("bias_correction"))


def _bias_correction(record: dict | None) -> str:
    if not record:
        return ""
    if not record["applied"]:
        return f"\n\nBias correction: not applied ({record['reason']})."
    return (f"\n\nBias correction: {record['nodes']} Conv/Gemm biases moved so their output channel means match fp32's "
            f"on the calibration inputs (largest shift {record['largest_shift']:.3g}).")


def _ops(manifest: Manifest) -> str:
    """For runtimes that report it (LiteRT): which ops of the final artifact run in int8 and which in float, whether
    its int8 weights are per-channel symmetric, and the input/output types an app feeds and reads."""
    name, record = final_artifact(manifest)
    details = record.get("details") or {}
    if "ops_by_precision" not in details:
        return ""
    counts = details["ops_by_precision"]
    rows = [f"| {precision} | " + (", ".join(f"{op} x{n}" for op, n in sorted(ops.items())) or "none") + " |"
            for precision, ops in counts.items()]
    floats = "; ".join(f"{op['op']} (layer `{op['layer']}`)" for op in details["float_ops"]) or "none"
    weights = details["int8_weights"]
    other = f"; not per-channel symmetric: {', '.join(weights['other'])}" if weights["other"] else ""
    io = "; ".join(
        f"{key} {entry['dtype']}{entry['shape']}" + (f" scale {entry['scale']:.6g} zero point {entry['zero_point']}" if "scale" in entry else "")
        for key, entry in details.get("io", {}).items()
    )
    return (
        f"## Ops of `{name}`\n\n| runs in | ops |\n|---|---|\n" + "\n".join(rows) + "\n\n"
        f"- Float ops: {floats}{' (layers kept float are listed under Layer precisions)' if details['float_ops'] else ''}\n"
        f"- int8 weights: {weights['per_channel_symmetric']} per-channel symmetric (zero point 0){other}\n"
        f"- QUANTIZE/DEQUANTIZE ops: {details.get('conversions', 0)}\n"
        f"- Inputs and outputs: {io}"
    )


def _steps(manifest: Manifest) -> str:
    rows = [f"| {step['name']} | {step['seconds']:.2f} | {_step_notes(step)} |" for step in manifest.get("stages", [])]
    return "## Steps\n\n| step | seconds | notes |\n|---|---|---|\n" + "\n".join(rows)


def _step_notes(step: dict[str, Any]) -> str:
    """One cell of what a step did: what it changed or skipped, or its headline metric."""
    state = step.get("state") or {}
    notes = [f"{name}: {len(changed)} change(s)" for name, changed in state.get("applied", {}).items()]
    notes += [f"{name} skipped ({why})" for name, why in state.get("skipped", {}).items()]
    notes += [f"{layer} left a ConvTranspose ({why})" for layer, why in state.get("not_rewritten", {}).items()]
    if state.get("graph") == "torch.export":
        notes.append("graph read with torch.export (torch.fx could not trace it)")
    metrics = step.get("metrics", {})
    if "relative_change" in metrics:
        notes.append(f"max relative output change {metrics['relative_change']:.1e}")
    if "macs_fraction" in metrics:  # prune
        cut = ", ".join(f"{name} {change}" for name, change in metrics["channels"].items())
        removed = f"; blocks removed: {', '.join(metrics['removed_blocks'])}" if metrics.get("removed_blocks") else ""
        notes.append(f"MACs {metrics['macs_fraction']:.2f}x, parameters "
                     f"{metrics['parameters_after'] / metrics['parameters_before']:.2f}x ({cut}{removed})")
    if "what_it_buys" in metrics:  # magnitude pruning: zeros, and what they buy on this runtime
        notes.append(f"{metrics['sparsity']:.0%} of the pruned layers' weights zero ({metrics['pattern']}), weights zlib "
                     f"{_megabytes(metrics['weights_zlib_bytes_before'])} -> {_megabytes(metrics['weights_zlib_bytes_after'])}; "
                     f"{metrics['what_it_buys']}")
    if "psnr_db_after" in metrics:  # distill: PSNR vs the teacher on held-out latents
        stopped = ", stopped early" if metrics.get("stopped_early") else ""
        notes.append(f"{metrics['steps_run']} steps{stopped}: PSNR vs the original {metrics['psnr_db_before']:.1f} -> "
                     f"{metrics['psnr_db_after']:.1f} dB")
    if "psnr_db_after_training" in metrics:  # qat: what fine-tuning bought, on held-out latents
        notes.append(
            f"{metrics['steps']} steps: PSNR vs fp32 {metrics['psnr_db_before_training']:.1f} -> "
            f"{metrics['psnr_db_after_training']:.1f} dB"
        )
    return "; ".join(notes)


def _provenance(manifest: Manifest) -> str:
    versions = manifest["versions"]
    listed = ", ".join(f"{name} {version}" for name, version in versions.items() if name != "platform")
    source = manifest["input"]
    return (
        "## Provenance\n\n"
        f"- input `{source['path']}` ({source['format']}), sha256 `{source['sha256']}`\n"
        f"- versions: {listed}\n- platform: {versions['platform']}"
    )


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.2f} MB"


def _sensitivity(manifest: Manifest) -> str:
    """The sensitivity table a stage measured (sensitivity, or prune with a budget): tables, reading, heatmap."""
    from compressor.release.sensitivity_view import block_rows, channel_rows, markdown, precision_rows, reading

    step = next((s for s in manifest.get("stages", []) if "sensitivity" in s.get("metrics", {})), None)
    if step is None:
        return ""
    table, settings = step["metrics"]["sensitivity"], step["metrics"]["sensitivity"]["settings"]
    parts = [
        f"## Sensitivity ({step['name']} stage)\n\nPSNR of the output vs the unchanged model when only one channel group is "
        f"cut (its weakest channels, counts rounded to multiples of {settings['multiple']}) or only one layer is rounded, "
        f"on {settings['samples']} prior samples; lower = more sensitive. {reading(table)}",
        markdown(*channel_rows(table)),
    ]
    if table.get("blocks"):
        parts.append(markdown(*block_rows(table)))
    if table["precision"] and settings["precisions"]:
        parts.append(markdown(*precision_rows(table)))
    parts.append(f"![sensitivity heatmap]({step['metrics']['heatmap']})")
    return "\n\n".join(parts)
