"""Load any supported checkpoint into an eval-mode nn.Module plus its ModelCard, safely by default.

Formats: a model folder with `compressor.yaml` (factory + weights), TorchScript, a torch.export `.pt2`,
a state_dict (`.pt`/`.pth`/`.safetensors`) with `--arch module:callable`, and a fully pickled module
only with `--trust-pickle`. Nothing here unpickles arbitrary objects unless the user asked for it:
`torch.load` always runs with `weights_only=True` except on the trust-pickle path.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import io
import json
import pickle
import pickletools
import re
import sys
import zipfile
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from compressor.errors import CheckpointError, first_line
from compressor.files import sha256_file
from compressor.modelcard import (
    CARD_FILE,
    InputSpec,
    ModelCard,
    as_output_list,
    load_card,
    sample_inputs,
)

STATE_DICT_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt"}


@dataclass
class LoadedModel:
    """A model ready for compression, with where it came from (format and file checksums)."""

    model: nn.Module
    card: ModelCard
    format: str
    files: dict[str, str] = field(default_factory=dict)  # path -> sha256 of every file that defines the model

    @property
    def sha256(self) -> str:
        """One checksum over every input file, in a stable order."""
        joined = "".join(f"{Path(p).name}:{digest};" for p, digest in sorted(self.files.items()))
        return hashlib.sha256(joined.encode()).hexdigest()


def load_checkpoint(
    path: Path, *, arch: str | None = None, card: Path | None = None, trust_pickle: bool = False
) -> LoadedModel:
    """Load `path` (folder or file); raise CheckpointError with a one-line fix on any problem."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder; check the path")
    if path.is_dir():
        loaded = _load_folder(path)
    else:
        _refuse_empty(path)
        loaded = _load_file(path, arch, _card_for(path, card), trust_pickle)
    eval_mode(loaded.model)
    _check_finite(loaded.model, path)
    _check_runs_on_card_inputs(loaded, path)
    return loaded


def eval_mode(model: nn.Module) -> nn.Module:
    """model.eval(), except for torch.export's modules: their graph is already fixed and they refuse eval()."""
    try:
        model.eval()
    except NotImplementedError:
        pass
    return model


def _load_folder(folder: Path) -> LoadedModel:
    card_path = folder / CARD_FILE
    if not card_path.is_file():
        raise CheckpointError(
            f"{folder}: folder has no {CARD_FILE}; add a model card (see examples/digits-dcgan/{CARD_FILE}) "
            "or pass a checkpoint file"
        )
    card = load_card(card_path)
    if not card.factory or not card.weights:
        raise CheckpointError(f"{card_path}: a model folder's card needs both 'factory' and 'weights'")
    weights = folder / card.weights
    if not weights.is_file():
        raise CheckpointError(f"{card_path}: weights file '{card.weights}' not found in {folder}; fix 'weights'")
    _refuse_empty(weights)
    factory, factory_file = _resolve_callable(card.factory, folder, card_path)
    model = _build(factory, card.kwargs, card_path)
    _load_state_dict(model, _read_state_dict(weights), weights)
    files = {str(p): sha256_file(p) for p in (card_path, weights, factory_file) if p is not None}
    return LoadedModel(model=model, card=card, format="folder", files=files)


def _load_file(path: Path, arch: str | None, card_path: Path | None, trust_pickle: bool) -> LoadedModel:
    files = {str(path): sha256_file(path)}
    if card_path is not None:
        files[str(card_path)] = sha256_file(card_path)
    card = load_card(card_path) if card_path is not None else None
    if path.suffix == ".pt2":
        model, inferred = _load_exported_program(path, trust_pickle)
        return LoadedModel(model=model, card=card or inferred, format="torch.export", files=files)
    if path.suffix == ".safetensors":
        state, fmt = _read_state_dict(path), "state_dict"
    elif _is_torchscript(path):
        model = _guard(path, lambda: torch.jit.load(str(path), map_location="cpu"))
        return LoadedModel(model=model, card=_require_card(card, path), format="torchscript", files=files)
    else:
        state, fmt = _read_torch_file(path, trust_pickle)
    if isinstance(state, nn.Module):
        return LoadedModel(model=state, card=_require_card(card, path), format="pickled-module", files=files)
    if arch is None:
        raise CheckpointError(f"{path}: holds a state_dict but no architecture; pass --arch module:callable")
    factory, factory_file = _resolve_callable(arch, path.parent, None)
    if factory_file is not None:
        files[str(factory_file)] = sha256_file(factory_file)
    card = _require_card(card, path)
    model = _build(factory, card.kwargs, None)
    _load_state_dict(model, state, path)
    return LoadedModel(model=model, card=card, format=fmt, files=files)


