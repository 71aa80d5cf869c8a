"""Tiny autoencoder of the SD3 VAE (TAESD3): 3 RGB channels <-> 16 latents, /8.

Implements the encoder and decoder described in ELIR (Cohen et al., BMVC 2025),
which reuses madebyollin's TAESD design. Attribute names equal the released
checkpoint keys (``enc.layers.N``, ``dec.layers.N``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .cpu_conv import conv2d_act

WIDTH = 64
LATENT_CLAMP = 3.0


def conv(n_in: int, n_out: int, *, bias: bool = True, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, stride=stride, padding=1, bias=bias)


class Block(nn.Module):
    """``ReLU(conv(x) + x)`` with three 3x3 convs and ReLUs between them."""

    def __init__(self, *, channels: int = WIDTH) -> None:
        super().__init__()
        # The ReLUs keep the checkpoint's numbering (conv.0, conv.2, conv.4);
        # forward fuses each into its conv (cpu_conv.conv2d_act).
        self.conv = nn.Sequential(
            conv(channels, channels), nn.ReLU(inplace=True),
            conv(channels, channels), nn.ReLU(inplace=True),
            conv(channels, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = conv2d_act(x, self.conv[0], "relu")
        h = conv2d_act(h, self.conv[2], "relu")
        return conv2d_act(h, self.conv[4], "relu", add=x)  # ReLU(conv(h) + x)


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
        for layer in self.layers:
            x = _apply(layer, x)
        return x


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
            following = layers[i + 1] if i + 1 < len(layers) else None
            if isinstance(layer, nn.Upsample) and following is not None:
                h = upsample_conv(h, following.weight)  # nearest x2 + 3x3 conv, fused
                i += 2
            elif isinstance(layer, nn.Conv2d) and isinstance(following, nn.ReLU):
                h = conv2d_act(h, layer, "relu")
                i += 2
            else:
                h = _apply(layer, h)
                i += 1
        return h


def _apply(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One layer; a conv goes through :func:`conv2d_act` (packed weights on the CPU)."""
    return conv2d_act(x, layer) if isinstance(layer, nn.Conv2d) else layer(x)


def upsample_conv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``conv3x3(nearest_upsample_x2(x))`` (padding 1, no bias) in 16/36 of the work.

    Output row ``2i`` sees input rows ``i-1`` (tap k0) and ``i`` (taps k1 + k2);
    row ``2i+1`` sees rows ``i`` (k0 + k1) and ``i+1`` (k2); columns alike. That
    is a transposed conv (kernel 4, stride 2, padding 1) whose 1-D kernel is
    ``[k2, k1 + k2, k0 + k1, k0]`` per axis: one op that writes the upsampled
    map directly, with no x4 intermediate and no interleaving copy. Equal to
    the plain computation up to float rounding.
    """
    kernel = _upsample_taps(_upsample_taps(weight, 2), 3)  # (O, I, 4, 4)
    kernel = kernel.transpose(0, 1).to(x.dtype)  # conv_transpose2d wants (I, O, kh, kw)
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        kernel = kernel.contiguous(memory_format=torch.channels_last)
    else:
        kernel = kernel.contiguous()
    return F.conv_transpose2d(x, kernel, stride=2, padding=1)


def _upsample_taps(weight: torch.Tensor, dim: int) -> torch.Tensor:
    """A 3-tap axis ``(k0, k1, k2)`` of ``weight`` -> the 4 taps ``(k2, k1+k2, k0+k1, k0)``."""
    k0, k1, k2 = weight.unbind(dim)
    return torch.stack((k2, k1 + k2, k0 + k1, k0), dim)
