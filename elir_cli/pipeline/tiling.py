"""Whole-photo restoration in overlapping, feathered tiles.

Used for ``bsr`` and for any task run on a whole photo. The photo is cut into
tiles of ``tile`` model pixels (``tile / model_scale`` photo pixels) that
overlap by ``overlap`` model pixels; each tile is read from the photo
(reflect-padded where the photo is smaller than a tile), upsampled by the
model's scale (bicubic, as ELIR's bsr was trained; none at scale 1), restored
in batches, resized to the requested output scale if that differs, and added
to the output under a feathered weight.

Weights are separable, ``w(x, y) = a(x) b(y)``, with 1D ramps across each
overlap normalised so that they sum to exactly one at every output pixel: an
identity restorer reproduces the photo, and a restorer whose tiles disagree
leaves no seam, only a smooth transition. Memory is the output plus one batch
of tiles, whatever the photo's size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

if TYPE_CHECKING:
    import torch

TileRestorer = Callable[["torch.Tensor"], "torch.Tensor"]
DEFAULT_TILE = 512  # model pixels
DEFAULT_OVERLAP = 64  # model pixels
SIZE_MULTIPLE = 32  # tiles smaller than DEFAULT_TILE are padded to this
# Weight floor so that every pixel has a positive weight before normalising.
MIN_WEIGHT = 1e-3
UPSAMPLE_MODES = ("bicubic", "nearest-exact")


@dataclass(frozen=True)
class TileGrid:
    """Tile origins along one axis, in photo pixels, and the tile length."""

    starts: tuple[int, ...]
    length: int


def tile_starts(extent: int, length: int, overlap: int) -> tuple[int, ...]:
    """Evenly spread tile origins covering [0, extent) with at least ``overlap`` overlap."""
    if extent <= length:
        return (0,)
    stride = max(1, length - overlap)
    n = math.ceil((extent - length) / stride) + 1
    return tuple(round(i * (extent - length) / (n - 1)) for i in range(n))


def axis_weights(starts: tuple[int, ...], length: int, extent: int, ramp: float) -> list[np.ndarray]:
    """Per-tile 1D weights (length ``length`` each) that sum to 1 over [0, extent)."""
    raw = []
    for s in starts:
        pos = np.arange(length, dtype=np.float64)
        up = (pos + 0.5) / ramp if s > 0 else np.full(length, np.inf)
        down = (length - pos - 0.5) / ramp if s + length < extent else np.full(length, np.inf)
        raw.append(np.clip(np.minimum(up, down), MIN_WEIGHT, 1.0))
    total = np.zeros(max(extent, max(starts) + length))
    for s, w in zip(starts, raw):
        total[s:s + length] += w
    return [(w / total[s:s + length]).astype(np.float32) for s, w in zip(starts, raw)]


def restore_tiled(
    rgb: np.ndarray,
    restorer: TileRestorer,
    *,
    model_scale: int = 1,
    out_scale: int | None = None,
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    batch_size: int = 4,
    device: "str | torch.device" = "cpu",
    upsample: str = "bicubic",
) -> np.ndarray:
    """Restore a whole float32 HxWx3 photo in [0,1]; returns (H*s)x(W*s)x3, s = out_scale.

    ``restorer`` maps a (B,3,h,w) float tensor in [0,1] to the same shape;
    it sees the tile after upsampling by ``model_scale`` with ``upsample``
    ("bicubic" for bsr, "nearest-exact" for sr, as they were trained).
    """
    import torch

    out_scale = model_scale if out_scale is None else out_scale
    for name, value in (("model_scale", model_scale), ("out_scale", out_scale), ("batch_size", batch_size)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if tile % model_scale or tile < SIZE_MULTIPLE:
        raise ValueError(f"tile must be >= {SIZE_MULTIPLE} and a multiple of the model scale, got {tile}")
    if upsample not in UPSAMPLE_MODES:
        raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
    if not 0 <= overlap < tile // 2:
        raise ValueError(f"overlap must be in [0, tile/2), got {overlap}")
    height, width = rgb.shape[:2]
    grid_y = _grid(height, tile, overlap, model_scale)
    grid_x = _grid(width, tile, overlap, model_scale)
    ramp = max(1.0, overlap / model_scale * out_scale)  # a linear cross-fade over the overlap
    wy = axis_weights(tuple(s * out_scale for s in grid_y.starts), grid_y.length * out_scale,
                      height * out_scale, ramp)
    wx = axis_weights(tuple(s * out_scale for s in grid_x.starts), grid_x.length * out_scale,
                      width * out_scale, ramp)
    out = np.zeros((height * out_scale, width * out_scale, 3), np.float32)
    positions = [(iy, ix) for iy in range(len(grid_y.starts)) for ix in range(len(grid_x.starts))]
    for batch in _batches(positions, batch_size):
        tiles = np.stack([_read_tile(rgb, grid_y.starts[iy], grid_x.starts[ix], grid_y.length, grid_x.length)
                          for iy, ix in batch])  # (B, th, tw, 3)
        x = torch.from_numpy(tiles).permute(0, 3, 1, 2).to(device)  # (B,3,th,tw)
        if model_scale > 1:
            x = _upsample(x, model_scale, upsample)
        with torch.inference_mode():
            y = restorer(x)
        if tuple(y.shape) != tuple(x.shape):
            raise ValueError(f"the restorer returned shape {tuple(y.shape)} for tiles {tuple(x.shape)}")
        if out_scale != model_scale:
            y = torch.nn.functional.interpolate(y.float(), size=(grid_y.length * out_scale,
                                                                 grid_x.length * out_scale),
                                                mode="bicubic", align_corners=False, antialias=True)
        restored = y.float().clamp(0.0, 1.0).permute(0, 2, 3, 1).cpu().numpy()  # (B, th*s, tw*s, 3)
        for (iy, ix), piece in zip(batch, restored):
            oy, ox = grid_y.starts[iy] * out_scale, grid_x.starts[ix] * out_scale
            h = min(piece.shape[0], out.shape[0] - oy)
            w = min(piece.shape[1], out.shape[1] - ox)
            weight = wy[iy][:h, None, None] * wx[ix][None, :w, None]
            out[oy:oy + h, ox:ox + w] += piece[:h, :w] * weight
    return np.clip(out, 0.0, 1.0, out=out)


def _grid(extent: int, tile: int, overlap: int, model_scale: int) -> TileGrid:
    """Tile length (photo px) and origins along one axis."""
    length = tile // model_scale
    if extent < length:
        # One tile, padded up to the size multiple in model pixels.
        multiple = SIZE_MULTIPLE * model_scale // math.gcd(SIZE_MULTIPLE, model_scale)
        length = math.ceil(extent * model_scale / multiple) * multiple // model_scale
        return TileGrid(starts=(0,), length=length)
    return TileGrid(starts=tile_starts(extent, length, overlap // model_scale), length=length)


def _upsample(x: "torch.Tensor", factor: int, mode: str) -> "torch.Tensor":
    import torch.nn.functional as F

    if mode == "nearest-exact":
        return F.interpolate(x, scale_factor=factor, mode="nearest-exact")
    return F.interpolate(x, scale_factor=factor, mode="bicubic", align_corners=False).clamp_(0.0, 1.0)


def _read_tile(rgb: np.ndarray, y: int, x: int, th: int, tw: int) -> np.ndarray:
    """A th x tw tile at (y, x), reflect-padded where it runs past the photo."""
    piece = rgb[y:y + th, x:x + tw]
    pad_h, pad_w = th - piece.shape[0], tw - piece.shape[1]
    if pad_h or pad_w:
        piece = np.pad(piece, ((0, pad_h), (0, pad_w), (0, 0)), mode="symmetric")
    return np.ascontiguousarray(piece, dtype=np.float32)


def _batches(items: list[tuple[int, int]], size: int) -> Iterator[list[tuple[int, int]]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
