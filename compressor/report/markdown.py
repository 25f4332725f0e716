"""Render a manifest as report.md: the model, the configuration, each artifact's parity and latency, the stages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

REPORT_FILE = "report.md"


def write_report(manifest: dict[str, Any], path: Path) -> Path:
    path.write_text(render(manifest))
    return path


def render(manifest: dict[str, Any]) -> str:
    sections = [_title(manifest), _model(manifest), _artifacts(manifest), _latency(manifest), _stages(manifest), _provenance(manifest)]
    return "\n\n".join(s for s in sections if s) + "\n"


def _title(m: dict[str, Any]) -> str:
    card = m["model"]["card"]
    target = m["config"]["target"]
    return (
        f"# {card['name']} for {target['name']}\n\n"
        f"Status: **{m.get('status', 'unknown')}**. Profile `{m['config']['profile']['name']}`, "
        f"runtime `{target['runtime']}`, seed {m['seed']}, config `{m['config_sha256'][:12]}`."
    )


def _model(m: dict[str, Any]) -> str:
    model = m["model"]
    inputs = ", ".join(f"`{name}` {spec['shape']} ~ {spec['prior']}" for name, spec in model["card"]["inputs"].items())
    return (
        "## Input model\n\n"
        f"| parameters | MACs per sample | fp32 size | inputs |\n|---|---|---|---|\n"
        f"| {model['parameters']:,} | {model['macs_per_sample']:,} | {_mb(model['fp32_bytes'])} | {inputs} |"
    )


def _artifacts(m: dict[str, Any]) -> str:
    rows = [
        f"| `{name}` | {a['runtime']} | {a['precision']} | {_mb(a['bytes'])} | "
        f"{_parity(a.get('parity'))} | `{a['sha256'][:16]}` |"
        for name, a in m.get("artifacts", {}).items()
    ]
    if not rows:
        return ""
    header = "## Artifacts\n\n| file | runtime | precision | size | parity vs torch | sha256 |\n|---|---|---|---|---|---|\n"
    return header + "\n".join(rows)


def _parity(p: dict[str, Any] | None) -> str:
    if not p:
        return "not checked"
    verdict = "pass" if p["ok"] else "**FAIL**"
    return f"{verdict}: max abs {p['max_abs_error']:.2e}, rel {p['max_rel_error']:.2e} ({p['samples']} samples)"


def _latency(m: dict[str, Any]) -> str:
    rows = []
    for name, a in m.get("artifacts", {}).items():
        latency = a.get("latency") or {}
        for batch, s in latency.get("batches", {}).items():
            rows.append(
                f"| `{name}` | {batch} | {s['median_ms']:.3f} | {s['p90_ms']:.3f} | {s['per_sample_ms']:.4f} | "
                f"{latency['threads']} | {s['runs']} |"
            )
    if not rows:
        return ""
    header = (
        "## Latency\n\nMeasured on this machine's runtime after warm-up runs.\n\n"
        "| file | batch | median ms | p90 ms | ms per sample | threads | runs |\n|---|---|---|---|---|---|---|\n"
    )
    return header + "\n".join(rows)


def _stages(m: dict[str, Any]) -> str:
    rows = [f"| {s['name']} | {s['seconds']:.2f} | {_brief(s)} |" for s in m.get("stages", [])]
    return "## Steps\n\n| step | seconds | notes |\n|---|---|---|\n" + "\n".join(rows)


def _brief(stage: dict[str, Any]) -> str:
    """One cell of what a step did: what it changed or skipped, or its headline metric."""
    state = stage.get("state") or {}
    notes = [f"{name}: {len(changed)} change(s)" for name, changed in state.get("applied", {}).items()]
    notes += [f"{name} skipped ({why})" for name, why in state.get("skipped", {}).items()]
    if "relative_change" in stage.get("metrics", {}):
        notes.append(f"max relative output change {stage['metrics']['relative_change']:.1e}")
    return "; ".join(notes) or ""


def _provenance(m: dict[str, Any]) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if k != "platform")
    return (
        "## Provenance\n\n"
        f"- input `{m['input']['path']}` ({m['input']['format']}), sha256 `{m['input']['sha256']}`\n"
        f"- versions: {versions}\n- platform: {m['versions']['platform']}"
    )


def _mb(size: int) -> str:
    return f"{size / 1e6:.2f} MB"
