"""Rewrites reach models torch.fx cannot trace: TorchScript, torch.export programs and Python control flow are
captured with torch.export and lifted back into module calls (rewrites/capture.py, rewrites/lift.py)."""

from __future__ import annotations

import torch
import torch.nn as nn

from compressor.config import resolve
from compressor.context import RunContext
from compressor.modelcard import ModelCard
from compressor.rewrites.capture import capture, plain_graph_module
from compressor.stages.rewrite import RewriteConfig
from compressor.testing.models import ResnetGenerator, ShapeBranchDecoder, TimestepUNet, TinyGenerator, randomized


def _modules_of(model: nn.Module, kind: type) -> list[str]:
    return [name for name, module in model.named_modules() if type(module) is kind]


def test_torchscript_is_lifted_into_named_module_calls_that_compute_the_same():
    model = randomized(TinyGenerator())
    scripted = torch.jit.trace(model, torch.randn(2, 8))
    lifted = capture(scripted, (torch.randn(2, 8),))
    assert _modules_of(lifted, nn.ConvTranspose2d) == ["blocks.2", "blocks.5"]  # named after the weights' owners
    assert _modules_of(lifted, nn.BatchNorm2d) == ["blocks.0", "blocks.3"]
    z = torch.randn(5, 8)  # another batch size than the capture's
    torch.testing.assert_close(lifted(z), model(z))


def test_an_exported_program_is_lifted_and_keeps_a_free_batch():
    model = ResnetGenerator().eval()
    program = torch.export.export(model, (torch.randn(2, 3, 16, 16),), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    lifted = capture(plain_graph_module(program), ())  # what the loader makes of a .pt2
    assert _modules_of(lifted, nn.ConvTranspose2d) == ["model.9"]
    assert len(_modules_of(lifted, nn.ReflectionPad2d)) == 6
    image = torch.rand(3, 3, 16, 16) * 2 - 1
    torch.testing.assert_close(lifted(image), model(image))


def _context(model: nn.Module, card: dict, tmp_path) -> RunContext:
    return RunContext.create(model, ModelCard.model_validate(card), resolve("cpu"), tmp_path)


def test_the_rewrite_stage_reaches_a_model_with_a_shape_branch(tmp_path):
    model = ShapeBranchDecoder().eval()
    card = {"name": "decoder", "inputs": {"latent": {"shape": [4, 8, 8]}}, "outputs": {"image": {"range": [-1, 1]}}}
    result = RewriteConfig().run(model, _context(model, card, tmp_path))
    assert result.state["graph"] == "torch.export" and result.state["skipped"] == {}
    assert result.state["applied"]["upsample_conv_to_phases"] == ["up_conv"]
    assert result.metrics["relative_change"] < 1e-5  # checked at another batch size than the capture's


def test_the_rewrite_stage_decomposes_a_torchscript_generators_upsampler(tmp_path):
    model = ResnetGenerator().eval()
    scripted = torch.jit.trace(model, torch.randn(2, 3, 16, 16))
    card = {"name": "resnet", "inputs": {"image": {"shape": [3, 16, 16], "prior": "uniform"}}}
    result = RewriteConfig().run(scripted, _context(scripted, card, tmp_path))
    assert result.state["applied"]["decompose_convtranspose"] == ["model.9"]
    assert result.state["not_rewritten"] == {}
    assert not _modules_of(result.model, nn.ConvTranspose2d)


def test_functional_upsampling_in_a_traceable_model_gets_the_phase_rewrite(tmp_path):
    # The timestep UNet upsamples with F.interpolate (as diffusers' Upsample2D does) and takes an int64 timestep.
    model = TimestepUNet().eval()
    card = {
        "name": "unet",
        "inputs": {"sample": {"shape": [3, 32, 32]}, "timestep": {"shape": [], "dtype": "int64", "prior": "integers", "range": [0, 999]}},
        "outputs": {"noise": {"image": False}},
    }
    result = RewriteConfig().run(model, _context(model, card, tmp_path))
    assert result.state["graph"] == "torch.fx"
    assert sorted(result.state["applied"]["upsample_conv_to_phases"]) == ["up1_conv", "up2_conv"]
    assert result.metrics["relative_change"] < 1e-5


def test_functional_reflection_padding_is_lifted():
    class Padded(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3)

        def forward(self, x):
            return self.conv(nn.functional.pad(x, (1, 1, 1, 1), mode="reflect"))

    from compressor.rewrites.graph import trace
    from compressor.rewrites.lift import lift_modules

    model = Padded().eval()
    lifted = lift_modules(trace(model))
    assert len(_modules_of(lifted, nn.ReflectionPad2d)) == 1
    x = torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(lifted(x), model(x))


def test_a_torchscript_file_whose_trace_records_sizes_as_tensors_is_captured(tmp_path):
    # The attention's view(batch, channels, h * w) is recorded with size tensors, which torch's own
    # TorchScript-to-export converter cannot follow; loading from a file gives plain tensors as parameters.
    model = ShapeBranchDecoder().eval()
    example = (torch.randn(2, 4, 8, 8),)
    torch.jit.trace(model, example).save(str(tmp_path / "decoder.ts"))
    scripted = torch.jit.load(str(tmp_path / "decoder.ts"))
    scripted(*example)  # the loader runs the model once first, as here
    lifted = capture(scripted, example)
    assert "up_conv" in dict(lifted.named_modules())
    latent = torch.randn(5, 4, 8, 8)
    torch.testing.assert_close(lifted(latent), model(latent))
    torch.testing.assert_close(scripted(latent), model(latent))  # the user's module still runs as before
