"""Tiny stand-ins for the model families compressor handles, plus a helper that writes a model folder.

They mirror the demo architectures (examples/) at a fraction of the size, so tests exercise the same
layer patterns (Linear -> view -> BatchNorm, ConvTranspose + BatchNorm, Upsample + Conv + GroupNorm).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import yaml


class TinyGenerator(nn.Module):
    """DCGAN-style: Linear -> view -> BN -> [ConvTranspose + BN + ReLU] -> ConvTranspose -> Tanh (16x16)."""

    def __init__(self, latent_dim: int = 8, channels: int = 16) -> None:
        super().__init__()
        self.channels = channels
        self.project = nn.Linear(latent_dim, channels * 4 * 4)
        self.blocks = nn.Sequential(
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.ConvTranspose2d(channels, channels // 2, 4, 2, 1),
            nn.BatchNorm2d(channels // 2),
            nn.ReLU(),
            nn.ConvTranspose2d(channels // 2, 1, 4, 2, 1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.project(z).view(z.shape[0], self.channels, 4, 4))


class TinyDecoder(nn.Module):
    """VAE-decoder-style: Linear -> view -> [Upsample + Conv + GroupNorm + SiLU] -> Conv -> Tanh (16x16)."""

    def __init__(self, latent_dim: int = 4, channels: int = 16) -> None:
        super().__init__()
        self.channels = channels
        self.project = nn.Linear(latent_dim, channels * 4 * 4)
        self.blocks = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(channels, channels // 2, 3, padding=1),
            nn.GroupNorm(4, channels // 2),
            nn.SiLU(),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(channels // 2, 1, 3, padding=1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.project(z).view(z.shape[0], self.channels, 4, 4))


class ResnetGenerator(nn.Module):
    """CycleGAN/pix2pix-style image-to-image generator, as users write it: reflection padding, InstanceNorm,
    a stride-2 conv down, residual blocks, ConvTranspose2d(3, 2, 1, output_padding=1) up, Tanh."""

    def __init__(self, channels: int = 3, width: int = 8, blocks: int = 2) -> None:
        super().__init__()
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(channels, width, 7), nn.InstanceNorm2d(width), nn.ReLU(True)]
        layers += [nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.InstanceNorm2d(2 * width), nn.ReLU(True)]
        layers += [_ResnetBlock(2 * width) for _ in range(blocks)]
        layers += [nn.ConvTranspose2d(2 * width, width, 3, stride=2, padding=1, output_padding=1), nn.InstanceNorm2d(width), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image)


class _ResnetBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(width, width, 3), nn.InstanceNorm2d(width), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(width, width, 3), nn.InstanceNorm2d(width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ShapeBranchDecoder(nn.Module):
    """A diffusers-style VAE decoder that torch.fx cannot trace: its upsampler branches on the batch size (as
    diffusers' Upsample2D does) and its attention reshapes by the input's shape. GroupNorm, SiLU,
    self-attention, 2x nearest upsampling + 3x3 conv."""

    def __init__(self, latent_channels: int = 4, width: int = 16) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(latent_channels, width, 3, padding=1)
        self.norm1, self.conv1 = nn.GroupNorm(4, width), nn.Conv2d(width, width, 3, padding=1)
        self.attn_norm = nn.GroupNorm(4, width)
        self.to_q, self.to_k, self.to_v, self.to_out = (nn.Linear(width, width) for _ in range(4))
        self.up_conv = nn.Conv2d(width, width, 3, padding=1)
        self.norm_out, self.conv_out = nn.GroupNorm(4, width), nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(latent)
        x = x + self.conv1(nn.functional.silu(self.norm1(x)))
        batch, channels, height, width = x.shape
        h = self.attn_norm(x).view(batch, channels, height * width).transpose(1, 2)
        q, k, v = (proj(h).view(batch, -1, 2, channels // 2).transpose(1, 2) for proj in (self.to_q, self.to_k, self.to_v))
        h = nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, -1, channels)
        x = x + self.to_out(h).transpose(1, 2).reshape(batch, channels, height, width)
        if x.shape[0] >= 64:  # diffusers' Upsample2D does this; torch.fx cannot trace a branch on a shape
            x = x.contiguous()
        x = self.up_conv(nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"))
        return torch.tanh(self.conv_out(nn.functional.silu(self.norm_out(x))))


def randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """Seeded weights plus non-trivial BatchNorm statistics, so folding BN is really exercised."""
    torch.manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.2, 0.2)
    return model.eval()


def card_dict(name: str, latent_dim: int, family: str = "gan") -> dict:
    return {
        "name": name,
        "family": family,
        "inputs": {"z": {"shape": [latent_dim], "prior": "normal"}},
        "outputs": {"image": {"shape": [1, 16, 16], "range": [-1.0, 1.0]}},
    }


def write_model_folder(folder: Path, kind: str = "generator", seed: int = 0) -> Path:
    """A model folder as a user would ship it: model.py, weights.safetensors and compressor.yaml."""
    from safetensors.torch import save_file

    cls, latent = (TinyGenerator, 8) if kind == "generator" else (TinyDecoder, 4)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.py").write_text(f"from compressor.testing.models import {cls.__name__}\n")
    torch.manual_seed(seed)  # the initial weights too, so every process writes the same folder
    model = randomized(cls(latent_dim=latent), seed)
    save_file(model.state_dict(), str(folder / "weights.safetensors"))
    card = card_dict(f"tiny-{kind}", latent) | {
        "factory": f"model:{cls.__name__}",
        "kwargs": {"latent_dim": latent},
        "weights": "weights.safetensors",
    }
    (folder / "compressor.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    return folder
