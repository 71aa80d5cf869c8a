"""EXIF orientation and the metadata carried from an input photo to its output.

Implements what cameras and phones need: the EXIF Orientation tag (274)
applied to the pixels the way ``PIL.ImageOps.exif_transpose`` does, and the
EXIF block written back with Orientation reset to 1 (the pixels are upright
now) and the pixel-dimension tags set to the written size. Works on numpy
arrays so 8-bit and 16-bit images take the same path.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from PIL import Image

ORIENTATION_TAG = 0x0112
EXIF_IFD_TAG = 0x8769
PIXEL_X_DIMENSION_TAG = 0xA002
PIXEL_Y_DIMENSION_TAG = 0xA003
UPRIGHT = 1
EXIF_HEADER = b"Exif\x00\x00"


def _flip_lr(a: np.ndarray) -> np.ndarray:
    return a[:, ::-1]


def _flip_tb(a: np.ndarray) -> np.ndarray:
    return a[::-1]


def _rot180(a: np.ndarray) -> np.ndarray:
    return a[::-1, ::-1]


def _transpose(a: np.ndarray) -> np.ndarray:
    return np.swapaxes(a, 0, 1)


def _rot_cw(a: np.ndarray) -> np.ndarray:  # Pillow's ROTATE_270
    return np.rot90(a, -1)


def _transverse(a: np.ndarray) -> np.ndarray:
    return np.swapaxes(a[::-1, ::-1], 0, 1)


def _rot_ccw(a: np.ndarray) -> np.ndarray:  # Pillow's ROTATE_90
    return np.rot90(a, 1)


# EXIF Orientation value -> the operation that makes the stored pixels upright
# (the same table as PIL.ImageOps.exif_transpose).
_UPRIGHT_OPS: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: _flip_lr,
    3: _rot180,
    4: _flip_tb,
    5: _transpose,
    6: _rot_cw,
    7: _transverse,
    8: _rot_ccw,
}


def read_orientation(im: Image.Image) -> int:
    """The EXIF Orientation of an opened image (1 when absent or invalid)."""
    value = im.getexif().get(ORIENTATION_TAG, UPRIGHT)
    return value if isinstance(value, int) and value in _UPRIGHT_OPS else UPRIGHT


def apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Rotate/flip an HxW or HxWxC array so it shows upright; returns a contiguous copy."""
    op = _UPRIGHT_OPS.get(orientation)
    return np.ascontiguousarray(pixels if op is None else op(pixels))


def exif_for_output(im: Image.Image) -> bytes | None:
    """The input's EXIF block with Orientation reset to 1, or None if it has none.

    Only a real EXIF block is carried (JPEG APP1, PNG eXIf, WebP/AVIF EXIF);
    a TIFF's own directory is image structure, not EXIF, and is not copied.
    Pillow drops the embedded thumbnail (IFD1), which would be stale anyway.
    """
    if not im.info.get("exif"):
        return None
    exif = im.getexif()
    if not exif:  # present but empty or unreadable: nothing worth carrying
        return None
    if ORIENTATION_TAG in exif:
        exif[ORIENTATION_TAG] = UPRIGHT
    return exif.tobytes()


def exif_with_size(exif: bytes, size: tuple[int, int]) -> bytes:
    """EXIF bytes with PixelXDimension/PixelYDimension set to ``size`` if the block has them."""
    parsed = Image.Exif()
    parsed.load(exif)
    sub = parsed.get_ifd(EXIF_IFD_TAG)
    if PIXEL_X_DIMENSION_TAG in sub or PIXEL_Y_DIMENSION_TAG in sub:
        sub[PIXEL_X_DIMENSION_TAG], sub[PIXEL_Y_DIMENSION_TAG] = size
    if ORIENTATION_TAG in parsed:
        parsed[ORIENTATION_TAG] = UPRIGHT
    return parsed.tobytes()


def exif_tiff_payload(exif: bytes) -> bytes:
    """The TIFF-structured part of an EXIF block (PNG's eXIf chunk has no 'Exif' header)."""
    return exif[len(EXIF_HEADER):] if exif.startswith(EXIF_HEADER) else exif
