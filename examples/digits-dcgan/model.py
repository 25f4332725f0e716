"""DCGAN generator for 32x32 grayscale digits (torch only, so `compressor` can import it alone).

The graph is a straight pipeline of plain nn modules with no data-dependent control flow, so it
traces with torch.fx.symbolic_trace and exports with torch.export using a dynamic batch axis.
"""

import torch
from torch import nn


class DigitsGenerator(nn.Module):
    """Maps z ~ N(0, I) of shape [B, latent_dim] to images [B, 1, 32, 32] in [-1, 1]."""

    def __init__(self, latent_dim: int = 64, base_channels: int = 256):
        super().__init__()
        self.latent_dim = latent_dim
        self.base_channels = base_channels
        c = base_channels
        self.project = nn.Linear(latent_dim, c * 4 * 4)
        self.blocks = nn.Sequential(
            nn.BatchNorm2d(c),
            nn.ReLU(),
            nn.ConvTranspose2d(c, c // 2, 4, 2, 1),  # 4x4 -> 8x8
            nn.BatchNorm2d(c // 2),
            nn.ReLU(),
            nn.ConvTranspose2d(c // 2, c // 4, 4, 2, 1),  # 8x8 -> 16x16
            nn.BatchNorm2d(c // 4),
            nn.ReLU(),
            nn.ConvTranspose2d(c // 4, 1, 4, 2, 1),  # 16x16 -> 32x32
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # -1 instead of self.base_channels keeps the reshape symbolic in the batch axis only.
        x = self.project(z).view(z.shape[0], -1, 4, 4)
        return self.blocks(x)
