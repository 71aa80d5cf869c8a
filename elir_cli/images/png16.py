"""A 16-bit PNG encoder with ICC, EXIF and resolution chunks.

Neither Pillow (no 16-bit RGB/RGBA or grey+alpha modes) nor OpenCV (no ICC or
EXIF before 4.12, no grey+alpha) writes every 16-bit PNG we need, so this
module writes them directly from the PNG specification (ISO/IEC 15948):
colour types 0 (grey), 4 (grey+alpha), 2 (RGB) and 6 (RGBA) at bit depth 16,
Paeth-filtered, zlib-compressed, with iCCP, eXIf and pHYs chunks.
"""

from __future__ import annotations

import struct
import zlib
from typing import Iterator

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BIT_DEPTH = 16
BYTES_PER_SAMPLE = 2
COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type
PAETH_FILTER = 4
ZLIB_LEVEL = 6
ROWS_PER_BLOCK = 256  # rows filtered at once: bounds memory on huge images
IDAT_CHUNK_BYTES = 1 << 23  # split compressed data: a chunk holds at most 2**31 - 1 bytes
METRES_PER_INCH = 0.0254
PHYS_UNIT_METRE = 1
ICC_PROFILE_NAME = b"ICC profile"


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _paeth_rows(raw: np.ndarray, previous: np.ndarray, bpp: int) -> np.ndarray:
    """Paeth-filter rows of bytes (R x N uint8); ``previous`` is the row above the first."""
    up = np.vstack([previous[None, :], raw[:-1]]).astype(np.int16)  # b
    cur = raw.astype(np.int16)
    left = np.zeros_like(cur)  # a
    left[:, bpp:] = cur[:, :-bpp]
    up_left = np.zeros_like(cur)  # c
    up_left[:, bpp:] = up[:, :-bpp]
    pa = np.abs(up - up_left)
    pb = np.abs(left - up_left)
    pc = np.abs(left + up - 2 * up_left)
    predictor = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, up_left))
    filtered = ((cur - predictor) & 0xFF).astype(np.uint8)
    marker = np.full((raw.shape[0], 1), PAETH_FILTER, dtype=np.uint8)
    return np.hstack([marker, filtered])


def _idat_stream(pixels: np.ndarray) -> Iterator[bytes]:
    height, width, channels = pixels.shape
    row_bytes = width * channels * BYTES_PER_SAMPLE
    raw = np.ascontiguousarray(pixels, dtype=">u2").view(np.uint8).reshape(height, row_bytes)
    compressor = zlib.compressobj(ZLIB_LEVEL)
    previous = np.zeros(row_bytes, dtype=np.uint8)
    for start in range(0, height, ROWS_PER_BLOCK):
        block = raw[start : start + ROWS_PER_BLOCK]
        yield compressor.compress(_paeth_rows(block, previous, channels * BYTES_PER_SAMPLE).tobytes())
        previous = block[-1]
    yield compressor.flush()


def encode_png16(
    pixels: np.ndarray,
    *,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
    dpi: tuple[float, float] | None = None,
) -> bytes:
    """Encode an HxWxC uint16 array (C = 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA) as a 16-bit PNG.

    ``exif`` is the TIFF-structured EXIF payload (no ``Exif\\0\\0`` header).
    """
    if pixels.dtype != np.uint16 or pixels.ndim != 3 or pixels.shape[2] not in COLOUR_TYPES:
        raise ValueError(f"pixels must be HxWxC uint16 with C in 1..4, got {pixels.dtype} {pixels.shape}")
    height, width, channels = pixels.shape
    parts = [
        PNG_SIGNATURE,
        _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, BIT_DEPTH, COLOUR_TYPES[channels], 0, 0, 0)),
    ]
    if icc_profile:
        parts.append(_chunk(b"iCCP", ICC_PROFILE_NAME + b"\x00\x00" + zlib.compress(icc_profile, ZLIB_LEVEL)))
    if dpi:
        x, y = (max(1, round(d / METRES_PER_INCH)) for d in dpi)
        parts.append(_chunk(b"pHYs", struct.pack(">IIB", x, y, PHYS_UNIT_METRE)))
    if exif:
        parts.append(_chunk(b"eXIf", exif))
    data = b"".join(_idat_stream(pixels))
    parts.extend(_chunk(b"IDAT", data[i : i + IDAT_CHUNK_BYTES]) for i in range(0, len(data), IDAT_CHUNK_BYTES))
    parts.append(_chunk(b"IEND", b""))
    return b"".join(parts)
