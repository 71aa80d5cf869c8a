"""Tiny autoencoder of the SD3 VAE (TAESD3): 3 RGB channels <-> 16 latents, /8.

Implements the encoder and decoder described in ELIR (Cohen et al., BMVC 2025),
which reuses madebyollin's TAESD design. Attribute names equal the released
checkpoint keys (``enc.layers.N``, ``dec.layers.N``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

WIDTH = 64
LATENT_CLAMP = 3.0


def conv(n_in: int, n_out: int, *, bias: bool = True, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, stride=stride, padding=1, bias=bias)


class Block(nn.Module):
    """``ReLU(conv(x) + x)`` with three 3x3 convs and ReLUs between them."""

    def __init__(self, *, channels: int = WIDTH) -> None:
        super().__init__()
        # In-place ReLUs act on fresh conv outputs only (autograd-safe, less memory traffic).
        self.conv = nn.Sequential(
            conv(channels, channels), nn.ReLU(inplace=True),
            conv(channels, channels), nn.ReLU(inplace=True),
            conv(channels, channels),
        )
        self.fuse = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        h += x
        return self.fuse(h)


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
            conv(latent_channels, WIDTH), nn.ReLU(inplace=True),
            Block(), Block(), Block(), nn.Upsample(scale_factor=2), conv(WIDTH, WIDTH, bias=False),
            Block(), Block(), Block(), nn.Upsample(scale_factor=2), conv(WIDTH, WIDTH, bias=False),
            Block(), Block(), Block(), nn.Upsample(scale_factor=2), conv(WIDTH, WIDTH, bias=False),
            Block(), conv(WIDTH, 3),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = LATENT_CLAMP * torch.tanh(z / LATENT_CLAMP)
        layers = list(self.layers)
        i = 0
        while i < len(layers):
            layer = layers[i]
            if isinstance(layer, nn.Upsample) and i + 1 < len(layers):
                h = upsample_conv(h, layers[i + 1].weight)  # nearest x2 + 3x3 conv, fused
                i += 2
                continue
            h = layer(h)
            i += 1
        return h


def upsample_conv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``conv3x3(nearest_upsample_x2(x))`` (padding 1, no bias) in a quarter of the work.

    Each output parity (a, b) of the upsampled grid sees a 2x2 neighbourhood
    of ``x`` whose taps are sums of the 3x3 kernel's taps, so the four phases
    are one 2x2 conv over ``x`` padded by 1 (4 x C_out channels), interleaved
    back. Equal to the plain computation up to float rounding.
    """
    b, _, h, w = x.shape
    c_out = weight.shape[0]
    # rows: phase 0 takes offsets (-1, 0) <- (k0, k1 + k2); phase 1 takes (0, +1) <- (k0 + k1, k2)
    rows = (torch.stack((weight[:, :, 0], weight[:, :, 1] + weight[:, :, 2]), 2),
            torch.stack((weight[:, :, 0] + weight[:, :, 1], weight[:, :, 2]), 2))  # (O, I, 2, 3)
    phases = []
    for a in (0, 1):
        r = rows[a]
        cols = (torch.stack((r[..., 0], r[..., 1] + r[..., 2]), -1),
                torch.stack((r[..., 0] + r[..., 1], r[..., 2]), -1))  # (O, I, 2, 2)
        phases.extend(cols)
    kernel = torch.cat(phases, 0)  # (4*O, I, 2, 2): phases (0,0), (0,1), (1,0), (1,1)
    y4 = F.conv2d(F.pad(x, (1, 1, 1, 1)), kernel.to(x.dtype))  # (B, 4*O, h+1, w+1)
    out = x.new_empty((b, c_out, 2 * h, 2 * w))
    if x.is_contiguous(memory_format=torch.channels_last):
        out = out.contiguous(memory_format=torch.channels_last)
    for k, (a, c) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        out[:, :, a::2, c::2] = y4[:, k * c_out:(k + 1) * c_out, a:a + h, c:c + w]
    return out
