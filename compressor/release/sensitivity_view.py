"""The sensitivity table (compressor/sensitivity.py) for people: Markdown tables for report.md and the
terminal, a one-line reading of them, and a heatmap PNG read at a glance: one row per channel group (cut at
each ratio) and per quantizable layer (rounded to each precision), one column per setting, each cell coloured
by the output's PSNR vs the unchanged model (red: the output breaks; green: barely moves) and labelled with it.
A table measured with FID shows it beside the PSNR in the tables; the heatmap stays PSNR.

Drawn with matplotlib's object API on the Agg canvas (no pyplot: no global figure state, no display needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

HEATMAP_FILE = "sensitivity.png"
TABLE_FILE = "sensitivity.json"
# PSNR (dB) at the ends of the colour scale: a cut channel group before distillation scores 10-25 dB, a layer
# rounded to int8 40-60 dB; above 45 dB no one sees a change.
PSNR_RANGE = (10.0, 45.0)


def write_heatmap(table: dict[str, Any], path: Path) -> Path:
    """Draw `table` (compressor.sensitivity.analyse) to `path`; returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [panel for panel in (_channel_panel(table), _block_panel(table), _precision_panel(table)) if panel["rows"]]
    heights = [max(len(panel["rows"]), 1) for panel in panels]
    figure = Figure(figsize=(2.2 + 1.3 * max(len(p["columns"]) for p in panels), 1.2 + 0.38 * sum(heights) + 0.8 * len(panels)),
                    layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(panels), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    image = None
    for ax, panel in zip(axes, panels):
        image = _draw(ax, panel)
    figure.colorbar(image, ax=list(axes), label="PSNR vs the unchanged model (dB)", shrink=0.8)
    figure.suptitle("Sensitivity: output quality when only that group or layer changes")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def write_outputs(table: dict[str, Any], folder: Path) -> list[Path]:
    """sensitivity.json and sensitivity.png in `folder`, each replaced whole (never left half written)."""
    import json
    import os

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, write in ((TABLE_FILE, lambda p: p.write_text(json.dumps(table, indent=1))), (HEATMAP_FILE, lambda p: write_heatmap(table, p))):
        tmp = folder / f".{name}.{os.getpid()}.tmp{Path(name).suffix}"
        write(tmp)
        os.replace(tmp, folder / name)
        written.append(folder / name)
    return written


def _channel_panel(table: dict[str, Any]) -> dict[str, Any]:
    ratios = table["settings"]["ratios"]
    rows, cells = [], []
    for name, group in table["channels"].items():
        rows.append(f"{name} ({group['channels']} ch)")
        cells.append([group["settings"][str(r)] for r in ratios])
    # A ratio whose count rounds up to every channel (to the target's channel multiple) cuts nothing: left blank.
    uncut = [[c["kept"] == group["channels"] for c in row] for row, group in zip(cells, table["channels"].values())]
    labels = [[f"{c['psnr_db']:.0f} dB\n{c['kept']} kept" if not same else "not cut\n(rounding)" for c, same in zip(row, flags)]
              for row, flags in zip(cells, uncut)]
    values = [[float("nan") if same else c["psnr_db"] for c, same in zip(row, flags)] for row, flags in zip(cells, uncut)]
    return {"title": "channels cut", "columns": [f"cut {r:g}" for r in ratios], "rows": rows, "values": values, "labels": labels}


def _block_panel(table: dict[str, Any]) -> dict[str, Any]:
    blocks = table.get("blocks", {})
    return {"title": "block removed", "columns": ["removed"], "rows": list(blocks),
            "values": [[row["psnr_db"]] for row in blocks.values()],
            "labels": [[f"{row['psnr_db']:.0f} dB\nMACs {row['macs_fraction']:.2f}x"] for row in blocks.values()]}


def _precision_panel(table: dict[str, Any]) -> dict[str, Any]:
    precisions = table["settings"]["precisions"]
    rows = list(table["precision"]) if precisions else []
    values = [[table["precision"][layer][p]["psnr_db"] for p in precisions] for layer in rows]
    return {"title": "layer rounded", "columns": precisions, "rows": rows, "values": values,
            "labels": [[f"{v:.0f} dB" for v in row] for row in values]}


def _draw(ax, panel: dict[str, Any]):
    import numpy as np

    values = np.array(panel["values"], dtype=float)
    image = ax.imshow(np.clip(values, *PSNR_RANGE), cmap="RdYlGn", vmin=PSNR_RANGE[0], vmax=PSNR_RANGE[1], aspect="auto")
    ax.set_xticks(range(len(panel["columns"])), panel["columns"])
    ax.set_yticks(range(len(panel["rows"])), panel["rows"])
    ax.set_title(panel["title"], fontsize=10)
    for (row, column), label in np.ndenumerate(np.array(panel["labels"], dtype=object)):
        ax.text(column, row, label, ha="center", va="center", fontsize=8)
    return image


def channel_rows(table: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: group, its channels, then per ratio 'PSNR (channels kept, MACs kept)'."""
    ratios = table["settings"]["ratios"]
    rows = []
    for name, group in table["channels"].items():
        cells = []
        for ratio in ratios:
            cell = group["settings"][str(ratio)]
            cells.append("not cut (rounding)" if cell["kept"] == group["channels"] else
                         f"{cell['psnr_db']:.1f} dB ({cell['kept']}, {cell['macs_fraction']:.2f}x){_fid(cell)}")
        rows.append([name, str(group["channels"]), *cells])
    return ["group", "channels", *(f"cut {r:g}: PSNR (kept, MACs)" for r in ratios)], rows


def block_rows(table: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: each whole block, with the PSNR and MACs kept when only it is removed."""
    rows = [[name, f"{row['psnr_db']:.1f} dB{_fid(row)}", f"{row['macs_fraction']:.2f}x"] for name, row in table.get("blocks", {}).items()]
    return ["block", "removed: PSNR", "MACs kept"], rows


def precision_rows(table: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: layer, then the PSNR when only it is rounded to each precision."""
    precisions = table["settings"]["precisions"]
    rows = [[layer, *(f"{table['precision'][layer][p]['psnr_db']:.1f} dB{_fid(table['precision'][layer][p])}" for p in precisions)]
            for layer in table["precision"]]
    return ["layer", *precisions], rows if precisions else []


def _fid(cell: dict[str, Any]) -> str:
    """', FID 1.23' for a setting scored with FID (the table was asked for it), else nothing."""
    return f", FID {cell['fid']:.2f}" if "fid" in cell else ""


def reading(table: dict[str, Any]) -> str:
    """One sentence: where cutting is cheapest and where it hurts most, at the middle ratio."""
    ratios = table["settings"]["ratios"]
    middle = str(ratios[len(ratios) // 2])
    cut = {name: group["settings"][middle]["psnr_db"] for name, group in table["channels"].items()
           if group["settings"][middle]["kept"] < group["channels"]}
    parts = []
    if table["channels"] and not cut:
        parts.append(f"no group loses a channel at a {float(middle):.0%} cut: counts round up to multiples of "
                     f"{table['settings']['multiple']} (the target's channel_multiple)")
    if cut:
        safest, worst = max(cut, key=cut.get), min(cut, key=cut.get)
        parts.append(f"cutting {float(middle):.0%} of the channels hurts least in `{safest}` ({cut[safest]:.1f} dB) and most "
                     f"in `{worst}` ({cut[worst]:.1f} dB)")
    blocks = table.get("blocks", {})
    if blocks:
        cheapest = max(blocks, key=lambda name: blocks[name]["psnr_db"])
        parts.append(f"removing `{cheapest}` alone costs least of the {len(blocks)} whole blocks "
                     f"({blocks[cheapest]['psnr_db']:.1f} dB)")
    rounded = {(layer, p): row["psnr_db"] for layer, by in table["precision"].items() for p, row in by.items()}
    if rounded:
        layer, precision = min(rounded, key=rounded.get)
        parts.append(f"the layer most sensitive to rounding is `{layer}` ({precision}: {rounded[layer, precision]:.1f} dB)")
    if table.get("not_prunable"):
        parts.append("not prunable: " + ", ".join(f"`{name}` ({why})" for name, why in table["not_prunable"].items()))
    text = "; ".join(parts)
    return text[:1].upper() + text[1:] + "." if text else ""


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join([f"`{row[0]}`", *row[1:]]) + " |" for row in rows])
