"""VAE decoder (the shipped model) and encoder (training only) for 32x32 grayscale digits.

Torch only, so `compressor` can import it alone. The decoder is a straight pipeline of plain nn
modules with no data-dependent control flow: it traces with torch.fx.symbolic_trace and exports
with torch.export using a dynamic batch axis.
"""

import torch
from torch import nn


def _up_block(c_in: int, c_out: int) -> nn.Sequential:
    # Nearest upsample + 3x3 conv avoids the checkerboard artifacts of transposed convs.
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.GroupNorm(8, c_out),
        nn.SiLU(),
    )


class DigitsVAEDecoder(nn.Module):
    """Maps z ~ N(0, I) of shape [B, latent_dim] to images [B, 1, 32, 32] in [-1, 1]."""

    def __init__(self, latent_dim: int = 16, base_channels: int = 128):
        super().__init__()
        self.latent_dim = latent_dim
        self.base_channels = base_channels
        c = base_channels
        self.project = nn.Linear(latent_dim, c * 4 * 4)
        self.blocks = nn.Sequential(
            _up_block(c, c // 2),  # 4x4 -> 8x8
            _up_block(c // 2, c // 4),  # 8x8 -> 16x16
            _up_block(c // 4, c // 4),  # 16x16 -> 32x32
        )
        self.head = nn.Sequential(nn.Conv2d(c // 4, 1, 3, padding=1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # -1 instead of self.base_channels keeps the reshape symbolic in the batch axis only.
        x = self.project(z).view(z.shape[0], -1, 4, 4)
        return self.head(self.blocks(x))


class DigitsVAEEncoder(nn.Module):
    """Maps images [B, 1, 32, 32] to the posterior (mu, logvar), each [B, latent_dim]."""

    def __init__(self, latent_dim: int = 16, base_channels: int = 128):
        super().__init__()
        c = base_channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c // 4, 3, 2, 1),  # 32 -> 16
            nn.SiLU(),
            nn.Conv2d(c // 4, c // 2, 3, 2, 1),  # 16 -> 8
            nn.GroupNorm(8, c // 2),
            nn.SiLU(),
            nn.Conv2d(c // 2, c, 3, 2, 1),  # 8 -> 4
            nn.GroupNorm(8, c),
            nn.SiLU(),
            nn.Flatten(),
        )
        self.to_stats = nn.Linear(c * 4 * 4, 2 * latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.to_stats(self.features(x)).chunk(2, dim=1)
        return mu, logvar
