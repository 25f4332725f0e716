"""The one torch -> ONNX exporter every runtime goes through (torch.onnx dynamo exporter, dynamic batch axis)."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from compressor.checkpoint import eval_mode
from compressor.errors import ExportError, first_line
from compressor.modelcard import ModelCard, sample_inputs

# The dynamo exporter cannot specialise a dynamic batch axis from an example batch of 1 (docs/architecture.md).
_EXAMPLE_BATCH = 2


def export_onnx(model: nn.Module, card: ModelCard, path: Path, opset: int) -> Path:
    """Export `model` to a single self-contained ONNX file (no external data) and validate it."""
    import onnx

    example = tuple(sample_inputs(card, _EXAMPLE_BATCH, seed=0).values())
    with _export_errors("ONNX export", card):
        with _quiet_exporter():
            if isinstance(model, torch.jit.ScriptModule):
                _export_torchscript(model, example, card, path, opset)
            else:
                _export_dynamo(eval_mode(model), example, card, path, opset)
        _clean_up(path)
        onnx.checker.check_model(str(path))
    return path


def export_fake_quantized(model: nn.Module, card: ModelCard, path: Path, opset: int) -> Path:
    """Export a model whose quantizers are torch fake-quantize ops (NNCF after nncf.strip) as QDQ ONNX.

    The dynamo exporter cannot trace torch's FakeQuantize modules (a data-dependent branch on their
    observer flag), so this goes through the TorchScript exporter, whose graph computes some constants at
    run time (Pad amounts through a reversed Slice it cannot fold); ONNX Runtime's hardware-independent
    (basic) graph optimizations fold those, and are saved in place.
    """

    example = tuple(sample_inputs(card, _EXAMPLE_BATCH, seed=0).values())
    with _export_errors("QDQ ONNX export", card):
        with _quiet_exporter(), warnings.catch_warnings():
            # Known notes only: the legacy exporter's deprecation, the Slice constants _fold_constants folds
            # below, and NNCF's hook reading its own flag. Other TracerWarnings (a value frozen into the trace) show.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", message="Constant folding - Only steps=1", category=UserWarning)
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"nncf\.")
            _export_torchscript(model, example, card, path, opset)
        _fold_constants(path)  # export_quantized checks the model once its QDQ passes are done
    return path


@contextlib.contextmanager
def _export_errors(what: str, card: ModelCard):
    """Any exporter failure becomes one ExportError line naming the model (exporters raise many types)."""
    try:
        yield
    except Exception as exc:
        root = _root_cause(exc)
        why = f"{type(exc).__name__}: {first_line(exc)}"
        if root is not exc:  # the exporter wraps the real reason ("only 4D query ... supported") in generic advice
            why = f"{type(root).__name__}: {first_line(root)}"
        raise ExportError(f"{what} of {card.name} failed ({why}); rerun with --debug for the traceback") from exc


def _root_cause(exc: BaseException) -> BaseException:
    seen = {id(exc)}
    while (exc.__cause__ or exc.__context__) is not None and id(exc.__cause__ or exc.__context__) not in seen:
        exc = exc.__cause__ or exc.__context__
        seen.add(id(exc))
    return exc


def _fold_constants(path: Path) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(path)
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _export_dynamo(model: nn.Module, example: tuple, card: ModelCard, path: Path, opset: int) -> None:
    batch = torch.export.Dim("batch", min=1)
    dynamic_shapes = {name: {0: batch} for name in card.inputs}
    program = torch.onnx.export(
        model,
        example,
        dynamo=True,
        input_names=list(card.inputs),
        output_names=list(card.outputs),
        dynamic_shapes=_by_forward_argument(model, dynamic_shapes),
        opset_version=opset,
        external_data=False,
        verbose=False,
    )
    program.save(str(path), external_data=False)


def _export_torchscript(model: nn.Module, example: tuple, card: ModelCard, path: Path, opset: int) -> None:
    """The TorchScript-based exporter, for what torch.export cannot read (TorchScript models, torch's
    fake-quantize modules); dynamic_axes keep the batch free."""
    names = [*card.inputs, *card.outputs]
    torch.onnx.export(
        model,
        example,
        str(path),
        dynamo=False,
        input_names=list(card.inputs),
        output_names=list(card.outputs),
        dynamic_axes={name: {0: "batch"} for name in names},
        opset_version=opset,
    )


def _clean_up(path: Path) -> None:
    """Exact graph clean-ups (see graph.py), and drop the stack traces the exporter records per node:
    they hold absolute paths, so the same model exported from two folders would give different bytes.
    Module names and op provenance stay."""
    import onnx

    from compressor.runtimes.onnx.graph import fold_pads_into_convs

    model = onnx.load(str(path))
    for node in model.graph.node:
        node.doc_string = ""
        kept = [p for p in node.metadata_props if p.key != "pkg.torch.onnx.stack_trace"]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)
    fold_pads_into_convs(model)
    onnx.save(model, str(path))


def _by_forward_argument(model: nn.Module, shapes: dict[str, dict]) -> dict[str, dict] | tuple[dict, ...]:
    """torch.export keys dynamic_shapes by forward()'s parameter names; the card's input names may differ,
    so pass them positionally then."""
    import inspect

    try:
        params = list(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        params = []
    return shapes if params[: len(shapes)] == list(shapes) else tuple(shapes.values())


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter prints progress lines and warns about torchvision ops we never use; keep the CLI clean."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch's own pytree deprecations, not ours to fix
            warnings.filterwarnings("ignore", message="no signature found")  # TorchScript exporter, harmless
            yield
    finally:
        registration.setLevel(level)
