"""The coarse (MMSE) estimator: three RRDBs in latent space (ESRGAN's RRDB).

ELIR first moves the degraded latent towards its MMSE estimate; the flow then
starts from that point plus a little noise. Keys:
``mmse.lrm.R.RDBj.convk.block.0.{weight,bias}``.
"""

from __future__ import annotations

import torch
from torch import nn

from .cpu_conv import conv2d_act

RESIDUAL_SCALE = 0.2


class ConvAct(nn.Module):
    """A 3x3 conv, optionally followed by SiLU (``block.0`` is the conv)."""

    def __init__(self, n_in: int, n_out: int, *, act: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(n_in, n_out, 3, padding=1)]
        if act:
            layers.append(nn.SiLU())
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv2d_act(x, self.block[0], "silu" if len(self.block) > 1 else "none")


class ResidualDenseBlock(nn.Module):
    """Five densely connected convs; returns ``0.2 * x5 + x``."""

    def __init__(self, *, channels: int, growth: int) -> None:
        super().__init__()
        self.conv1 = ConvAct(channels, growth, act=True)
        self.conv2 = ConvAct(channels + growth, growth, act=True)
        self.conv3 = ConvAct(channels + 2 * growth, growth, act=True)
        self.conv4 = ConvAct(channels + 3 * growth, growth, act=True)
        self.conv5 = ConvAct(channels + 4 * growth, channels, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.conv1(x)
        x2 = self.conv2(torch.cat((x, x1), 1))  # (B, C+G, h, w)
        x3 = self.conv3(torch.cat((x, x1, x2), 1))  # (B, C+2G, h, w)
        x4 = self.conv4(torch.cat((x, x1, x2, x3), 1))  # (B, C+3G, h, w)
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))  # (B, C+4G, h, w) -> (B, C, h, w)
        return x5.mul_(RESIDUAL_SCALE).add_(x)


class RRDB(nn.Module):
    """Residual-in-residual dense block: ``0.2 * RDB3(RDB2(RDB1(x))) + x``."""

    def __init__(self, *, channels: int, growth: int) -> None:
        super().__init__()
        self.RDB1 = ResidualDenseBlock(channels=channels, growth=growth)
        self.RDB2 = ResidualDenseBlock(channels=channels, growth=growth)
        self.RDB3 = ResidualDenseBlock(channels=channels, growth=growth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return RESIDUAL_SCALE * self.RDB3(self.RDB2(self.RDB1(x))) + x


class CoarseEstimator(nn.Module):
    """``x + lrm(x)``: a global residual over ``n_rrdb`` RRDBs."""

    def __init__(self, *, channels: int = 16, growth: int = 96, n_rrdb: int = 3) -> None:
        super().__init__()
        for name, value in (("channels", channels), ("growth", growth), ("n_rrdb", n_rrdb)):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        self.lrm = nn.Sequential(*(RRDB(channels=channels, growth=growth) for _ in range(n_rrdb)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.lrm(z)
