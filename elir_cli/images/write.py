"""Writing a :class:`~elir_cli.images.read.DecodedImage` back: format choice, encoding, atomic files.

Implements the output side of image I/O (issue 5): grey stays grey, alpha is
written where the format holds it, 16-bit stays 16-bit (PNG, TIFF), the ICC
profile and EXIF (Orientation 1) are carried, JPEG/WebP quality is explicit,
and files are written atomically without replacing their input.

The ``auto`` format rule: keep the input's format when we can write it and
it holds all the data, otherwise PNG (lossless; holds grey, alpha, 16 bits,
ICC and EXIF). JPEG (and MPO) stay JPEG unless there is alpha or 16-bit
data; WebP stays WebP unless the image is grey or 16-bit; TIFF stays TIFF
unless it is 16-bit with alpha, or 16-bit colour with ICC/EXIF (OpenCV writes
those TIFFs without metadata); GIF, BMP, AVIF, PPM and JPEG 2000 become PNG.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from . import metadata
from elir_cli.atomicwrite import check_destination, write_bytes_atomic
from elir_cli.errors import UsageError
from .read import DecodedImage, luma, to_uint8, to_uint16
from .png16 import encode_png16

WRITE_FORMATS = ("png", "jpg", "webp", "tiff")
FORMAT_SUFFIXES = {"png": ".png", "jpg": ".jpg", "webp": ".webp", "tiff": ".tif"}
SUFFIX_FORMATS = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg", ".webp": "webp", ".tif": "tiff", ".tiff": "tiff"}
PILLOW_FORMATS = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP", "tiff": "TIFF"}
DEFAULT_QUALITY = 95
MIN_QUALITY, MAX_QUALITY = 1, 100
JPEG_FULL_CHROMA_QUALITY = 90  # from this quality up, JPEG keeps full-resolution colour (4:4:4)
JPEG_SUBSAMPLING_444, JPEG_SUBSAMPLING_420 = 0, 2
TIFF_COMPRESSION = "tiff_adobe_deflate"  # lossless, read everywhere
# Pillow's libtiff encoder (needed for compression) cannot write the EXIF
# sub-IFD, so a TIFF that carries EXIF is written uncompressed by Pillow's own writer.
TIFF_COMPRESSION_WITH_EXIF = None
JPEG_BACKGROUND = 1.0  # JPEG has no alpha: transparent areas are composited on white


def choose_format(image: DecodedImage, ext: str = "auto") -> str:
    """The output format ("png", "jpg", "webp", "tiff") for ``ext`` (see the module's auto rule)."""
    if ext != "auto":
        return _checked_ext(ext)
    source = image.format.upper()
    has_alpha = image.alpha is not None
    deep = image.bit_depth == 16
    if source in ("JPEG", "MPO") and not has_alpha and not deep:
        return "jpg"
    if source == "WEBP" and not image.grayscale and not deep:
        return "webp"
    if source == "TIFF" and not _tiff_loses(image):
        return "tiff"
    return "png"


def format_losses(image: DecodedImage, fmt: str) -> list[str]:
    """What writing ``image`` as ``fmt`` cannot keep (empty if nothing): for warnings in the CLI."""
    fmt = _checked_ext(fmt)
    losses = []
    if image.bit_depth == 16 and fmt in ("jpg", "webp"):
        losses.append(f"{fmt.upper()} holds 8 bits: 16-bit data reduced to 8 bits")
    if image.alpha is not None and fmt == "jpg":
        losses.append("JPEG has no alpha: transparent areas composited on white")
    if image.grayscale and fmt == "webp":
        losses.append("WebP has no grey mode: written as RGB")
    if fmt == "tiff":
        losses.extend(_tiff_losses(image))
    return losses


def output_suffix(fmt: str) -> str:
    """The file-name suffix for an output format (".png", ".jpg", ".webp", ".tif")."""
    return FORMAT_SUFFIXES[_checked_ext(fmt)]


def encode_image(image: DecodedImage, ext: str = "auto", *, quality: int = DEFAULT_QUALITY) -> bytes:
    """Encode ``image`` as ``ext`` ("auto", "png", "jpg", "webp", "tiff") and return the bytes (for stdout)."""
    fmt = choose_format(image, ext)
    _check_quality(quality)
    exif = None if image.exif is None else metadata.exif_with_size(image.exif, image.size)
    if image.bit_depth == 16 and fmt == "png":
        return encode_png16(
            _samples16(image),
            icc_profile=image.icc_profile,
            exif=None if exif is None else metadata.exif_tiff_payload(exif),
            dpi=image.dpi,
        )
    if image.bit_depth == 16 and fmt == "tiff":
        return _encode_tiff16(image, exif)
    return _encode_pillow8(image, fmt, quality, exif)


def write_image(
    image: DecodedImage,
    path: str | os.PathLike[str],
    *,
    ext: str = "auto",
    quality: int = DEFAULT_QUALITY,
    overwrite: bool = False,
    source_path: str | os.PathLike[str] | None = None,
) -> Path:
    """Write ``image`` to ``path`` atomically and return the path.

    The format is ``ext``; with ``ext="auto"`` it is the one the path's
    suffix names (.png, .jpg/.jpeg, .webp, .tif/.tiff), else the auto rule.
    An explicit ``ext`` that contradicts the suffix is a :class:`UsageError`.
    Refuses to replace ``source_path`` (even with ``overwrite``) and existing
    files unless ``overwrite``; missing parent folders are created.
    """
    target = check_destination(path, overwrite=overwrite, source_path=source_path)
    named = SUFFIX_FORMATS.get(target.suffix.lower())
    if ext == "auto":
        fmt = named or choose_format(image)
    else:
        fmt = _checked_ext(ext)
        if named is not None and named != fmt:
            raise UsageError(
                f"output name {target.name} does not match the format {fmt}",
                hint=f"use the suffix {output_suffix(fmt)} or leave the format on auto",
            )
    data = encode_image(image, fmt, quality=quality)
    return write_bytes_atomic(target, data, overwrite=overwrite, source_path=source_path)


# --------------------------------------------------------------------------- internals


def _checked_ext(ext: str) -> str:
    fmt = {"jpeg": "jpg", "tif": "tiff"}.get(ext.lower(), ext.lower())
    if fmt not in WRITE_FORMATS:
        raise UsageError(f"unknown output format {ext!r}", hint=f"choose one of: auto, {', '.join(WRITE_FORMATS)}")
    return fmt


def _check_quality(quality: int) -> None:
    if not MIN_QUALITY <= quality <= MAX_QUALITY:
        raise UsageError(f"quality must be {MIN_QUALITY}..{MAX_QUALITY}, got {quality}", hint="e.g. --quality 95")


def _tiff_losses(image: DecodedImage) -> list[str]:
    if image.bit_depth != 16:
        return []
    losses = []
    if image.grayscale and image.alpha is not None:
        losses.append("16-bit grey with alpha written as 16-bit RGBA TIFF")
    if (not image.grayscale or image.alpha is not None) and (image.icc_profile or image.exif):
        losses.append("16-bit colour TIFF written without ICC profile and EXIF")
    return losses


def _tiff_loses(image: DecodedImage) -> bool:
    return bool(_tiff_losses(image))


def _samples16(image: DecodedImage) -> np.ndarray:
    """HxWxC uint16: grey, grey+alpha, RGB or RGBA as the image needs."""
    planes = [luma(image.rgb)[:, :, None]] if image.grayscale else [image.rgb]
    if image.alpha is not None:
        planes.append(image.alpha[:, :, None])
    return to_uint16(np.concatenate(planes, axis=2))


def _encode_tiff16(image: DecodedImage, exif: bytes | None) -> bytes:
    if image.grayscale and image.alpha is None:
        grey = Image.fromarray(to_uint16(luma(image.rgb)))  # uint16 HxW -> "I;16"
        return _pillow_save(grey, "tiff", _common_options(image, exif) | _tiff_options(exif))
    import cv2

    rgb = to_uint16(image.rgb)
    planes = [rgb[:, :, ::-1]] + ([to_uint16(image.alpha)[:, :, None]] if image.alpha is not None else [])
    ok, buffer = cv2.imencode(".tiff", np.ascontiguousarray(np.concatenate(planes, axis=2)))
    if not ok:
        raise RuntimeError("OpenCV failed to encode a 16-bit TIFF")
    return buffer.tobytes()


def _tiff_options(exif: bytes | None) -> dict[str, object]:
    return {"compression": TIFF_COMPRESSION if exif is None else TIFF_COMPRESSION_WITH_EXIF}


def _common_options(image: DecodedImage, exif: bytes | None) -> dict[str, object]:
    options: dict[str, object] = {}
    if image.icc_profile:
        options["icc_profile"] = image.icc_profile
    if exif:
        options["exif"] = exif
    if image.dpi:
        options["dpi"] = image.dpi
    return options


def _encode_pillow8(image: DecodedImage, fmt: str, quality: int, exif: bytes | None) -> bytes:
    rgb = image.rgb
    alpha = image.alpha
    if alpha is not None and fmt == "jpg":
        rgb = rgb * alpha[:, :, None] + JPEG_BACKGROUND * (1.0 - alpha[:, :, None])
        alpha = None
    grey = image.grayscale and fmt != "webp"
    base = to_uint8(luma(rgb)) if grey else to_uint8(rgb)
    if alpha is not None:
        a = to_uint8(alpha)
        pixels = np.dstack([base, a]) if grey else np.dstack([base, a[:, :, None]])
        im = Image.fromarray(pixels)  # HxWx2 -> "LA", HxWx4 -> "RGBA"
    else:
        im = Image.fromarray(base)  # HxW -> "L", HxWx3 -> "RGB"
    options = _common_options(image, exif)
    if fmt == "jpg":
        subsampling = JPEG_SUBSAMPLING_444 if quality >= JPEG_FULL_CHROMA_QUALITY else JPEG_SUBSAMPLING_420
        options |= {"quality": quality, "subsampling": subsampling, "optimize": True}
    elif fmt == "webp":
        options |= {"quality": quality}
    elif fmt == "tiff":
        options |= _tiff_options(exif)
    return _pillow_save(im, fmt, options)


def _pillow_save(im: Image.Image, fmt: str, options: dict[str, object]) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, format=PILLOW_FORMATS[fmt], **options)
    return buffer.getvalue()
