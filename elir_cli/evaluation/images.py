"""The image folders an evaluation reads: listing, pairing by name, reading, resizing.

Files are found by content (not by extension), recursively, in sorted order,
skipping hidden files and folders. Two folders are paired by relative path
without the extension (``a/b.jpg`` pairs with ``a/b.png``), because the
degraded and restored files are PNGs whatever the originals were.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from elir_cli.errors import UsageError
from elir_cli.images.read import is_image_file, read_image, to_float, to_uint8


@dataclass
class Pair:
    """One evaluated image: its LQ file and, where given, ground truth, restored file and mask."""

    key: str
    lq: Path
    gt: Path | None = None
    restored: Path | None = None
    mask: Path | None = None
    values: dict[str, float] = field(default_factory=dict)


def walk_images(root: Path, *, exclude: Iterable[Path] = ()) -> list[Path]:
    """Every image under ``root`` (by content), sorted, without hidden entries or ``exclude`` (relative paths)."""
    if not root.is_dir():
        raise UsageError(f"{root} is not a folder", hint="give a folder of images")
    skip = {Path(p).as_posix() for p in exclude}
    return [p for p in _walk(root) if p.relative_to(root).as_posix() not in skip and is_image_file(p)]


def _walk(root: Path) -> Iterator[Path]:
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield here / name


def image_key(root: Path, path: Path) -> str:
    """The pairing key of ``path`` under ``root``: its relative path without the extension, POSIX style."""
    return path.relative_to(root).with_suffix("").as_posix()


def index_images(root: Path, *, exclude: Iterable[Path] = ()) -> dict[str, Path]:
    """Key -> path for every image under ``root``; two files with one key (``a.jpg``, ``a.png``) are refused."""
    found: dict[str, Path] = {}
    for path in walk_images(root, exclude=exclude):
        key = image_key(root, path)
        if key in found:
            raise UsageError(f"{found[key]} and {path} have the same name but for the extension",
                             hint="an evaluation pairs files by name; rename one of them")
        found[key] = path
    return found


def read_uint8(path: Path) -> np.ndarray:
    """An image as uint8 HxWx3 RGB (EXIF rotation applied, grey expanded to RGB)."""
    image = read_image(path)
    return to_uint8(image.rgb)


def read_float(path: Path) -> np.ndarray:
    """An image as float32 HxWx3 RGB in [0, 1] (16-bit files keep their precision)."""
    return read_image(path).rgb


def resize_bicubic_uint8(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """PIL bicubic resize of uint8 RGB to ``size`` = (width, height), as the paper's data code does."""
    from PIL import Image

    if (rgb.shape[1], rgb.shape[0]) == tuple(size):
        return rgb
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).resize(size, Image.Resampling.BICUBIC))


def gt_like(gt: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The ground truth (uint8) as float at the restored image's size (PIL bicubic, as ``elir degrade`` resizes)."""
    return to_float(resize_bicubic_uint8(gt, (shape[1], shape[0])))


def encode_png(rgb_uint8: np.ndarray) -> bytes:
    """Lossless PNG bytes of uint8 RGB (or L), with no metadata (the same pixels give the same bytes)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb_uint8).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()
