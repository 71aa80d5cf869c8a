"""A plain, straightforward ELIR forward written directly from the format README.

Kept for two jobs: an independent check of the package's modules (tests), and
the eager baseline the performance benchmark compares the optimised path with.
It works on a released-format state dict with ``torch.nn.functional`` only:
NCHW, no in-place ops, no fusion, no allocator tuning.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

Sd = dict[str, torch.Tensor]


def _conv(sd: Sd, key: str, x: torch.Tensor, stride: int = 1) -> torch.Tensor:
    w = sd[key + ".weight"]
    pad = (w.shape[-1] - 1) // 2
    return F.conv2d(x, w, sd.get(key + ".bias"), stride=stride, padding=pad)


def _taesd_block(sd: Sd, key: str, x: torch.Tensor) -> torch.Tensor:
    h = F.relu(_conv(sd, key + ".conv.0", x))
    h = F.relu(_conv(sd, key + ".conv.2", h))
    h = _conv(sd, key + ".conv.4", h)
    return F.relu(h + x)


def encode(sd: Sd, x: torch.Tensor) -> torch.Tensor:
    h = _conv(sd, "enc.layers.0", x)
    for i in range(1, 14):
        key = f"enc.layers.{i}"
        h = _conv(sd, key, h, stride=2) if i in (2, 6, 10) else _taesd_block(sd, key, h)
    return _conv(sd, "enc.layers.14", h)


def decode(sd: Sd, z: torch.Tensor) -> torch.Tensor:
    h = 3 * torch.tanh(z / 3)
    h = F.relu(_conv(sd, "dec.layers.0", h))
    for i in range(2, 18):
        key = f"dec.layers.{i}"
        if i in (5, 10, 15):
            h = F.interpolate(h, scale_factor=2, mode="nearest")
        elif i in (6, 11, 16):
            h = _conv(sd, key, h)
        else:
            h = _taesd_block(sd, key, h)
    return _conv(sd, "dec.layers.18", h)


def coarse(sd: Sd, z: torch.Tensor) -> torch.Tensor:
    h = z
    r = 0
    while f"mmse.lrm.{r}.RDB1.conv1.block.0.weight" in sd:
        rrdb_in = h
        for j in (1, 2, 3):
            key = f"mmse.lrm.{r}.RDB{j}"
            feats = [h]
            for k in range(1, 5):
                feats.append(F.silu(_conv(sd, f"{key}.conv{k}.block.0", torch.cat(feats, 1))))
            h = 0.2 * _conv(sd, f"{key}.conv5.block.0", torch.cat(feats, 1)) + h
        h = 0.2 * h + rrdb_in
        r += 1
    return z + h


def _time_embedding(sd: Sd, t: float) -> torch.Tensor:
    dim = sd["fmir.time_mlp.linear1.weight"].shape[1]
    half = dim // 2
    f = torch.exp(-torch.arange(half, dtype=torch.float32) * math.log(10000) / (half - 1))
    a = 1000 * torch.tensor([t], dtype=torch.float32)[:, None] * f[None]
    emb = torch.cat((torch.cos(a), torch.sin(a)), dim=-1)
    emb = F.linear(emb, sd["fmir.time_mlp.linear1.weight"], sd["fmir.time_mlp.linear1.bias"])
    return F.linear(F.silu(emb), sd["fmir.time_mlp.linear2.weight"], sd["fmir.time_mlp.linear2.bias"])


def _conv_block(sd: Sd, key: str, x: torch.Tensor) -> torch.Tensor:
    h = F.group_norm(x, 32, sd[key + ".block.0.weight"], sd[key + ".block.0.bias"])
    return _conv(sd, key + ".block.2", F.silu(h))


def _res_block(sd: Sd, key: str, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    h = _conv_block(sd, key + ".block1", x)
    h = h + F.linear(F.silu(emb), sd[key + ".mlp.1.weight"], sd[key + ".mlp.1.bias"])[:, :, None, None]
    h = _conv_block(sd, key + ".block2", h)
    return h + _conv(sd, key + ".conv2d", x)


def velocity(sd: Sd, z: torch.Tensor, t: float) -> torch.Tensor:
    emb = _time_embedding(sd, t)
    h = _conv(sd, "fmir.first_proj", z)
    skips = []
    i = 0
    while f"fmir.down_blocks.{i}.0.conv2d.weight" in sd:
        h = _res_block(sd, f"fmir.down_blocks.{i}.0", h, emb)
        skips.append(h)
        if f"fmir.down_blocks.{i}.1.conv.weight" in sd:
            h = _conv(sd, f"fmir.down_blocks.{i}.1.conv", h, stride=2)
        i += 1
    j = 0
    while f"fmir.mid_blocks.{j}.conv2d.weight" in sd:
        h = _res_block(sd, f"fmir.mid_blocks.{j}", h, emb)
        j += 1
    for u in range(i):
        key = f"fmir.up_blocks.{u}"
        if key + ".0.convtr.weight" in sd:
            h = F.conv_transpose2d(h, sd[key + ".0.convtr.weight"], sd[key + ".0.convtr.bias"], stride=2, padding=1)
        h = _res_block(sd, key + ".1", torch.cat((h, skips.pop()), 1), emb)
    return _conv(sd, "fmir.final_proj", _conv_block(sd, "fmir.final_block", h))


def reference_forward(sd: Sd, x: torch.Tensor, noise: torch.Tensor, *, k_steps: int, sigma_s: float) -> torch.Tensor:
    """The authors' sampling loop on inputs whose H and W are multiples of 32."""
    z = coarse(sd, encode(sd, x)) + sigma_s * noise
    t = 0.0
    for _ in range(k_steps):
        z = z + (1.0 / k_steps) * velocity(sd, z, t)
        t += 1.0 / k_steps
    return decode(sd, z)
