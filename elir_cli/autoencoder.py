"""Tiny autoencoder of the SD3 VAE (TAESD3): 3 RGB channels <-> 16 latents, /8.

Implements the encoder and decoder described in ELIR (Cohen et al., BMVC 2025),
which reuses madebyollin's TAESD design. Attribute names equal the released
checkpoint keys (``enc.layers.N``, ``dec.layers.N``).
"""

from __future__ import annotations

import torch
from torch import nn

WIDTH = 64
LATENT_CLAMP = 3.0


def conv(n_in: int, n_out: int, *, bias: bool = True, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, stride=stride, padding=1, bias=bias)


class Block(nn.Module):
    """``ReLU(conv(x) + x)`` with three 3x3 convs and ReLUs between them."""

    def __init__(self, *, channels: int = WIDTH) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            conv(channels, channels), nn.ReLU(),
            conv(channels, channels), nn.ReLU(),
            conv(channels, channels),
        )
        self.fuse = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(self.conv(x) + x)


class Encoder(nn.Module):
    """(B,3,H,W) in [0,1] -> (B,latent,H/8,W/8). No input normalisation."""

    def __init__(self, *, latent_channels: int = 16) -> None:
        super().__init__()
        if latent_channels <= 0:
            raise ValueError(f"latent_channels must be positive, got {latent_channels}")
        self.layers = nn.Sequential(
            conv(3, WIDTH), Block(),
            conv(WIDTH, WIDTH, stride=2, bias=False), Block(), Block(), Block(),
            conv(WIDTH, WIDTH, stride=2, bias=False), Block(), Block(), Block(),
            conv(WIDTH, WIDTH, stride=2, bias=False), Block(), Block(), Block(),
            conv(WIDTH, latent_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Decoder(nn.Module):
    """(B,latent,h,w) -> (B,3,8h,8w), unclamped; the latent is soft-clamped first."""

    def __init__(self, *, latent_channels: int = 16) -> None:
        super().__init__()
        if latent_channels <= 0:
            raise ValueError(f"latent_channels must be positive, got {latent_channels}")
        self.layers = nn.Sequential(
            conv(latent_channels, WIDTH), nn.ReLU(),
            Block(), Block(), Block(), nn.Upsample(scale_factor=2), conv(WIDTH, WIDTH, bias=False),
            Block(), Block(), Block(), nn.Upsample(scale_factor=2), conv(WIDTH, WIDTH, bias=False),
            Block(), Block(), Block(), nn.Upsample(scale_factor=2), conv(WIDTH, WIDTH, bias=False),
            Block(), conv(WIDTH, 3),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = LATENT_CLAMP * torch.tanh(z / LATENT_CLAMP)
        return self.layers(z)
