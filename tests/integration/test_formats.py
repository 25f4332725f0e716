"""Every format a user brings gets the same fast, checked path: the same model saved as a folder, a TorchScript
trace and a `.pt2` exported with a fixed batch gives int8 artifacts with the same ops (so none is slower for
the format it came in), and conditioning inputs (an int64 timestep) go through export, calibration and parity."""

from __future__ import annotations

from collections import Counter

import onnx
import pytest
import torch
import yaml
from safetensors.torch import save_file

from compressor import api
from compressor.modelcard import ModelCard, sample_inputs
from compressor.testing.models import ResnetGenerator, TimestepUNet, randomized

FAST = ("target.benchmark.runs=2", "target.benchmark.warmup=0", "stages.ptq.samples=32", "quality.samples=32",
        "quality.fid=off", "budgets.latency_vs_baseline=null")
RESNET_CARD = {"name": "resnet", "inputs": {"image": {"shape": [3, 16, 16], "prior": "uniform"}},
               "outputs": {"fake": {"range": [-1.0, 1.0]}}}
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit.*deprecated:DeprecationWarning")


def _save(model, kwargs: dict, card: dict, folder, fmt: str):
    """`model` (built as `type(model)(**kwargs)`) saved as `fmt`; returns (checkpoint, --card file or None)."""
    folder.mkdir(parents=True)
    example = tuple(sample_inputs(ModelCard.model_validate(card), 2, seed=0).values())
    if fmt == "folder":
        name = type(model).__name__
        (folder / "model.py").write_text(f"from compressor.testing.models import {name}\n")
        save_file(model.state_dict(), str(folder / "weights.safetensors"))
        full = card | {"factory": f"model:{name}", "kwargs": kwargs, "weights": "weights.safetensors"}
        (folder / "compressor.yaml").write_text(yaml.safe_dump(full))
        return folder, None
    (folder / "card.yaml").write_text(yaml.safe_dump(card))
    if fmt == "torchscript":
        torch.jit.trace(model, example).save(str(folder / "model.ts"))
        return folder / "model.ts", folder / "card.yaml"
    torch.export.save(torch.export.export(model, example), str(folder / "model.pt2"))  # no dynamic batch
    return folder / "model.pt2", folder / "card.yaml"


def _ops(path) -> Counter:
    return Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def test_a_model_gets_the_same_int8_graph_from_a_folder_torchscript_and_a_fixed_batch_pt2(tmp_path):
    kwargs = {"width": 8, "blocks": 1}
    model = randomized(ResnetGenerator(**kwargs))
    graphs = {}
    for fmt in ("folder", "torchscript", "pt2"):
        checkpoint, card = _save(model, kwargs, RESNET_CARD, tmp_path / fmt, fmt)
        result = api.run(api.RunConfig(checkpoint=checkpoint, card=card, target="cpu", out=tmp_path / f"out-{fmt}", sets=FAST))
        rewrite = next(stage for stage in result.manifest["stages"] if stage["name"] == "rewrite")["state"]
        assert rewrite["applied"]["decompose_convtranspose"], fmt  # ConvTranspose2d(3, 2, 1, output_padding=1)
        assert rewrite["not_rewritten"] == {}, fmt
        assert result.manifest["artifacts"]["model.onnx"]["parity"]["ok"], fmt
        graphs[fmt] = _ops(result.release_dir / "model.onnx")
    assert "ConvTranspose" not in graphs["folder"]
    assert graphs["torchscript"] == graphs["folder"] and graphs["pt2"] == graphs["folder"]


def test_a_denoiser_with_an_integer_timestep_runs_and_is_not_judged_as_an_image(tmp_path):
    folder = tmp_path / "unet"
    folder.mkdir()
    (folder / "model.py").write_text("from compressor.testing.models import TimestepUNet\n")
    save_file(randomized(TimestepUNet(width=16)).state_dict(), str(folder / "weights.safetensors"))
    card = {
        "name": "unet", "family": "diffusion", "factory": "model:TimestepUNet", "kwargs": {"width": 16},
        "weights": "weights.safetensors",
        "inputs": {"sample": {"shape": [3, 16, 16]},
                   "timestep": {"shape": [], "dtype": "int64", "prior": "integers", "range": [0, 999]}},
        "outputs": {"noise": {"image": False}},
    }
    (folder / "compressor.yaml").write_text(yaml.safe_dump(card))
    result = api.run(api.RunConfig(checkpoint=folder, target="cpu", out=tmp_path / "out", sets=FAST))
    final = result.manifest["artifacts"]["model.onnx"]
    assert final["parity"]["ok"]
    assert "image: false" in final["quality"]["reason"] and "ssim" not in final["quality"]
    inputs = {i.name: i.type.tensor_type.elem_type for i in onnx.load(str(result.release_dir / "model.onnx")).graph.input}
    assert inputs == {"sample": onnx.TensorProto.FLOAT, "timestep": onnx.TensorProto.INT64}
