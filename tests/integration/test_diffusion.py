"""A diffusion UNet written in a user's own style, with a sampler in its card, goes through a whole release:
calibrated along its sampling loops, judged on the images of the whole loop, timed per image; cards whose
sampler does not fit the model are refused at load, in one line naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from safetensors.torch import save_file

from compressor import api
from compressor.checkpoint import load_checkpoint
from compressor.errors import CompressorError
from compressor.testing.models import TimestepUNet, randomized

pytest.importorskip("diffusers")

FAST = ("quality.fid=off", "quality.samples=16", "quality.batch=16", "stages.ptq.samples=32", "target.benchmark.runs=3",
        "target.benchmark.warmup=1", "target.parity.samples=4", "budgets.latency_vs_baseline=null")
SAMPLER = {"scheduler": "ddim", "steps": 4, "range": [-1.0, 1.0],
           "config": {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2", "clip_sample": True}}


def _unet_folder(folder: Path, **sampler) -> Path:
    folder.mkdir()
    (folder / "model.py").write_text("from compressor.testing.models import TimestepUNet\n")
    save_file(randomized(TimestepUNet(channels=1, width=16)).state_dict(), str(folder / "weights.safetensors"))
    card = {
        "name": "unet", "family": "diffusion", "factory": "model:TimestepUNet", "kwargs": {"channels": 1, "width": 16},
        "weights": "weights.safetensors",
        "inputs": {"sample": {"shape": [1, 16, 16]},
                   "timestep": {"shape": [], "dtype": "int64", "prior": "integers", "range": [0, 999]}},
        "outputs": {"noise": {"image": False}},
        "sampler": {**SAMPLER, **sampler},
    }
    (folder / "compressor.yaml").write_text(yaml.safe_dump(card))
    return folder


def test_a_unet_release_is_calibrated_along_its_loops_and_judged_on_its_images(tmp_path):
    folder = _unet_folder(tmp_path / "unet")
    result = api.run(api.RunConfig(checkpoint=folder, target="cpu", out=tmp_path / "out", sets=FAST))
    manifest = result.manifest
    ptq = next(stage for stage in manifest["stages"] if stage["name"] == "ptq")
    assert ptq["metrics"]["calibration"] == "sampling (32 model inputs along 8 sampling loops of 4 steps)"
    assert manifest["quality_reference"]["model_calls_per_sample"] == 4
    for name in ("model.fp32.onnx", "model.onnx"):
        record = manifest["artifacts"][name]
        assert record["parity"]["ok"] and record["parity"]["samples"] == 4
        assert "ssim" in record["quality"]  # the loop's final samples are images, though one call's output is not
        assert record["latency"]["per_image"]["model_calls"] == 4 and record["latency"]["per_image"]["median_ms"] > 0
    assert manifest["artifacts"]["model.fp32.onnx"]["parity"]["max_abs_error"] < 1e-3  # the export, through 4 steps
    report = result.report.read_text()
    assert "1 image (4 calls)" in report
    details = manifest["artifacts"]["model.onnx"]["details"]
    floats = {layer: entry["reason"] for layer, entry in details["layers"].items() if entry["precision"] != "int8"}
    assert floats == dict.fromkeys(["time_mlp.0", "conv_in", "conv_out"],
                                   "input/output layer of a 4-step sampler (ptq.io_layers: auto)")
    assert details["bias_correction"]["applied"] and details["bias_correction"]["nodes"] > 10
    assert "Bias correction: " in report and "input/output layer of a 4-step sampler" in report


def test_a_rule_overrides_the_float_io_layers(tmp_path):
    """io_layers: auto sits under the user's rules, as any default does: a rule placing conv_in in int8 wins."""
    folder = _unet_folder(tmp_path / "unet")
    sets = (*FAST, "stages.ptq.rules=[{match: conv_in, precision: int8}]", "stages.ptq.bias_correction=false")
    details = api.run(api.RunConfig(checkpoint=folder, target="cpu", out=tmp_path / "out", sets=sets)).manifest[
        "artifacts"]["model.onnx"]["details"]
    assert details["layers"]["conv_in"] == {"precision": "int8", "reason": "rule 0 (match 'conv_in')"}
    assert details["layers"]["conv_out"]["precision"] == "fp32"
    assert "bias_correction" not in details


def test_prior_calibration_draws_single_calls(tmp_path):
    folder = _unet_folder(tmp_path / "unet")
    sets = (*FAST, "stages.ptq.calibrate_on=prior")
    result = api.run(api.RunConfig(checkpoint=folder, target="cpu", out=tmp_path / "out", sets=sets))
    ptq = next(stage for stage in result.manifest["stages"] if stage["name"] == "ptq")
    assert ptq["metrics"]["calibration"] == "prior (32 seeded samples)"


@pytest.mark.parametrize(
    ("sampler", "message"),
    [
        ({"timestep": "t"}, "sampler.timestep names 't', which is not one of the inputs ['sample', 'timestep']"),
        ({"scheduler": "euler-a"}, "unknown scheduler 'euler-a'; known: ddim, ddpm, dpm-solver"),
    ],
)
def test_a_card_whose_sampler_does_not_fit_is_refused_at_load(tmp_path, sampler, message):
    folder = _unet_folder(tmp_path / "unet", **sampler)
    with pytest.raises(CompressorError) as caught:
        load_checkpoint(folder)
    assert str(folder / "compressor.yaml") in caught.value.message and message in caught.value.message
    assert "\n" not in caught.value.message


def test_a_latent_diffusion_decoder_written_with_diffusers_releases_through_the_one_call_path(tmp_path):
    """diffusers' AutoencoderKL decoder class as it is (GroupNorm, mid-block attention, nearest upsampling),
    named by the card's factory: one call per image, all of it int8 on ORT, its attention included."""
    import torch
    from diffusers.models.autoencoders.vae import Decoder

    kwargs = {"in_channels": 4, "out_channels": 3, "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
              "block_out_channels": [32, 64], "layers_per_block": 1, "norm_num_groups": 16}
    folder = tmp_path / "decoder"
    folder.mkdir()
    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in Decoder(**kwargs).state_dict().items()}, str(folder / "decoder.safetensors"))
    (folder / "compressor.yaml").write_text(yaml.safe_dump({
        "name": "akl-decoder", "family": "vae", "factory": "diffusers.models.autoencoders.vae:Decoder", "kwargs": kwargs,
        "weights": "decoder.safetensors", "inputs": {"latent": {"shape": [4, 8, 8], "prior": "normal"}},
        "outputs": {"image": {"shape": [3, 16, 16], "range": [-1.0, 1.0]}},
    }))
    manifest = api.run(api.RunConfig(checkpoint=folder, target="cpu", out=tmp_path / "out", sets=FAST)).manifest
    final = manifest["artifacts"]["model.onnx"]
    assert manifest["quality_reference"]["model_calls_per_sample"] == 1
    assert final["precision"] == "int8" and final["parity"]["ok"] and final["quality"]["psnr_db"] > 30
    assert final["details"]["layers"]["mid_block.attentions.0.to_q"]["precision"] == "int8"
