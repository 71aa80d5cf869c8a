"""The whole-photo tiler: exact identity, no seams, exact output sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from elir_cli.pipeline.tiling import restore_tiled


@pytest.mark.parametrize("shape", [(300, 451), (50, 70), (257, 256), (129, 1)])
def test_identity_is_exact_at_scale_1(shape: tuple[int, int]) -> None:
    rgb8 = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    rgb = rgb8.astype(np.float32) / 255
    out = restore_tiled(rgb, lambda x: x, tile=128, overlap=32)
    assert out.shape == rgb.shape
    assert np.abs(out - rgb).max() < 1e-6
    assert np.array_equal((out * 255 + 0.5).astype(np.uint8), rgb8)


def test_tiles_that_disagree_leave_no_seam() -> None:
    """Each tile is shifted by its own offset (up to 0.2): the output changes smoothly."""
    rgb = np.full((300, 500, 3), 0.5, np.float32)
    gen = torch.Generator().manual_seed(0)
    seen = []

    def shifting(x: torch.Tensor) -> torch.Tensor:
        offsets = (torch.rand(x.shape[0], 1, 1, 1, generator=gen) - 0.5) * 0.4
        seen.append(x.shape[0])
        return x + offsets

    out = restore_tiled(rgb, shifting, tile=128, overlap=48, batch_size=3)
    steps = max(np.abs(np.diff(out, axis=0)).max(), np.abs(np.diff(out, axis=1)).max())
    assert steps <= 0.4 / 48 + 1e-4  # a linear cross-fade; a hard seam would step by up to 0.4
    assert max(seen) <= 3  # batches are bounded


@pytest.mark.parametrize("model_scale,out_scale", [(4, 4), (4, 2), (4, 1), (1, 3)])
def test_output_is_exactly_the_requested_scale(model_scale: int, out_scale: int) -> None:
    rgb = np.random.default_rng(1).random((45, 77, 3), dtype=np.float32)
    out = restore_tiled(rgb, lambda x: x, model_scale=model_scale, out_scale=out_scale, tile=128, overlap=32)
    assert out.shape == (45 * out_scale, 77 * out_scale, 3)


def test_tiled_upscale_matches_whole_image_upscale() -> None:
    yy, xx = np.mgrid[0:120, 0:200].astype(np.float32)
    rgb = np.stack([0.5 + 0.4 * np.sin(xx / 7), 0.5 + 0.4 * np.cos(yy / 9), 0.5 + 0.3 * np.sin((xx + yy) / 11)], -1)
    out = restore_tiled(rgb, lambda x: x, model_scale=4, tile=128, overlap=32)
    whole = torch.nn.functional.interpolate(torch.from_numpy(rgb).permute(2, 0, 1)[None], scale_factor=4,
                                            mode="bicubic", align_corners=False)[0].permute(1, 2, 0).numpy()
    inner = np.s_[8:-8, 8:-8]  # the photo's own border is padded differently
    assert np.abs(out[inner] - np.clip(whole, 0, 1)[inner]).max() < 2e-3


def test_wrong_restorer_shape_is_an_error() -> None:
    with pytest.raises(ValueError, match="restorer returned"):
        restore_tiled(np.zeros((40, 40, 3), np.float32), lambda x: x[:, :, :8], tile=64, overlap=16)