def _refuse_empty(path: Path) -> None:
    """A zero-byte file is an interrupted save; every loader would call it corrupt or print a bare EOFError."""
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes); the save was interrupted: save it again")


def _card_for(path: Path, card: Path | None) -> Path | None:
    """An explicit --card, else a compressor.yaml beside the checkpoint, else none."""
    if card is not None:
        return Path(card)
    beside = path.parent / CARD_FILE
    return beside if beside.is_file() else None


def _require_card(card: ModelCard | None, path: Path) -> ModelCard:
    if card is None:
        raise CheckpointError(
            f"{path}: no model card describes its inputs; pass --card card.yaml "
            f"(see examples/digits-dcgan/{CARD_FILE}) or put a {CARD_FILE} beside it"
        )
    return card


def _guard(path: Path, load: Callable[[], Any]) -> Any:
    """Run a loader, turning the many ways a damaged file fails into one actionable line."""
    try:
        return load()
    except CheckpointError:
        raise
    except Exception as exc:  # torch, zipfile, safetensors and TorchScript each raise their own types
        raise _corrupt(path, exc) from exc


def _corrupt(path: Path, exc: BaseException) -> CheckpointError:
    return CheckpointError(
        f"{path}: corrupt or truncated checkpoint ({type(exc).__name__}: {first_line(exc)}); re-save or re-download it"
    )


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files holding compiled code; torch.save archives hold only data.pkl."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.split("/", 1)[-1].startswith("code/") for name in archive.namelist())
    except zipfile.BadZipFile:
        return False


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return _guard(path, lambda: load_file(str(path)))
    state, _ = _read_torch_file(path, trust_pickle=False)
    if isinstance(state, nn.Module):
        raise CheckpointError(f"{path}: expected a state_dict, found a pickled module; save model.state_dict()")
    return state


def _read_torch_file(path: Path, trust_pickle: bool) -> tuple[Any, str]:
    """torch.load with weights_only=True; a full pickle only when the user passed --trust-pickle."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch words every failure of the safe loader alike ("Weights only load failed"), garbage
        # included; only a well-formed pickle deserves the --trust-pickle advice.
        if not _is_wellformed_pickle(path):
            raise _corrupt(path, exc) from exc
        if not trust_pickle:
            raise _unsafe_pickle(path, "holds pickled Python objects") from None
        obj = _guard(path, partial(_load_trusted_pickle, path))
        return obj, "pickled-module"
    except Exception as exc:
        raise _corrupt(path, exc) from exc
    return _unwrap_state_dict(obj, path), "state_dict"


def _load_trusted_pickle(path: Path) -> Any:
    """The one place a full pickle is executed: the user passed --trust-pickle. A pickled module stores only
    the import path of its class, so a class that cannot be imported here is a missing package, not damage."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)  # trust_pickle only
    except (ImportError, AttributeError) as exc:
        missing = _missing_class(exc)
        if missing is None:
            raise
        what, module = missing
        raise CheckpointError(
            f"{path}: the pickle refers to {what} in module '{module}', which is not importable here "
            f"({first_line(exc)}); run from the folder that holds the '{module.split('.')[0]}' package or add it "
            "to PYTHONPATH, or better save model.state_dict() and pass --arch module:callable"
        ) from exc


# How pickle words a class missing from a module that did import.
_MISSING_ATTRIBUTE = re.compile(r"Can't get attribute '([^']+)' on <module '([^']+)'")


def _missing_class(exc: BaseException) -> tuple[str, str] | None:
    """(which class, its module) when `exc` is pickle failing to import a class, else None."""
    if isinstance(exc, ImportError):
        return ("class(es)", exc.name) if exc.name else None
    found = _MISSING_ATTRIBUTE.search(str(exc))
    return (f"class '{found[1]}'", found[2]) if found else None


