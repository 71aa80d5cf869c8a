"""Reading photos into float RGB arrays, and what is needed to write them back.

Implements the input side of image I/O (issue 5): every photo becomes a
:class:`DecodedImage` holding upright float32 RGB in [0, 1] plus what writing
it back needs (alpha, grayscale flag, bit depth, ICC profile, EXIF, dpi).
EXIF orientation is applied; grayscale, 1-bit, palette, CMYK, CIELAB and
32-bit float inputs are converted; 16-bit PNG/TIFF keep 16 bits (OpenCV decodes
them, since Pillow reduces 16-bit colour to 8 bits); animated files give their
first frame with a warning; a pixel limit replaces Pillow's decompression-bomb
errors. Nothing here modifies the input. Writing lives in :mod:`.imagewrite`.
"""

from __future__ import annotations

import io
import os
import struct
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import numpy as np
from PIL import Image, ImageCms, UnidentifiedImageError

from . import metadata
from elir_cli.errors import ImageError

# Pillow's own hard decompression-bomb threshold (2 x Image.MAX_IMAGE_PIXELS):
# about 179 megapixels, room for 150 MP medium-format cameras.
DEFAULT_MAX_PIXELS = 178_956_970
# Formats we decode. Restricting Pillow to these keeps it away from plugins
# that run external programs (EPS runs Ghostscript) or guess on weak headers.
# (Pillow's JPEG plugin also opens MPO, the multi-picture JPEG of many cameras.)
READ_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "GIF", "BMP", "AVIF", "PPM", "JPEG2000")
MAX_8BIT = 255.0
MAX_16BIT = 65535.0
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, as Pillow's "L"
HEADER_BYTES = 32
_WEAK_MAGIC_FORMATS = ("BMP", "PPM")  # two-byte magics: confirmed by Pillow
# Name endings that claim an image format (see format_named_by); lower case.
NAME_CLAIMS = {
    **dict.fromkeys((".jpg", ".jpeg", ".jpe", ".jfif"), "JPEG"),
    ".png": "PNG",
    **dict.fromkeys((".tif", ".tiff"), "TIFF"),
    ".webp": "WEBP",
    ".gif": "GIF",
    ".bmp": "BMP",
    ".avif": "AVIF",
    **dict.fromkeys((".ppm", ".pgm", ".pbm", ".pnm"), "PPM"),
    **dict.fromkeys((".jp2", ".j2k", ".jpf", ".jpx"), "JPEG2000"),
}
# JPEG markers (ITU-T T.81, table B.1): start of frame SOF0-SOF15 but for DHT, JPG and DAC,
# which share the range; SOI/EOI/RSTn/TEM stand alone (no length); SOS starts the entropy data.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset({0x01, 0xD8, 0xD9, *range(0xD0, 0xD8)})
_JPEG_SOS = 0xDA
_JPEG_8BIT = 8
_PILLOW_LIMIT_LOCK = threading.Lock()
# What Pillow's decoders raise on damaged data (OSError covers "image file is truncated").
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error)


@dataclass(frozen=True, eq=False)
class DecodedImage:
    """A photo as the restorer sees it (upright RGB) plus what writing it back needs.

    ``rgb`` is float32 HxWx3 in [0, 1] (grey inputs have three equal
    channels); ``alpha`` float32 HxW in [0, 1] or None; ``grayscale`` means
    "write back as grey"; ``bit_depth`` is 8 or 16 (the depth to write back);
    ``format`` is what the content is (Pillow's name: "JPEG", "PNG", ...);
    ``exif`` has Orientation reset to 1; ``warnings`` are one-line notes for
    the user (animated input, colour conversions, rescaled float data).
    """

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    grayscale: bool = False
    bit_depth: int = 8
    format: str = "PNG"
    icc_profile: bytes | None = None
    exif: bytes | None = None
    dpi: tuple[float, float] | None = None
    source_mode: str = "RGB"
    frames: int = 1
    warnings: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.rgb.dtype != np.float32 or self.rgb.ndim != 3 or self.rgb.shape[2] != 3:
            raise ValueError(f"rgb must be float32 HxWx3, got {self.rgb.dtype} {self.rgb.shape}")
        if self.alpha is not None and (self.alpha.dtype != np.float32 or self.alpha.shape != self.rgb.shape[:2]):
            raise ValueError(f"alpha must be float32 HxW matching rgb, got {self.alpha.dtype} {self.alpha.shape}")
        if self.bit_depth not in (8, 16):
            raise ValueError(f"bit_depth must be 8 or 16, got {self.bit_depth}")

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the upright image."""
        return self.rgb.shape[1], self.rgb.shape[0]


# --------------------------------------------------------------------------- array helpers


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Float in [0, 1] (clipped) to uint8, rounding to nearest."""
    return np.rint(np.clip(values, 0.0, 1.0) * MAX_8BIT).astype(np.uint8)


