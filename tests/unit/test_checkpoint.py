"""load_checkpoint: every supported format loads to the same function, and every bad input is one actionable line.

The first half saves one tiny seeded model in each supported format and checks the loaded model gives the
same outputs. The second half feeds broken, unsafe or incomplete inputs and checks each fails with a
one-line CheckpointError (or ConfigError for a bad card) naming the file and the fix. Everything is
written under tmp_path.
"""

from __future__ import annotations

import importlib
import io
import random
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import yaml
from safetensors.torch import load_file, save_file

from compressor.checkpoint import load_checkpoint
from compressor.errors import CheckpointError, ConfigError
from compressor.testing.models import (
    ShapeBranchDecoder,
    TinyGenerator,
    card_dict,
    randomized,
    write_model_folder,
)

LATENT = 8
ARCH = "compressor.testing.models:TinyGenerator"

pytestmark = [  # TorchScript is deprecated upstream but still a format users bring
    pytest.mark.filterwarnings(r"ignore:`torch\.jit.*deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning"),
]


# --- helpers -------------------------------------------------------------------------------------


def write_card(path: Path, **extra) -> Path:
    """A model card for TinyGenerator(latent_dim=8), plus any extra (or bogus) keys."""
    path.parent.mkdir(parents=True, exist_ok=True)
    card = card_dict("tiny", LATENT) | {"kwargs": {"latent_dim": LATENT}} | extra
    path.write_text(yaml.safe_dump(card, sort_keys=False))
    return path