def _is_wellformed_pickle(path: Path) -> bool:
    """True when the file (or a torch.save archive's data.pkl) is a complete pickle stream starting with its
    protocol marker. pickletools only disassembles opcodes: nothing in the file is executed."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
        else:
            data = path.read_bytes()
        opcodes = [op.name for op, _, _ in pickletools.genops(io.BytesIO(data))]
    except Exception:  # any parse failure means: not a pickle we could advise trusting
        return False
    return len(opcodes) > 1 and opcodes[0] == "PROTO" and opcodes[-1] == "STOP"


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Accept a bare state_dict or the common {'state_dict': ...} / {'model': ...} wrappers."""
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict", "generator", "ema"):
            if isinstance(obj.get(key), dict):
                return _unwrap_state_dict(obj[key], path)
    raise CheckpointError(f"{path}: no state_dict found (got {type(obj).__name__}); save model.state_dict()")


def _load_exported_program(path: Path, trust_pickle: bool) -> tuple[nn.Module, ModelCard]:
    if not trust_pickle:
        _refuse_pt2_pickles(path)
    program = _guard(path, lambda: torch.export.load(str(path)))
    names = [spec.arg.name for spec in program.graph_signature.input_specs if spec.kind.name == "USER_INPUT"]
    args = program.example_inputs[0] if program.example_inputs else ()
    inputs = {name: InputSpec(shape=tuple(arg.shape[1:])) for name, arg in zip(names, args)}
    if len(inputs) != len(names):
        raise CheckpointError(f"{path}: has no example inputs to describe; pass --card card.yaml")
    return _with_free_batch(program, tuple(args), path), ModelCard(name=path.stem, inputs=inputs)


def _with_free_batch(program: torch.export.ExportedProgram, example: tuple, path: Path) -> nn.Module:
    """The program as a module that runs at any batch size. Most programs are exported with the batch of
    their example fixed; their module asserts that batch on every call, and their graph may have it written
    in (`view(x, [2, ...])`). The guards go, the written batch is replaced by the actual one (capture.free_batch),
    and the result must match the program run piece by piece at its own batch size, or the load fails."""
    from compressor.rewrites.capture import free_batch_checked, plain_graph_module
    from compressor.rewrites.lift import lift_modules

    try:
        freed = free_batch_checked(plain_graph_module(program), program.module(), example)
    except Exception as exc:  # a mismatch, or a graph that fails at another batch size
        name = next(iter(program.graph_signature.user_inputs), "input")
        raise CheckpointError(
            f"{path}: exported with a fixed batch of {int(example[0].shape[0])} that compressor could not free "
            f"({first_line(exc)}); "
            f"export it again with dynamic_shapes={{'{name}': {{0: torch.export.Dim('batch')}}}}"
        ) from exc
    return lift_modules(freed)  # real nn.Conv2d & co. again: inspect, layer rules and QAT see the model's layers


def _refuse_pt2_pickles(path: Path) -> None:
    """torch.export.load unpickles without the weights-only guard: sample inputs, weights or constants it stored as
    pickles, and opaque objects. Check each of those is tensor-only data before letting it near them."""
    try:
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if name.endswith("_config.json") and "/data/" in name:
                    _check_payload_config(path, archive, name)
                elif "/data/sample_inputs/" in name:
                    _check_tensor_pickle(path, name, archive.read(name))
    except (zipfile.BadZipFile, OSError, ValueError, KeyError) as exc:
        raise _corrupt(path, exc) from exc


def _check_payload_config(path: Path, archive: zipfile.ZipFile, config_name: str) -> None:
    from torch.export.pt2_archive.constants import (
        TENSOR_CONSTANT_FILENAME_PREFIX,
        WEIGHT_FILENAME_PREFIX,
    )

    folder = config_name.rsplit("/", 1)[0]
    for fqn, meta in json.loads(archive.read(config_name)).get("config", {}).items():
        member = f"{folder}/{meta['path_name']}"
        if meta.get("use_pickle"):
            _check_tensor_pickle(path, member, archive.read(member))
        elif not meta["path_name"].startswith((WEIGHT_FILENAME_PREFIX, TENSOR_CONSTANT_FILENAME_PREFIX)):
            # custom_obj_ / opaque_obj_ members are arbitrary pickled Python objects
            raise _unsafe_pickle(path, f"constant '{fqn}' is a pickled Python object")


def _check_tensor_pickle(path: Path, member: str, data: bytes) -> None:
    try:
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:
        raise _unsafe_pickle(path, f"{member} is not plain tensor data") from None


