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


class AttentionDecoder(nn.Module):
    """A latent decoder with a diffusers-style self-attention block (`heads` attribute, to_q/to_k/to_v and
    to_out[0], the head size read from the key's width as diffusers' AttnProcessor2_0 does), then 2x nearest
    upsampling + 3x3 conv. `literal_heads` writes the head count into the reshape instead, as some user code
    does, so the attribute says nothing about how the heads are split."""

    def __init__(self, latent_channels: int = 4, width: int = 32, heads: int = 4, literal_heads: bool = False) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(latent_channels, width, 3, padding=1)
        self.attn = _DiffusersStyleAttention(width, heads, literal_heads)
        self.up_conv = nn.Conv2d(width, width, 3, padding=1)
        self.norm_out, self.conv_out = nn.GroupNorm(4, width), nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        x = self.attn(self.conv_in(latent))
        x = self.up_conv(nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"))
        return torch.tanh(self.conv_out(nn.functional.silu(self.norm_out(x))))


class _DiffusersStyleAttention(nn.Module):
    def __init__(self, width: int, heads: int, literal_heads: bool) -> None:
        super().__init__()
        self.heads, self.literal = heads, heads if literal_heads else None
        self.group_norm = nn.GroupNorm(4, width)
        self.to_q, self.to_k, self.to_v = (nn.Linear(width, width) for _ in range(3))
        self.to_out = nn.ModuleList([nn.Linear(width, width), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        hidden = self.group_norm(x).view(batch, channels, height * width).transpose(1, 2)
        q, k, v = self.to_q(hidden), self.to_k(hidden), self.to_v(hidden)
        heads = self.literal or self.heads
        head_dim = k.shape[-1] // heads
        q, k, v = (t.view(batch, -1, heads, head_dim).transpose(1, 2) for t in (q, k, v))
        hidden = nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, -1, heads * head_dim)
        hidden = self.to_out[1](self.to_out[0](hidden))
        return hidden.transpose(1, 2).reshape(batch, channels, height, width) + x


class DCGANGenerator(nn.Module):
    """The PyTorch tutorial's DCGAN generator (64x64): latent (nz, 1, 1) -> ConvTranspose2d(4, 1, 0) then
    ConvTranspose2d(4, 2, 1) + BatchNorm + ReLU blocks -> Tanh."""

    def __init__(self, nz: int = 100, ngf: int = 64, channels: int = 3) -> None:
        super().__init__()
        widths = [ngf * 8, ngf * 4, ngf * 2, ngf]
        layers = [nn.ConvTranspose2d(nz, widths[0], 4, 1, 0, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(True)]
        for wide, narrow in zip(widths, widths[1:]):
            layers += [nn.ConvTranspose2d(wide, narrow, 4, 2, 1, bias=False), nn.BatchNorm2d(narrow), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(ngf, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)


class UNetGenerator(nn.Module):
    """pix2pix-style image-to-image UNet: strided conv down with LeakyReLU, ConvTranspose2d(4, 2, 1) up, skips
    concatenated on the channel axis."""

    def __init__(self, channels: int = 3, width: int = 32, depth: int = 4) -> None:
        super().__init__()
        widths = [width * min(2**i, 8) for i in range(depth)]
        self.down = nn.ModuleList()
        previous = channels
        for index, wide in enumerate(widths):
            norm = [nn.BatchNorm2d(wide)] if index else []
            self.down.append(nn.Sequential(nn.Conv2d(previous, wide, 4, 2, 1), *norm, nn.LeakyReLU(0.2)))
            previous = wide
        self.up = nn.ModuleList()
        for index, wide in reversed(list(enumerate(widths[:-1]))):
            incoming = widths[index + 1] * (1 if index == len(widths) - 2 else 2)
            self.up.append(nn.Sequential(nn.ConvTranspose2d(incoming, wide, 4, 2, 1), nn.BatchNorm2d(wide), nn.ReLU()))
        self.out = nn.Sequential(nn.ConvTranspose2d(widths[0] * 2, channels, 4, 2, 1), nn.Tanh())

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        skips = []
        x = image
        for block in self.down:
            x = block(x)
            skips.append(x)
        skips.pop()
        for block in self.up:
            x = torch.cat([block(x), skips.pop()], dim=1)
        return self.out(x)


class TimestepUNet(nn.Module):
    """A diffusers UNet2DModel-style denoiser: (noisy sample, int64 timestep) -> noise prediction. Sinusoidal
    timestep embedding, ResNet blocks with GroupNorm + SiLU and the embedding added, self-attention at the
    lowest resolution, stride-2 conv down, nearest 2x + 3x3 conv up, concatenated skips."""

    def __init__(self, channels: int = 3, width: int = 32) -> None:
        super().__init__()
        self.width = width
        self.time_mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.SiLU(), nn.Linear(4 * width, 4 * width))
        self.conv_in = nn.Conv2d(channels, width, 3, padding=1)
        self.down1, self.pool1 = _TimeResBlock(width, width, 4 * width), nn.Conv2d(width, width, 3, 2, 1)
        self.down2, self.pool2 = _TimeResBlock(width, 2 * width, 4 * width), nn.Conv2d(2 * width, 2 * width, 3, 2, 1)
        self.mid = _TimeResBlock(2 * width, 2 * width, 4 * width)
        self.attn_norm = nn.GroupNorm(8, 2 * width)
        self.qkv, self.proj = nn.Conv2d(2 * width, 6 * width, 1), nn.Conv2d(2 * width, 2 * width, 1)
        self.up2_conv, self.up2 = nn.Conv2d(2 * width, 2 * width, 3, padding=1), _TimeResBlock(4 * width, width, 4 * width)
        self.up1_conv, self.up1 = nn.Conv2d(width, width, 3, padding=1), _TimeResBlock(2 * width, width, 4 * width)
        self.norm_out, self.conv_out = nn.GroupNorm(8, width), nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        half = self.width // 2
        frequencies = torch.exp(-torch.arange(half, dtype=torch.float32, device=sample.device) * (9.21 / half))
        angles = timestep.float()[:, None] * frequencies[None]
        emb = self.time_mlp(torch.cat([angles.sin(), angles.cos()], dim=1))
        x = self.conv_in(sample)
        skip1 = self.down1(x, emb)
        skip2 = self.down2(self.pool1(skip1), emb)
        x = self.mid(self.pool2(skip2), emb)
        x = x + self._attention(x)
        x = self.up2(torch.cat([self.up2_conv(nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")), skip2], 1), emb)
        x = self.up1(torch.cat([self.up1_conv(nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")), skip1], 1), emb)
        return self.conv_out(nn.functional.silu(self.norm_out(x)))

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).reshape(batch, 3, 1, channels, height * width).transpose(-1, -2).unbind(1)
        h = nn.functional.scaled_dot_product_attention(q, k, v)  # (batch, 1 head, tokens, channels)
        return self.proj(h.transpose(-1, -2).reshape(batch, channels, height, width))


class _TimeResBlock(nn.Module):
    def __init__(self, incoming: int, outgoing: int, embedding: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(8, incoming), nn.Conv2d(incoming, outgoing, 3, padding=1)
        self.time = nn.Linear(embedding, outgoing)
        self.norm2, self.conv2 = nn.GroupNorm(8, outgoing), nn.Conv2d(outgoing, outgoing, 3, padding=1)
        self.skip = nn.Conv2d(incoming, outgoing, 1) if incoming != outgoing else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x))) + self.time(nn.functional.silu(emb))[:, :, None, None]
        return self.skip(x) + self.conv2(nn.functional.silu(self.norm2(h)))


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
