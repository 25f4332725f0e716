"""torch -> fp32 `.tflite` with litert-torch, at batch 1 (what a phone app runs).

BatchNorm is folded into the conv or linear before it first (the rewrite stage does it for LiteRT targets; this
covers profiles without one): left in the graph, the converter fuses it into a transposed convolution as a
per-channel bias that the int8 interpreter then refuses. The batch is fixed because litert-torch cannot lower
a Linear with a symbolic batch axis.

A model the converter cannot lower fails with one line naming the torch op and the layer it sits in, found by
exporting the model with torch.export and looking the op up in its graph.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from compressor.errors import ExportError, first_line
from compressor.quiet import native_stderr_silenced, quieted

if TYPE_CHECKING:
    import torch.nn as nn

    from compressor.modelcard import ModelCard

# Normalizations litert-torch decomposes into elementwise ops (MEAN, SUB, MUL, RSQRT, ...).
_NORMALIZATIONS = (torch.nn.GroupNorm, torch.nn.LayerNorm, torch.nn.InstanceNorm1d, torch.nn.InstanceNorm2d, torch.nn.InstanceNorm3d)
# litert-torch and its converter log progress through absl, and print "[START] ... [DONE]" lines of their own.
_LOGGERS = ("", "absl", "litert_torch")


@dataclass(frozen=True)
class Converted:
    """An fp32 `.tflite`, and how its tensor names spell each torch module (litert_graph.module_scopes of the
    model actually converted: BatchNorm folded, GraphModule calls renamed), to read its ops' layers with."""

    path: Path
    scopes: dict[str, list[str]]
    normalizations: frozenset[str] = frozenset()  # its GroupNorm / LayerNorm / InstanceNorm modules, by name


def convert(model: nn.Module, card: ModelCard, out: Path) -> Converted:
    """Write the fp32 `.tflite` of `model` (BatchNorm folded) to `out`."""
    import torch

    from compressor.modelcard import sample_inputs
    from compressor.runtimes.litert_graph import module_scopes, uniquely_named

    model = fold_batchnorm_if_traceable(model.eval())
    scopes = module_scopes(model)
    normalizations = frozenset(name for name, module in model.named_modules() if isinstance(module, _NORMALIZATIONS))
    model = uniquely_named(model)
    example = tuple(sample_inputs(card, 1, seed=0).values())
    litert_torch = import_litert_torch()
    try:
        with torch.no_grad(), quieted(_LOGGERS, stderr=True), native_stderr_silenced(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch's pytree deprecations, raised inside torch.export
            converted = litert_torch.convert(model, example)
            converted.export(str(out))
    except Exception as exc:  # torch.export and the lowering raise many types (RuntimeError, AssertionError, ...)
        raise ExportError(f"{out.name}: litert-torch could not convert the model: {_where(exc, model, example)}") from exc
    return Converted(out, scopes, normalizations)


def fold_batchnorm_if_traceable(model: nn.Module) -> nn.Module:
    """The model with every BatchNorm that follows a conv or linear folded into it; unchanged when torch.fx cannot
    trace it (then nothing was folded by the rewrite stage either, and a BatchNorm may remain)."""
    from compressor.rewrites.fold_batchnorm import fold_batchnorm

    try:
        folded, _ = fold_batchnorm(model)
    except Exception:  # noqa: BLE001 - fx raises many types; the model is then converted as it is
        return model
    return folded


def import_litert_torch():
    """litert_torch, imported without the warnings its dependencies print on import (torchao's missing CUDA
    kernels, torch's pytree deprecations) and with its progress lines off: they would bury the CLI's own."""
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    with warnings.catch_warnings(), native_stderr_silenced():
        warnings.simplefilter("ignore")
        import litert_torch
    return litert_torch


def _where(exc: BaseException, model: nn.Module, example: tuple) -> str:
    """The converter's complaint, with the layer and the torch op it is about, and what to do."""
    text = str(exc)
    match = re.search(r"target=torch\.ops\.(aten\.[\w.]+)", text) or re.search(r"(aten\.[\w]+\.\w+)", text)
    op = match.group(1) if match else None
    layer = _layer_of_op(model, example, op) if op else None
    where = f" (op {op}" + (f" in layer '{layer}'" if layer else "") + ")" if op else ""
    advice = (
        "rewrite that layer with ops LiteRT has (see the litert-torch docs for supported ops), or keep it out of the "
        "model you ship" if op else "check that torch.export.export(model, example) works on it"
    )
    return f"{first_line(exc)}{where}; {advice}"


def _layer_of_op(model: nn.Module, example: tuple, op: str) -> str | None:
    """The module that calls the ATen `op` in the model's exported graph (decomposed as the converter does)."""
    import torch

    try:
        with torch.no_grad():
            graph = torch.export.export(model, example).run_decompositions().graph
    except Exception:  # noqa: BLE001 - the converter's own message is then all there is to say
        return None
    for node in graph.nodes:
        if node.op == "call_function" and str(node.target) == op:
            stack = node.meta.get("nn_module_stack") or {}
            paths = [path for path, _ in stack.values() if path]
            return paths[-1] if paths else ""
    return None
