"""Resizing float images as PIL's bicubic does (the paper's data code resizes with PIL)."""

from __future__ import annotations

import numpy as np


def resize_bicubic_float(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """PIL bicubic resize of float RGB (each channel as a 32-bit float image, no 8-bit rounding)."""
    from PIL import Image

    if (rgb.shape[1], rgb.shape[0]) == tuple(size):
        return rgb.astype(np.float32)
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(rgb[:, :, c], dtype=np.float32))
                           .resize(size, Image.Resampling.BICUBIC)) for c in range(3)]
    return np.stack(channels, axis=2).astype(np.float32)