def to_uint16(values: np.ndarray) -> np.ndarray:
    """Float in [0, 1] (clipped) to uint16, rounding to nearest."""
    return np.rint(np.clip(values, 0.0, 1.0) * MAX_16BIT).astype(np.uint16)


def to_float(values: np.ndarray) -> np.ndarray:
    """uint8 or uint16 samples to float32 in [0, 1]."""
    if values.dtype == np.uint8:
        return values.astype(np.float32) / np.float32(MAX_8BIT)
    if values.dtype == np.uint16:
        return values.astype(np.float32) / np.float32(MAX_16BIT)
    raise ValueError(f"expected uint8 or uint16 samples, got {values.dtype}")


def luma(rgb: np.ndarray) -> np.ndarray:
    """Grey HxW float32 from RGB HxWx3 float (BT.601 weights, like Pillow's convert("L"))."""
    return (rgb.astype(np.float32) @ LUMA_WEIGHTS).astype(np.float32)


def rgb_to_bgr_uint8(rgb: np.ndarray) -> np.ndarray:
    """Float RGB HxWx3 in [0, 1] to the uint8 BGR layout OpenCV and facexlib use."""
    return np.ascontiguousarray(to_uint8(rgb)[..., ::-1])


def bgr_uint8_to_rgb(bgr: np.ndarray) -> np.ndarray:
    """uint8 BGR HxWx3 (OpenCV, facexlib) to float32 RGB in [0, 1]."""
    return np.ascontiguousarray(to_float(bgr)[..., ::-1])


