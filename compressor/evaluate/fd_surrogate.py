"""FD-surrogate: the Frechet distance on features of a fixed random convolutional network.

It needs no weights file, runs in milliseconds and is bit-for-bit the same everywhere (weights drawn
from a seeded generator), so tests and offline runs can compare image distributions. Random conv
features do track low-level image statistics, but the score is not comparable with any published FID:
it is always labelled FD-surrogate, never FID.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F

NAME = "fd-surrogate"
SEED = 20261121
INPUT_SIZE = 64
CHANNELS = (3, 32, 64, 128)  # three stride-2 4x4 convs: 64 -> 8 pixels; 128 features (spatial mean)
FEATURE_SCALE = 10.0  # puts typical scores on digits at O(1) rather than O(0.01); the scale is arbitrary anyway


class RandomConvFeatures:
    """A seeded random conv net (ReLU between, He-scaled weights); features are the last map's spatial mean."""

    name = NAME
    dim = CHANNELS[-1]

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(SEED)
        self.weights = [
            torch.randn(cout, cin, 4, 4, generator=generator) * (2.0 / (cin * 16)) ** 0.5
            for cin, cout in zip(CHANNELS, CHANNELS[1:])
        ]
        digest = hashlib.sha256(f"{NAME} {SEED} {INPUT_SIZE} {CHANNELS}".encode())
        for weight in self.weights:
            digest.update(weight.numpy().tobytes())
        self.sha256 = digest.hexdigest()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images * 2 - 1, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        for weight in self.weights:
            x = F.relu(F.conv2d(x, weight, stride=2, padding=1))
        return x.mean(dim=(2, 3)) * FEATURE_SCALE