def _unsafe_pickle(path: Path, what: str) -> CheckpointError:
    return CheckpointError(
        f"{path}: {what}, and loading it would run code from the file; "
        "pass --trust-pickle only if you trust its source, or save a state_dict / .safetensors instead"
    )


def _resolve_callable(spec: str, folder: Path, card_path: Path | None) -> tuple[Callable, Path | None]:
    """'module:callable', where module is a file in `folder`, a path to a .py file, or an importable module."""
    where = f"{card_path}: factory" if card_path else "--arch"
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise CheckpointError(f"{where} '{spec}': expected module:callable, e.g. model:Generator")
    candidates = [Path(module_name), folder / f"{module_name}.py"] if module_name.endswith(".py") else [folder / f"{module_name}.py"]
    source = next((c for c in candidates if c.is_file()), None)
    try:
        module = _import_file(source) if source else importlib.import_module(module_name)
    except Exception as exc:
        raise CheckpointError(f"{where} '{spec}': cannot import {module_name} ({first_line(exc)})") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise CheckpointError(f"{where} '{spec}': {module_name} has no callable '{attr}'")
    return factory, source


def _import_file(source: Path):
    """Import a model file under a name derived from its content (two folders' model.py files must not
    collide, and the same file must get the same name wherever it lies: exporters record module names)."""
    unique = "compressor_user_" + sha256_file(source)[:12]
    if unique in sys.modules:
        return sys.modules[unique]
    spec = importlib.util.spec_from_file_location(unique, source)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(source.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(source.parent))
    sys.modules[unique] = module
    return module


def _build(factory: Callable, kwargs: dict, card_path: Path | None) -> nn.Module:
    try:
        model = factory(**kwargs)
    except Exception as exc:
        where = f"{card_path}: kwargs" if card_path else "--arch"
        raise CheckpointError(f"{where}: building the model failed ({type(exc).__name__}: {first_line(exc)})") from exc
    if not isinstance(model, nn.Module):
        raise CheckpointError(f"factory returned {type(model).__name__}, not a torch.nn.Module")
    return tensor_outputs(model)


def tensor_outputs(model: nn.Module) -> nn.Module:
    """diffusers' and transformers' models return a dataclass unless called with return_dict=False, and exporters
    and runners need tensors: such a model is called that way. An instance attribute, not a wrapper module, so
    layer names (and the rules and reports that use them) stay the user's."""
    forward = type(model).forward
    if "return_dict" in inspect.signature(forward).parameters:
        model.forward = partial(forward, model, return_dict=False)
    return model


def _load_state_dict(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Strict load, with every mismatch named in one line instead of torch's multi-line report."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {list(state[k].shape)} vs {list(v.shape)}" for k, v in expected.items() if k in state and state[k].shape != v.shape
    ]
    problems = [
        f"{len(items)} {label} ({', '.join(items[:3])}{', ...' if len(items) > 3 else ''})"
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatches, file vs model", mismatched))
        if items
    ]
    if problems:
        raise CheckpointError(
            f"{path}: state_dict does not fit {type(model).__name__}: {'; '.join(problems)}; "
            "check the architecture and its kwargs match the checkpoint"
        )
    model.load_state_dict(state, strict=True)


def _check_runs_on_card_inputs(loaded: LoadedModel, path: Path) -> None:
    """Run the model once on prior samples, so a card that does not fit the model fails here, clearly."""
    try:
        with torch.no_grad():
            outputs = as_output_list(loaded.model(*sample_inputs(loaded.card, 2, seed=0).values()))
    except Exception as exc:
        raise CheckpointError(
            f"{path}: the model fails on inputs shaped as its card says ({type(exc).__name__}: {first_line(exc)}); "
            "fix 'inputs' in the model card"
        ) from exc
    if not all(torch.isfinite(t).all() for t in outputs):
        raise CheckpointError(f"{path}: the model outputs NaN/Inf on prior samples; check the weights and the card's prior")


def _check_finite(model: nn.Module, path: Path) -> None:
    tensors = list(model.named_parameters()) + list(model.named_buffers())
    for name, tensor in tensors:
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(
                f"{path}: '{name}' holds {bad} NaN/Inf value(s); the weights are damaged "
                "(diverged training?): export a healthy checkpoint"
            )
