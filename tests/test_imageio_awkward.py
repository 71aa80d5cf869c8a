"""Every awkward and face photo either round-trips correctly or fails with a one-line ImageError.

Parametrized over the files on disk, so a new file in tests/data/photos is
covered automatically. The identity "restoration" (rgb in = rgb out) makes the
expected output exactly predictable. Output properties are checked against
independent decoders (Pillow's own ImageOps.exif_transpose, OpenCV).
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from elir_cli.errors import ImageError
from elir_cli.images.read import DecodedImage, is_image_file, make_output, read_image
from elir_cli.images.write import choose_format, output_suffix, write_image

PHOTOS = Path(__file__).parent / "data" / "photos"
FILES = sorted(p for p in PHOTOS.glob("*/*") if p.suffix.lower() != ".md")
MUST_FAIL = {
    "65536-uint32-limit.png": "megapixels",
    "decompression_bomb.gif": "megapixels",
    "corrupt-header.jpg": "corrupt",
    "truncated.jpg": "truncated",
    "truncated_jpeg.jpg": "truncated",
    "hopper_12bit.jpg": "12-bit JPEG: not supported by the decoder",
}
GREY_MODES = {"1", "L", "LA", "La", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"}
LOSSY = {"jpg", "webp"}
LOSSY_MEAN_TOL = 0.03  # mean absolute difference of a quality-95 re-encode
ORIENTATION_TAG = 0x0112


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def reference_upright(path: Path) -> Image.Image:
    """Pillow's own idea of the upright image (independent of our orientation code)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as im:
            return ImageOps.exif_transpose(im)


def is_16bit_file(path: Path) -> bool:
    decoded = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return decoded is not None and decoded.dtype == np.uint16


def quantised(values: np.ndarray, bits: int) -> np.ndarray:
    return np.rint(values * (2**bits - 1)).astype(np.int64)


@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.name}" for p in FILES])
def test_awkward_file_round_trips_or_fails_cleanly(path: Path, tmp_path: Path) -> None:
    before = sha256(path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    try:
        image = read_image(path)
    except ImageError as exc:
        assert path.name not in MUST_FAIL or MUST_FAIL[path.name] in exc.message
        assert exc.message and "\n" not in exc.message and path.name in exc.message
        assert exc.hint is None or "\n" not in exc.hint
        assert list(out_dir.iterdir()) == []
        assert sha256(path) == before
        if path.name not in MUST_FAIL:
            pytest.fail(f"{path.name} should be readable, got: {exc.message}")
        return
    assert path.name not in MUST_FAIL, f"{path.name} should have been refused"

    fmt = choose_format(image)
    target = out_dir / (path.stem + output_suffix(fmt))
    written = write_image(make_output(image, image.rgb.copy()), target, source_path=path)
    assert written == target
    assert sorted(out_dir.iterdir()) == [target], "no temporary or partial files may be left"
    assert sha256(path) == before, "the input must never be modified"

    reference = reference_upright(path)
    with Image.open(target) as out:
        out_exif = out.getexif()
        out_icc = out.info.get("icc_profile")
        out_size, out_mode = out.size, out.mode
    with Image.open(path) as src:
        src_mode, src_icc, src_exif = src.mode, src.info.get("icc_profile"), src.info.get("exif")

    assert out_size == reference.size == image.size
    assert out_exif.get(ORIENTATION_TAG, 1) == 1
    if src_icc:
        assert out_icc, "an input ICC profile must be carried (or replaced by sRGB after CMYK conversion)"
    if src_exif:
        assert out_exif, "an input EXIF block must be carried"

    grey_in = src_mode in GREY_MODES
    assert image.grayscale == grey_in
    back = read_image(target)
    assert back.grayscale == grey_in or (grey_in and back.alpha is not None and image.bit_depth == 16)
    if grey_in and out_mode in ("RGB", "RGBA"):  # 16-bit grey+alpha is stored as RGBA with equal channels
        assert np.array_equal(back.rgb[..., 0], back.rgb[..., 2])
    if is_16bit_file(path) and fmt in ("png", "tiff"):
        assert is_16bit_file(target) and back.bit_depth == 16

    if image.alpha is None:
        assert back.alpha is None
    elif back.alpha is None:  # WebP drops an alpha channel that is fully opaque
        assert fmt == "webp" and float(image.alpha.min()) == 1.0
    else:
        assert np.array_equal(quantised(back.alpha, image.bit_depth), quantised(image.alpha, image.bit_depth))

    if fmt in LOSSY:
        assert float(np.abs(back.rgb - image.rgb).mean()) < LOSSY_MEAN_TOL
    elif image.source_mode == "F":  # float samples sit anywhere, also on rounding boundaries
        assert np.abs(quantised(back.rgb, 16) - quantised(image.rgb, 16)).max() <= 1
    else:
        assert np.array_equal(quantised(back.rgb, image.bit_depth), quantised(image.rgb, image.bit_depth))


@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.name}" for p in FILES])
def test_every_photo_is_recognised_as_an_image_by_content(path: Path) -> None:
    assert is_image_file(path)


def test_decoded_image_matches_pillow_upright_pixels_for_8bit_rgb_files() -> None:
    for name in ("hopper_orientation_3.jpg", "hopper_orientation_6.jpg", "hopper_orientation_8.jpg",
                 "hopper_orientation_6.webp", "orientation_rectangle.jpg"):
        path = PHOTOS / "awkward" / name
        image: DecodedImage = read_image(path)
        expected = np.asarray(reference_upright(path).convert("RGB"))
        assert np.array_equal(quantised(image.rgb, 8), expected), name


def test_a_12bit_jpeg_is_named_as_such_with_what_to_do() -> None:
    from elir_cli.images.read import jpeg_sample_precision

    path = PHOTOS / "awkward" / "hopper_12bit.jpg"
    assert jpeg_sample_precision(path.read_bytes()) == 12
    assert jpeg_sample_precision((PHOTOS / "faces" / "grace_hopper.jpg").read_bytes()) == 8
    assert jpeg_sample_precision((PHOTOS / "awkward" / "pil_sample_cmyk.jpg").read_bytes()) == 8
    with pytest.raises(ImageError) as refused:
        read_image(path)
    assert refused.value.message == f"{path}: 12-bit JPEG: not supported by the decoder"
    assert "16-bit PNG or TIFF" in refused.value.hint
    # the same bytes from a stream, and a damaged 8-bit JPEG, are not taken for one
    with pytest.raises(ImageError, match="12-bit JPEG"):
        read_image(path.read_bytes())
    with pytest.raises(ImageError) as damaged:
        read_image(PHOTOS / "awkward" / "corrupt-header.jpg")
    assert "12-bit" not in damaged.value.message
