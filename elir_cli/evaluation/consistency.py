"""Consistency: how well the restored image agrees with its own input (no ground truth needed).

Apply the task's known degradation, without its noise, to the restored image
and compare the result with the degraded input (PSNR, dB):

- ``sr``: the same PIL bicubic downscale by the task's factor (8), compared
  with the input's low-resolution pixels (the LQ file is a nearest-exact x8
  upsampling, so every 8x8 block holds one of them);
- ``inpainting``: the same mask, i.e. compared on the pixels the input kept
  (the missing ones say nothing about the image);
- ``denoising``: the identity.

A restorer that returns an exact pre-image of the input scores highest (up
to the input's noise and 8-bit rounding); one that invents content the input
contradicts scores lower. The blind tasks (bfr, bsr) have no known
degradation and get no consistency score.
"""

from __future__ import annotations

import numpy as np

from elir_cli.registry.tasks import get_task

from .images import resize_bicubic_float

PSNR_EPS = 1e-8  # as pyiqa: a perfect match gives 80 dB, not infinity


def psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    """PSNR (dB, peak 1) of float images in [0, 1]; ``where`` (HxW bool) limits it to those pixels."""
    diff = (np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2
    mse = float(diff[where].mean()) if where is not None else float(diff.mean())
    return float(10.0 * np.log10(1.0 / (mse + PSNR_EPS)))


def redegrade(task: str, restored: np.ndarray, lq_shape: tuple[int, ...]) -> np.ndarray:
    """The noise-free degradation of ``task`` applied to ``restored`` (float), at the LQ's geometry.

    For sr this returns the low-resolution image (H/8 x W/8), to be compared with the LQ's blocks.
    """
    height, width = lq_shape[:2]
    if restored.shape[:2] != (height, width):
        restored = resize_bicubic_float(restored, (width, height))
    if task == "sr":
        factor = get_task("sr").scale
        return resize_bicubic_float(restored, (width // factor, height // factor))
    return restored


def consistency(task: str, restored: np.ndarray, lq: np.ndarray, mask: np.ndarray | None = None) -> float | None:
    """PSNR between the re-degraded restoration and the input; None for blind tasks (bfr, bsr).

    ``mask`` (HxW bool, True where missing) is the inpainting mask; without
    it an inpainting input is compared everywhere.
    """
    if task not in ("sr", "denoising", "inpainting"):
        return None
    restored = np.clip(restored, 0.0, 1.0)
    again = redegrade(task, restored, lq.shape)
    if task == "sr":
        factor = get_task("sr").scale
        return psnr(again, lq[::factor, ::factor])
    if task == "inpainting" and mask is not None:
        return psnr(again, lq, where=~mask)
    return psnr(again, lq)
