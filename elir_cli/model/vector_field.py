"""The flow's vector field: a convolutional U-Net on the latent (``fmir``).

``v = fmir(z, t)`` predicts the velocity that moves the coarse latent towards
the clean one (latent consistency flow matching, ELIR, Cohen et al. 2025).
Attribute names equal the released checkpoint keys.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .cpu_conv import conv2d_act

GROUPS = 32
TIME_SCALE = 1000.0
MAX_PERIOD = 10000.0
TIME_HIDDEN_MULT = 4


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of scalar times ``t`` (shape (N,)) -> (N, dim), cosine first."""
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    half = dim // 2
    freqs = torch.exp(
        -math.log(MAX_PERIOD) * torch.arange(half, dtype=torch.float32, device=t.device) / (half - 1)
    )
    args = TIME_SCALE * t.float()[:, None] * freqs[None]  # (N, half)
    return torch.cat((torch.cos(args), torch.sin(args)), dim=-1)  # (N, dim)


class TimeMLP(nn.Module):
    def __init__(self, *, dim: int, hidden: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden)
        self.act = nn.SiLU()
        self.linear2 = nn.Linear(hidden, hidden)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.act(self.linear1(emb)))


class ConvBlock(nn.Module):
    """GroupNorm(32) -> SiLU -> 3x3 conv (``block.0``, ``block.2``)."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.GroupNorm(GROUPS, n_in), nn.SiLU(), nn.Conv2d(n_in, n_out, 3, padding=1))

    def forward(self, x: torch.Tensor, add: torch.Tensor | None = None,
                shift: torch.Tensor | None = None) -> torch.Tensor:
        """``conv(silu(norm(x))) (+ shift per channel) (+ add)``; both fused into the conv where possible."""
        h = F.silu(self.block[0](x), inplace=not torch.is_grad_enabled())  # on the fresh norm output
        return conv2d_act(h, self.block[2], add=add, shift=shift)


class ResidualBlock(nn.Module):
    """``block2(block1(x) + mlp(emb)) + conv2d(x)``; ``conv2d`` is 1x1 even when in == out."""

    def __init__(self, n_in: int, n_out: int, *, emb_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, n_out))
        self.block1 = ConvBlock(n_in, n_out)
        self.block2 = ConvBlock(n_out, n_out)
        self.conv2d = nn.Conv2d(n_in, n_out, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.block1(x, shift=self.mlp(emb))  # + mlp(emb), (B|1, out) broadcast over H, W
        return self.block2(h, add=conv2d_act(x, self.conv2d))


class Downsample(nn.Module):
    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(n_in, n_out, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv2d_act(x, self.conv)


class Upsample(nn.Module):
    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.convtr = nn.ConvTranspose2d(n_in, n_out, 4, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convtr(x)


class VectorField(nn.Module):
    """U-Net ``fmir(z, t)`` over latents of ``latent_channels`` channels, /4 inside."""

    def __init__(
        self,
        *,
        latent_channels: int = 16,
        hid_channels: int = 128,
        n_mid_blocks: int = 1,
        ch_mult: tuple[int, ...] = (1, 2, 1, 2),
        t_emb_dim: int = 160,
    ) -> None:
        super().__init__()
        if hid_channels <= 0 or hid_channels % GROUPS:
            raise ValueError(f"hid_channels must be a positive multiple of {GROUPS}, got {hid_channels}")
        if n_mid_blocks <= 0:
            raise ValueError(f"n_mid_blocks must be positive, got {n_mid_blocks}")
        if t_emb_dim <= 2 or t_emb_dim % 2:
            raise ValueError(f"t_emb_dim must be an even number > 2, got {t_emb_dim}")
        emb_dim = TIME_HIDDEN_MULT * t_emb_dim
        self.t_emb_dim = t_emb_dim
        self.time_mlp = TimeMLP(dim=t_emb_dim, hidden=emb_dim)

        ch = hid_channels
        self.down_blocks = nn.ModuleList()
        for m in ch_mult:
            down = Downsample(ch, m * ch) if m != 1 else nn.Identity()
            self.down_blocks.append(nn.ModuleList([ResidualBlock(ch, ch, emb_dim=emb_dim), down]))
            ch *= m
        self.mid_blocks = nn.ModuleList(ResidualBlock(ch, ch, emb_dim=emb_dim) for _ in range(n_mid_blocks))
        self.up_blocks = nn.ModuleList()
        for m in reversed(ch_mult):
            up = Upsample(ch, ch // m) if m != 1 else nn.Identity()
            ch //= m
            self.up_blocks.append(nn.ModuleList([up, ResidualBlock(2 * ch, ch, emb_dim=emb_dim)]))
        # Registered after the U-Net so the state dict's order is the released file's.
        self.first_proj = nn.Conv2d(latent_channels, hid_channels, 1)
        self.final_block = ConvBlock(ch, ch)
        self.final_proj = nn.Conv2d(ch, latent_channels, 1)

    def embed_time(self, t: torch.Tensor) -> torch.Tensor:
        """(N,) times -> (N, 4 * t_emb_dim) conditioning vectors."""
        emb = timestep_embedding(t, self.t_emb_dim)  # computed in float32
        return self.time_mlp(emb.to(self.time_mlp.linear1.weight.dtype))

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Velocity at ``z`` (B,C,h,w) and time ``t`` (a scalar or (B,) tensor)."""
        t = torch.as_tensor(t, dtype=torch.float32, device=z.device).reshape(-1)
        emb = self.embed_time(t).to(z.dtype)  # (1|B, emb_dim)
        x = conv2d_act(z, self.first_proj)
        skips = []
        for res, down in self.down_blocks:
            x = res(x, emb)
            skips.append(x)
            x = down(x)
        for res in self.mid_blocks:
            x = res(x, emb)
        for up, res in self.up_blocks:
            x = up(x)
            x = torch.cat((x, skips.pop()), dim=1)  # (B, 2ch, h', w'), x first
            x = res(x, emb)
        return conv2d_act(self.final_block(x), self.final_proj)