def assert_same_outputs(loaded: nn.Module, reference: nn.Module, batch: int = 3) -> None:
    z = torch.randn(batch, LATENT, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(loaded(z), reference.eval()(z), atol=1e-6)


def load_error(path: Path, error: type[Exception] = CheckpointError, **kwargs) -> str:
    """Load `path`, expecting `error`; check it is one line naming `path` and exits with 1; return the message."""
    with pytest.raises(error) as info:
        load_checkpoint(path, **kwargs)
    message = info.value.message
    assert type(info.value) is error
    assert "\n" not in message
    assert str(path) in message
    assert info.value.exit_code == 1
    return message


def folder_reference(folder: Path) -> nn.Module:
    """The model a write_model_folder folder describes, built directly from its weights."""
    model = TinyGenerator(latent_dim=LATENT)
    model.load_state_dict(load_file(str(folder / "weights.safetensors")))
    return model.eval()


def edit_folder_weights(folder: Path, edit) -> None:
    weights = folder / "weights.safetensors"
    state = load_file(str(weights))
    edit(state)
    save_file(state, str(weights))


def garbage(n: int = 512, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    return bytes(rng.getrandbits(8) for _ in range(n))


class TouchOnUnpickle:
    """A pickle payload: unpickling it calls Path.touch(marker), i.e. runs code from the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def model() -> nn.Module:
    torch.manual_seed(0)
    return randomized(TinyGenerator(latent_dim=LATENT))


@pytest.fixture
def card(tmp_path: Path) -> Path:
    """A card kept away from the checkpoints, so it is only used when passed explicitly."""
    return write_card(tmp_path / "cards" / "tiny.yaml")


@pytest.fixture
def ckpt_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "ckpt"
    folder.mkdir()
    return folder


@pytest.fixture
def state_dict_pt(ckpt_dir: Path, model: nn.Module) -> Path:
    path = ckpt_dir / "model.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture
def torchscript_pt(ckpt_dir: Path, model: nn.Module) -> Path:
    path = ckpt_dir / "scripted.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    return path


# --- every supported format loads and computes the same function ---------------------------------


def test_model_folder_loads(tmp_path: Path) -> None:
    folder = write_model_folder(tmp_path / "tiny")
    loaded = load_checkpoint(folder)
    assert loaded.format == "folder"
    assert loaded.card.name == "tiny-generator"
    assert {Path(p).name for p in loaded.files} == {"compressor.yaml", "weights.safetensors", "model.py"}
    assert not loaded.model.training
    assert_same_outputs(loaded.model, folder_reference(folder))


@pytest.mark.parametrize("compile_", ["script", "trace"])
def test_torchscript_loads_with_card_argument(ckpt_dir: Path, card: Path, model: nn.Module, compile_: str) -> None:
    path = ckpt_dir / "model.pt"
    compiled = torch.jit.script(model) if compile_ == "script" else torch.jit.trace(model, torch.randn(2, LATENT))
    torch.jit.save(compiled, str(path))
    loaded = load_checkpoint(path, card=card)
    assert loaded.format == "torchscript"
    assert loaded.card.inputs["z"].shape == (LATENT,)
    assert str(card) in loaded.files
    assert_same_outputs(loaded.model, model)


def test_torchscript_loads_with_card_beside_it(torchscript_pt: Path, model: nn.Module) -> None:
    write_card(torchscript_pt.parent / "compressor.yaml", name="beside")
    loaded = load_checkpoint(torchscript_pt)
    assert loaded.format == "torchscript"
    assert loaded.card.name == "beside"
    assert_same_outputs(loaded.model, model)


def save_pt2(model: nn.Module, path: Path) -> Path:
    program = torch.export.export(
        model, (torch.randn(2, LATENT),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(program, str(path))
    return path


def test_torch_export_loads_and_infers_card_from_example_inputs(ckpt_dir: Path, model: nn.Module) -> None:
    loaded = load_checkpoint(save_pt2(model, ckpt_dir / "model.pt2"))
    assert loaded.format == "torch.export"
    assert [spec.shape for spec in loaded.card.inputs.values()] == [(LATENT,)]
    assert_same_outputs(loaded.model, model, batch=3)  # a batch size other than the example's


@pytest.mark.parametrize("example_batch", [1, 2])
def test_a_pt2_exported_with_a_fixed_batch_runs_at_every_batch(tmp_path: Path, example_batch: int) -> None:
    # Most users export without dynamic_shapes: the program asserts its example's batch and has it written into
    # its reshapes (the attention of ShapeBranchDecoder views by batch).
    model = ShapeBranchDecoder().eval()
    program = torch.export.export(model, (torch.randn(example_batch, 4, 8, 8),))
    torch.export.save(program, str(tmp_path / "decoder.pt2"))
    loaded = load_checkpoint(tmp_path / "decoder.pt2")
    latent = torch.randn(5, 4, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(latent), model(latent))


def test_a_pt2_exported_at_batch_1_keeps_the_sizes_of_its_weights_views(tmp_path: Path) -> None:
    class WeightView(nn.Module):  # at batch 1 every leading size is a multiple of the batch: only the input's count
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(64))

        def forward(self, z):
            return z.view(z.shape[0], 8, 8) @ self.weight.view(8, 8)

    model = WeightView()
    torch.export.save(torch.export.export(model, (torch.randn(1, 64),)), str(tmp_path / "view.pt2"))
    loaded = load_checkpoint(tmp_path / "view.pt2")
    z = torch.randn(3, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(z), model(z))


def test_a_pt2_whose_samples_depend_on_each_other_names_the_fix(tmp_path: Path) -> None:
    class BatchMean(nn.Module):  # each output reads the whole batch: no other batch size gives the same
        def forward(self, z):
            return z - z.mean(0, keepdim=True)

    torch.export.save(torch.export.export(BatchMean(), (torch.randn(2, LATENT),)), str(tmp_path / "mean.pt2"))
    message = load_error(tmp_path / "mean.pt2")
    assert "fixed batch of 2" in message and "Dim('batch')" in message


@pytest.mark.parametrize("arch_kind", ["module", "py-file", "file-beside"])
def test_state_dict_loads_with_arch(
    tmp_path: Path, state_dict_pt: Path, card: Path, model: nn.Module, arch_kind: str
) -> None:
    source = "from compressor.testing.models import TinyGenerator\n"
    if arch_kind == "module":
        arch = ARCH
    elif arch_kind == "py-file":
        model_py = tmp_path / "arch" / "net.py"
        model_py.parent.mkdir()
        model_py.write_text(source)
        arch = f"{model_py}:TinyGenerator"
    else:  # 'model:...' resolves to model.py in the checkpoint's folder
        (state_dict_pt.parent / "model.py").write_text(source)
        arch = "model:TinyGenerator"
    loaded = load_checkpoint(state_dict_pt, arch=arch, card=card)
    assert loaded.format == "state_dict"
    assert not loaded.model.training
    assert_same_outputs(loaded.model, model)


def test_safetensors_state_dict_loads_with_arch(ckpt_dir: Path, card: Path, model: nn.Module) -> None:
    path = ckpt_dir / "model.safetensors"
    save_file(model.state_dict(), str(path))
    loaded = load_checkpoint(path, arch=ARCH, card=card)
    assert loaded.format == "state_dict"
    assert_same_outputs(loaded.model, model)


def test_wrapped_state_dict_loads(ckpt_dir: Path, card: Path, model: nn.Module) -> None:
    path = ckpt_dir / "trainer.ckpt"
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, path)
    loaded = load_checkpoint(path, arch=ARCH, card=card)
    assert loaded.format == "state_dict"
    assert_same_outputs(loaded.model, model)


def test_pickled_module_loads_with_trust_pickle(ckpt_dir: Path, card: Path, model: nn.Module) -> None:
    path = ckpt_dir / "full.pt"
    torch.save(model, path)
    loaded = load_checkpoint(path, card=card, trust_pickle=True)
    assert loaded.format == "pickled-module"
    assert_same_outputs(loaded.model, model)


# --- bad input: one line naming the file and the fix ---------------------------------------------


def test_missing_path(tmp_path: Path) -> None:
    assert "check the path" in load_error(tmp_path / "nope.pt")


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    "name, damage",
    [
        ("truncated.pt", "truncate"),
        ("truncated.safetensors", "truncate"),
        ("garbage.pt", "garbage"),
        ("garbage.safetensors", "garbage"),
        ("text.pt", "text"),
    ],
)
def test_damaged_file_is_reported_corrupt(ckpt_dir: Path, model: nn.Module, name: str, damage: str) -> None:
    path = ckpt_dir / name
    if damage == "truncate":
        if path.suffix == ".safetensors":
            save_file(model.state_dict(), str(path))
        else:
            torch.save(model.state_dict(), path)
        _truncate(path)
    elif damage == "garbage":
        path.write_bytes(garbage())
    else:
        path.write_text("this is not a checkpoint\n" * 20)
    message = load_error(path, arch=ARCH)
    assert "corrupt or truncated" in message
    assert "re-save or re-download" in message


def test_truncated_torchscript_is_reported_corrupt(torchscript_pt: Path, card: Path) -> None:
    _truncate(torchscript_pt)
    assert "corrupt or truncated" in load_error(torchscript_pt, card=card)


def _drop_bias(state: dict) -> None:
    del state["project.bias"]


def _add_extra(state: dict) -> None:
    state["extra.weight"] = torch.zeros(2)


def _reshape(state: dict) -> None:
    state["project.weight"] = torch.zeros(3, 3)


@pytest.mark.parametrize(
    "edit, words",
    [
        (_drop_bias, ["1 missing", "project.bias"]),
        (_add_extra, ["1 unexpected", "extra.weight"]),
        (_reshape, ["shape mismatch", "project.weight [3, 3] vs [256, 8]"]),
    ],
    ids=["missing", "unexpected", "shape"],
)
def test_state_dict_that_does_not_fit(ckpt_dir: Path, card: Path, model: nn.Module, edit, words: list[str]) -> None:
    state = model.state_dict()
    edit(state)
    path = ckpt_dir / "model.pt"
    torch.save(state, path)
    message = load_error(path, arch=ARCH, card=card)
    for word in words:
        assert word in message
    assert "check the architecture" in message


@pytest.mark.parametrize("protocol", [2, 4])  # torch.save's default, and a framed protocol-4 pickle
def test_pickled_module_refused_without_trust_pickle(
    ckpt_dir: Path, card: Path, model: nn.Module, protocol: int
) -> None:
    path = ckpt_dir / "full.pt"
    torch.save(model, path, pickle_protocol=protocol)
    assert "--trust-pickle" in load_error(path, card=card)


PACKAGE = "compressor_test_user_models"
_MODELS_PACKAGE = """import torch.nn as nn


class Generator(nn.Module):
    def __init__(self):
        super().__init__()
        self.project = nn.Linear(8, 4)

    def forward(self, z):
        return self.project(z)
"""


def _pickle_module_from_package(tmp_path: Path, ckpt_dir: Path) -> Path:
    """A whole module pickled from a class of a package (named `PACKAGE`, which nothing else uses: a library may
have imported its own `models`) that lived only in tmp_path while saving."""
    package = tmp_path / "src" / PACKAGE
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(_MODELS_PACKAGE)
    sys.path.insert(0, str(package.parent))
    try:
        path = ckpt_dir / "full.pt"
        torch.save(importlib.import_module(PACKAGE).Generator(), path)
    finally:
        sys.path.remove(str(package.parent))
        sys.modules.pop(PACKAGE, None)
    return path


def test_pickled_module_whose_package_is_missing_names_the_package(tmp_path: Path, ckpt_dir: Path, card: Path) -> None:
    path = _pickle_module_from_package(tmp_path, ckpt_dir)
    message = load_error(path, card=card, trust_pickle=True)
    assert f"refers to class(es) in module '{PACKAGE}', which is not importable" in message
    assert "PYTHONPATH" in message and "pass --arch module:callable" in message
    assert "corrupt" not in message


def test_pickled_module_whose_class_is_gone_names_the_class(
    tmp_path: Path, ckpt_dir: Path, card: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _pickle_module_from_package(tmp_path, ckpt_dir)
    other = tmp_path / "other" / PACKAGE  # another package of the same name, without the class
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("VERSION = 2\n")
    monkeypatch.syspath_prepend(str(other.parent))
    monkeypatch.delitem(sys.modules, PACKAGE, raising=False)
    try:
        message = load_error(path, card=card, trust_pickle=True)
    finally:
        sys.modules.pop(PACKAGE, None)
    assert f"refers to class 'Generator' in module '{PACKAGE}', which is not importable" in message
    assert "corrupt" not in message


@pytest.mark.parametrize("name", ["empty.pt", "empty.pth", "empty.ts", "empty.safetensors"])
def test_empty_file_is_an_interrupted_save(ckpt_dir: Path, card: Path, name: str) -> None:
    path = ckpt_dir / name
    path.touch()
    message = load_error(path, arch=ARCH, card=card)
    assert message == f"{path}: empty file (0 bytes); the save was interrupted: save it again"


def test_empty_weights_in_a_model_folder_is_an_interrupted_save(tmp_path: Path) -> None:
    folder = write_model_folder(tmp_path / "tiny")
    weights = folder / "weights.safetensors"
    weights.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty file \\(0 bytes\\); the save was interrupted") as info:
        load_checkpoint(folder)
    assert str(weights) in info.value.message


def test_code_in_a_pickle_does_not_run_without_trust_pickle(tmp_path: Path, ckpt_dir: Path, card: Path) -> None:
    marker = tmp_path / "pwned"
    path = ckpt_dir / "evil.pt"
    torch.save(TouchOnUnpickle(marker), path)
    assert "--trust-pickle" in load_error(path, arch=ARCH, card=card)
    assert not marker.exists()


def _pt2_with_evil_sample_inputs(model: nn.Module, ckpt_dir: Path, marker: Path) -> Path:
    """A .pt2 whose sample inputs were swapped for a payload: torch.export.load unpickles them unsafely."""
    clean = save_pt2(model, ckpt_dir / "clean.pt2")
    evil = ckpt_dir / "evil.pt2"
    payload = io.BytesIO()
    torch.save(TouchOnUnpickle(marker), payload)
    with zipfile.ZipFile(clean) as src, zipfile.ZipFile(evil, "w") as dst:
        for item in src.infolist():
            is_inputs = "/data/sample_inputs/" in item.filename
            dst.writestr(item, payload.getvalue() if is_inputs else src.read(item.filename))
    return evil


def test_code_in_a_pt2_does_not_run_without_trust_pickle(tmp_path: Path, ckpt_dir: Path, model: nn.Module) -> None:
    marker = tmp_path / "pwned"
    path = _pt2_with_evil_sample_inputs(model, ckpt_dir, marker)
    assert "--trust-pickle" in load_error(path)
    assert not marker.exists()
    with pytest.raises(Exception):  # with --trust-pickle torch.export.load runs it (then fails on the inputs)
        load_checkpoint(path, trust_pickle=True)
    assert marker.exists()


def test_code_in_a_pickle_payload_is_live(tmp_path: Path, ckpt_dir: Path, card: Path) -> None:
    """Control for the test above: the same payload does run once the user trusts the pickle."""
    marker = tmp_path / "pwned"
    path = ckpt_dir / "evil.pt"
    torch.save(TouchOnUnpickle(marker), path)
    with pytest.raises(CheckpointError):  # it unpickles to None, which is not a model
        load_checkpoint(path, card=card, trust_pickle=True)
    assert marker.exists()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
def test_non_finite_weights_name_the_parameter(tmp_path: Path, value: float) -> None:
    folder = write_model_folder(tmp_path / "tiny")

    def poison(state: dict) -> None:
        state["blocks.2.weight"].view(-1)[5] = value

    edit_folder_weights(folder, poison)
    message = load_error(folder)
    assert "'blocks.2.weight' holds 1 NaN/Inf value(s)" in message
    assert "healthy checkpoint" in message


def test_folder_without_card(tmp_path: Path) -> None:
    folder = write_model_folder(tmp_path / "tiny")
    (folder / "compressor.yaml").unlink()
    assert "has no compressor.yaml; add a model card" in load_error(folder)


def test_card_whose_weights_file_is_missing(tmp_path: Path) -> None:
    folder = write_model_folder(tmp_path / "tiny")
    (folder / "weights.safetensors").unlink()
    message = load_error(folder)
    assert str(folder / "compressor.yaml") in message
    assert "'weights.safetensors' not found" in message
    assert "fix 'weights'" in message


def test_folder_card_with_unknown_key_is_a_config_error(tmp_path: Path) -> None:
    folder = write_model_folder(tmp_path / "tiny")
    card_path = folder / "compressor.yaml"
    card_path.write_text(card_path.read_text() + "bogus_key: 1\n")
    message = load_error(folder, ConfigError)
    assert str(card_path) in message
    assert "bogus_key" in message


def test_card_argument_with_unknown_key_is_a_config_error(torchscript_pt: Path, tmp_path: Path) -> None:
    bad_card = write_card(tmp_path / "cards" / "bad.yaml", bogus_key=1)
    with pytest.raises(ConfigError) as info:
        load_checkpoint(torchscript_pt, card=bad_card)
    assert str(bad_card) in info.value.message
    assert "bogus_key" in info.value.message
    assert "\n" not in info.value.message


def test_state_dict_without_arch(state_dict_pt: Path, card: Path) -> None:
    assert "pass --arch module:callable" in load_error(state_dict_pt, card=card)


def test_state_dict_with_arch_but_no_card(state_dict_pt: Path) -> None:
    assert "pass --card" in load_error(state_dict_pt, arch=ARCH)


def test_torchscript_without_card(torchscript_pt: Path) -> None:
    assert "pass --card card.yaml" in load_error(torchscript_pt)
