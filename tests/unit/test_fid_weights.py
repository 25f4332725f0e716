"""Where FID weights come from (explicit path, env var, torch hub cache, the [fid] extra), what happens
when there are none or they are wrong, and the two TorchScript conventions read."""

from __future__ import annotations

import pytest
import torch

from compressor.evaluate import fid
from compressor.testing.fake_inception import write_fake_inception


def test_no_weights_anywhere_is_an_error_that_says_how_to_supply_them():
    with pytest.raises(fid.FidWeightsError) as info:
        fid.find_weights()
    assert "--fid-weights" in info.value.message and fid.ENV_VAR in info.value.message and "[fid] extra" in info.value.message


def test_lookup_order_explicit_then_env_then_hub_then_extra(tmp_path, monkeypatch):
    files = {name: write_fake_inception(tmp_path / f"{name}.pt") for name in ("explicit", "env", "extra")}
    hub = tmp_path / "torch-home" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    files["hub"] = write_fake_inception(hub / "inception-2015-12-05.pt")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(fid, "_extra_file", lambda: files["extra"])
    assert fid.find_weights() == (files["hub"], "torch hub cache")
    monkeypatch.setenv(fid.ENV_VAR, str(files["env"]))
    assert fid.find_weights() == (files["env"], fid.ENV_VAR)
    assert fid.find_weights(files["explicit"]) == (files["explicit"], "--fid-weights")
    files["hub"].unlink()
    monkeypatch.delenv(fid.ENV_VAR)
    assert fid.find_weights() == (files["extra"], "[fid] extra")


def test_a_named_file_that_is_missing_is_not_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(fid, "_extra_file", lambda: write_fake_inception(tmp_path / "extra.pt"))
    with pytest.raises(fid.FidWeightsError, match="absent.pt: FID weights file not found"):
        fid.find_weights(tmp_path / "absent.pt")
    monkeypatch.setenv(fid.ENV_VAR, str(tmp_path / "gone.pt"))
    with pytest.raises(fid.FidWeightsError, match=f"gone.pt: FID weights file not found \\(from {fid.ENV_VAR}\\)"):
        fid.find_weights()


@pytest.mark.parametrize(
    "make,expected",
    [
        (lambda p: p.write_bytes(b"\x00garbage" * 100), "unreadable"),
        (lambda p: torch.save({"conv.weight": torch.zeros(2)}, p), "a torch.save file \\(a state dict\\?\\)"),
        (lambda p: write_fake_inception(p, features=10), "gives 10 features per image, not Inception-v3's 2048"),
        (lambda p: torch.jit.script(torch.nn.Linear(3, 2048)).save(str(p)), "does not take an \\[N, 3, 299, 299\\]"),
    ],
)
def test_wrong_or_corrupt_weights_are_one_line_errors(tmp_path, make, expected):
    path = tmp_path / "weights.pt"
    make(path)
    with pytest.raises(fid.FidWeightsError, match=expected) as info:
        fid.InceptionFeatures(path)
    assert info.value.message.startswith(str(path)) and "\n" not in info.value.message


def test_both_torchscript_conventions_see_the_same_pixels(tmp_path):
    """fid-helper's file takes (pixel - 128) / 128, NVIDIA's takes pixels 0..255: same features for the
    same image once each convention's input mapping is undone."""
    helper = fid.InceptionFeatures(write_fake_inception(tmp_path / "helper.pt"))
    nvidia = fid.InceptionFeatures(write_fake_inception(tmp_path / "nvidia.pt", style="nvidia"))
    assert not helper.nvidia_convention and nvidia.nvidia_convention
    images = torch.rand(2, 3, 32, 32)
    with torch.inference_mode():
        from_helper = helper.module(torch.nn.functional.interpolate(images, size=299, mode="bilinear") * (255 / 128) - 1)
        expected = nvidia.module.inner(torch.nn.functional.interpolate(images, size=299, mode="bilinear"))
        torch.testing.assert_close(nvidia(images), expected)
        torch.testing.assert_close(helper(images), from_helper)
    assert nvidia(images).shape == helper(images).shape == (2, 2048)
    assert len(helper.sha256) == 64 and helper.sha256 != nvidia.sha256


@pytest.mark.parametrize("style", ["helper", "nvidia"])
def test_features_run_on_onnxruntime_and_fall_back_to_torchscript_saying_why(tmp_path, monkeypatch, caplog, style):
    path = write_fake_inception(tmp_path / f"{style}.pt", style=style)
    fast = fid.InceptionFeatures(path)
    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    assert fast.backend == "onnxruntime" and fast.images_per_second > 0
    monkeypatch.setattr(fid, "ORT_TOLERANCE", -1.0)  # no difference passes: ONNX Runtime must be refused
    with caplog.at_level("WARNING", logger="compressor"):
        slow = fid.InceptionFeatures(path)
    assert slow.backend == "torchscript" and "run on TorchScript" in caplog.text
    torch.testing.assert_close(fast(images), slow(images), atol=1e-4, rtol=0)  # the default ORT_TOLERANCE