def resize_alpha(alpha: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an HxW float alpha to ``size`` = (width, height) with bicubic filtering, clipped to [0, 1]."""
    if (alpha.shape[1], alpha.shape[0]) == tuple(size):
        return alpha
    as_image = Image.fromarray(alpha.astype(np.float32))  # float32 HxW -> mode "F"
    resized = as_image.resize(size, Image.Resampling.BICUBIC)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def make_output(source: DecodedImage, restored_rgb: np.ndarray) -> DecodedImage:
    """The image to write: ``restored_rgb`` (float HxWx3) with the input's metadata.

    The input's alpha is carried untouched, resized if the restored image has
    another size (upscaling); dpi scales with the size so the print size
    stays the same. Input-side warnings are not carried.
    """
    if restored_rgb.ndim != 3 or restored_rgb.shape[2] != 3:
        raise ValueError(f"restored_rgb must be HxWx3, got {restored_rgb.shape}")
    rgb = np.clip(np.asarray(restored_rgb, dtype=np.float32), 0.0, 1.0)
    size = (rgb.shape[1], rgb.shape[0])
    alpha = None if source.alpha is None else resize_alpha(source.alpha, size)
    dpi = source.dpi
    if dpi is not None and size != source.size:
        dpi = (dpi[0] * size[0] / source.size[0], dpi[1] * size[1] / source.size[1])
    return replace(source, rgb=rgb, alpha=alpha, dpi=dpi, warnings=())


# --------------------------------------------------------------------------- detection


def sniff_format(header: bytes) -> str | None:
    """The image format named by a file's first bytes, or None (weak magics need confirming)."""
    if header.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if header.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if header[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if header[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if header[:4] == b"RIFF" and header[8:12] == b"WEBP":
        return "WEBP"
    if header[4:8] == b"ftyp" and header[8:12] in (b"avif", b"avis"):
        return "AVIF"
    if header.startswith((b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51")):
        return "JPEG2000"
    if header.startswith(b"BM"):
        return "BMP"
    if len(header) > 2 and header[0:1] == b"P" and header[1:2] in b"123456" and header[2:3].isspace():
        return "PPM"
    return None


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a regular file whose content is an image we read (by content, not name).

    A damaged file whose header says it is an image counts as an image, so
    that a batch reports it instead of silently skipping it.
    """
    target = Path(path)
    if not target.is_file():
        return False
    try:
        with target.open("rb") as handle:
            header = handle.read(HEADER_BYTES)
    except OSError:  # unreadable: not something we can offer as an image
        return False
    kind = sniff_format(header)
    if kind is None:
        return False
    if kind not in _WEAK_MAGIC_FORMATS:
        return True
    try:
        with _pillow_open(target) as im:
            return im.format in _WEAK_MAGIC_FORMATS
    except (UnidentifiedImageError, *_DECODE_ERRORS):  # "BM..." text file and the like
        return False


def format_named_by(name: str | os.PathLike[str]) -> str | None:
    """The image format a file's name ending claims (``"JPEG"`` for ``x.JPG``), or None.

    Never used to decide how a file is read (that is always by content); a
    batch uses it so that a file whose name says image but whose bytes are not
    one is reported as failed instead of passed over.
    """
    return NAME_CLAIMS.get(Path(name).suffix.lower())


def is_image_or_claims_to_be(path: str | os.PathLike[str]) -> bool:
    """An image by content (:func:`is_image_file`), or a regular file whose name says it is one.

    The name is looked at first, as for object storage: a file it settles is not opened.
    """
    return (format_named_by(path) is not None and Path(path).is_file()) or is_image_file(path)


def is_image_data(head: bytes, read_all: Callable[[], bytes]) -> bool:
    """:func:`is_image_file` for a file that is not on the local file system (object storage).

    ``head``: the file's first :data:`HEADER_BYTES` bytes; ``read_all`` gives
    the whole file, read only when the header's magic is too weak to decide.
    """
    kind = sniff_format(head[:HEADER_BYTES])
    if kind is None:
        return False
    if kind not in _WEAK_MAGIC_FORMATS:
        return True
    try:
        with _pillow_open(io.BytesIO(read_all())) as im:
            return im.format in _WEAK_MAGIC_FORMATS
    except (UnidentifiedImageError, *_DECODE_ERRORS):
        return False


# --------------------------------------------------------------------------- reading


def read_image(
    source: str | os.PathLike[str] | bytes | BinaryIO, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> DecodedImage:
    """Decode a photo from a path, bytes, or a binary stream (e.g. ``sys.stdin.buffer``).

    Raises :class:`ImageError` with a one-line message for missing, unreadable,
    truncated, corrupt, unsupported or too large (> ``max_pixels``) inputs.
    """
    name, data = _read_source(source)
    try:
        # Pillow reports damaged-but-readable data (corrupt EXIF, ...) as Python
        # warnings; they become one-line notes in ``DecodedImage.warnings``.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with _pillow_open(io.BytesIO(data)) as im:
                _check_size(name, im.size, max_pixels)
                image = _decode(name, data, im)
    except UnidentifiedImageError as exc:
        claimed = sniff_format(data[:HEADER_BYTES])
        precision = jpeg_sample_precision(data) if claimed == "JPEG" else None
        if precision is not None and precision != _JPEG_8BIT:
            raise ImageError(
                f"{name}: {precision}-bit JPEG: not supported by the decoder",
                hint="convert it to a 16-bit PNG or TIFF and restore that",
            ) from exc
        if claimed is not None:
            raise ImageError(
                f"{name}: looks like {claimed} but its header is corrupt", hint="re-export or re-download the file"
            ) from exc
        named = format_named_by(name)  # a path's, a URL's or a stream's name; bytes have none
        if named is not None:
            raise ImageError(f"{name}: not an image, though its name says {named}",
                             hint="the file is damaged or misnamed; re-export or re-download it") from exc
        raise ImageError(
            f"{name}: not an image file we can read",
            hint=f"supported formats: {', '.join(READ_FORMATS)}",
        ) from exc
    except _DECODE_ERRORS as exc:
        raise ImageError(
            f"{name}: image data is truncated or corrupt ({_one_line(exc)})",
            hint="re-export or re-download the file",
        ) from exc
    notes = tuple(f"{name}: {_one_line(w.message)}" for w in caught)  # type: ignore[arg-type]
    return replace(image, warnings=image.warnings + notes) if notes else image


def jpeg_sample_precision(data: bytes) -> int | None:
    """The bits per sample a JPEG's frame header declares (8, 12 or 16), or None if none is found.

    Walks the marker segments from the start of the file to the first
    start-of-frame marker; stops at the entropy-coded data or at anything
    that does not parse.
    """
    pos = 2  # after SOI
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if marker == _JPEG_SOS:
            return None
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker in _JPEG_SOF:
            return data[pos + 4] if pos + 4 < len(data) and length >= 3 else None
        if length < 2:
            return None
        pos += 2 + length
    return None


def _read_source(source: str | os.PathLike[str] | bytes | BinaryIO) -> tuple[str, bytes]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "image data", bytes(source)
    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        try:
            return name, Path(name).read_bytes()
        except FileNotFoundError as exc:
            raise ImageError(f"{name}: no such file", hint="check the path") from exc
        except IsADirectoryError as exc:
            raise ImageError(f"{name}: is a folder, not an image", hint="use `elir batch` for folders") from exc
        except OSError as exc:
            raise ImageError(f"{name}: cannot read ({exc.strerror or exc})") from exc
    name = str(getattr(source, "name", "<stream>"))
    try:
        return name, source.read()
    except OSError as exc:
        raise ImageError(f"{name}: cannot read ({exc.strerror or exc})") from exc


@contextmanager
def _pillow_open(fp: Path | io.BytesIO) -> Iterator[Image.Image]:
    """Image.open with Pillow's global bomb check lifted; callers check ``max_pixels`` themselves.

    Pillow only offers a process-wide limit (Image.MAX_IMAGE_PIXELS), checked
    when the header is parsed. It is lifted for that instant under a lock and
    restored at once, so our own per-call limit decides and can report the
    claimed size instead of Pillow's generic error.
    """
    with _PILLOW_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            im = Image.open(fp, formats=READ_FORMATS)
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    try:
        yield im
    finally:
        im.close()


def _check_size(name: str, size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise ImageError(
            f"{name}: {width}x{height} is {width * height / 1e6:.0f} megapixels, over the limit of "
            f"{max_pixels / 1e6:.0f} (a damaged file or a decompression bomb?)",
            hint="if you trust this file, raise the limit (max_pixels=, or --max-pixels on the command line)",
        )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _source_rawmode(im: Image.Image) -> str:
    """The raw mode of the first tile ("RGB;16B", "LA;16B", ...), before load() clears it."""
    if not im.tile:
        return ""
    args = im.tile[0].args
    return args if isinstance(args, str) else str(args[0]) if args else ""


def _decode(name: str, data: bytes, im: Image.Image) -> DecodedImage:
    rawmode = _source_rawmode(im)  # first: getexif() on a PNG loads the pixels and clears the tiles
    fmt = str(im.format)
    frames = int(getattr(im, "n_frames", 1))
    notes: list[str] = []
    if frames > 1:
        notes.append(f"{name}: {fmt} with {frames} frames; only the first frame is used")
    orientation = metadata.read_orientation(im)
    exif = metadata.exif_for_output(im)
    icc = im.info.get("icc_profile") or None
    dpi = _dpi(im)
    source_mode = im.mode
    im.load()  # decodes and validates (truncated data raises here)

    sixteen = ";16" in rawmode and fmt in ("PNG", "TIFF") and im.mode in ("RGB", "RGBA", "LA")
    if sixteen:
        colour, alpha, grayscale = _decode_16bit_opencv(name, data, im.size, gray=rawmode.startswith("LA"))
        bit_depth = 16
    else:
        colour, alpha, grayscale, bit_depth, icc = _decode_pillow(name, im, icc, notes)

    colour = metadata.apply_orientation(colour, orientation)
    rgb = to_float(colour) if colour.dtype != np.float32 else colour
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[:, :, None], 3, axis=2)
    alpha_f = None
    if alpha is not None:
        alpha_f = to_float(metadata.apply_orientation(alpha, orientation))
    return DecodedImage(
        rgb=np.ascontiguousarray(rgb, dtype=np.float32),
        alpha=alpha_f,
        grayscale=grayscale,
        bit_depth=bit_depth,
        format=fmt,
        icc_profile=icc,
        exif=exif,
        dpi=dpi,
        source_mode=source_mode,
        frames=frames,
        warnings=tuple(notes),
    )


def _dpi(im: Image.Image) -> tuple[float, float] | None:
    dpi = im.info.get("dpi")
    if not dpi or len(dpi) != 2:
        return None
    x, y = float(dpi[0]), float(dpi[1])
    return (x, y) if x > 1 and y > 1 else None  # TIFFs without real resolution say (1, 1)


def _decode_16bit_opencv(
    name: str, data: bytes, size: tuple[int, int], *, gray: bool
) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """16-bit colour (or grey+alpha) PNG/TIFF via OpenCV, which keeps all 16 bits."""
    import cv2

    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    width, height = size
    if decoded is None or decoded.dtype != np.uint16 or decoded.shape[:2] != (height, width) or decoded.ndim != 3:
        raise ImageError(f"{name}: cannot decode this 16-bit image", hint="convert it to an 8-bit PNG or TIFF")
    colour = decoded[:, :, 2::-1]  # BGR(A) -> RGB
    alpha = decoded[:, :, 3] if decoded.shape[2] == 4 else None
    if gray:
        colour = decoded[:, :, 0]
    return np.ascontiguousarray(colour), alpha, gray


def _decode_pillow(
    name: str, im: Image.Image, icc: bytes | None, notes: list[str]
) -> tuple[np.ndarray, np.ndarray | None, bool, int, bytes | None]:
    """(colour HxW or HxWx3, alpha HxW or None, grayscale, bit depth, ICC to write) for 8-bit paths."""
    mode = im.mode
    transparency = im.info.get("transparency")
    if mode in ("1", "L"):
        grey = np.asarray(im.convert("L"))
        alpha = _alpha_from_key(grey, transparency)
        return grey, alpha, True, 8, icc
    if mode in ("LA", "La"):
        la = np.asarray(im.convert("LA"))
        return la[:, :, 0], la[:, :, 1], True, 8, icc
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(im, dtype=np.int64)
        if values.min() < 0 or values.max() > MAX_16BIT:
            notes.append(f"{name}: 32-bit integer samples clipped to 16 bits")
        grey = np.clip(values, 0, int(MAX_16BIT)).astype(np.uint16)
        return grey, _alpha_from_key(grey, transparency), True, 16, icc
    if mode == "F":
        return _float_grey(name, im, notes), None, True, 16, icc
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or transparency is not None
        converted = np.asarray(im.convert("RGBA" if has_alpha else "RGB"))
        return converted[:, :, :3], converted[:, :, 3] if has_alpha else None, False, 8, icc
    if mode == "CMYK":
        notes.append(f"{name}: CMYK converted to RGB")
        return _cmyk_to_rgb(im, icc)
    if mode == "LAB":
        notes.append(f"{name}: CIELAB converted to sRGB")
        lab, srgb = ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB")
        transform = ImageCms.buildTransform(lab, srgb, "LAB", "RGB")
        return np.asarray(ImageCms.applyTransform(im, transform)), None, False, 8, None
    if mode in ("RGBA", "RGBa"):
        rgba = np.asarray(im.convert("RGBA"))
        return rgba[:, :, :3], rgba[:, :, 3], False, 8, icc
    rgb = np.asarray(im.convert("RGB"))
    return rgb, _alpha_from_key(rgb, transparency), False, 8, icc


def _alpha_from_key(pixels: np.ndarray, transparency: object) -> np.ndarray | None:
    """Alpha for a tRNS colour key: the key colour is transparent, all else opaque."""
    if transparency is None or isinstance(transparency, bytes):
        return None
    key = np.asarray(transparency, dtype=pixels.dtype)
    hit = pixels == key if pixels.ndim == 2 else np.all(pixels == key, axis=2)
    opaque = np.iinfo(pixels.dtype).max
    return np.where(hit, 0, opaque).astype(pixels.dtype)


def _float_grey(name: str, im: Image.Image, notes: list[str]) -> np.ndarray:
    values = np.asarray(im, dtype=np.float32)
    if not np.all(np.isfinite(values)):
        raise ImageError(f"{name}: floating-point image holds NaN or infinite values", hint="clean the data first")
    low, high = float(values.min()), float(values.max())
    if low < 0.0 or high > 1.0:
        notes.append(f"{name}: float samples in [{low:.4g}, {high:.4g}] rescaled to [0, 1]")
        span = high - low
        values = (values - low) / span if span > 0 else np.zeros_like(values)
    return values.astype(np.float32)


def _cmyk_to_rgb(im: Image.Image, icc: bytes | None) -> tuple[np.ndarray, None, bool, int, bytes | None]:
    """CMYK through its embedded profile to sRGB (tagged sRGB), or Pillow's plain formula if it has none."""
    if icc:
        srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
        converted = ImageCms.profileToProfile(
            im, ImageCms.ImageCmsProfile(io.BytesIO(icc)), srgb, outputMode="RGB"
        )
        return np.asarray(converted), None, False, 8, srgb.tobytes()
    return np.asarray(im.convert("RGB")), None, False, 8, None

