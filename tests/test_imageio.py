"""Image I/O behaviour: exact round trips, metadata, format rule, safety of writes, stdin/stdout."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

from elir_cli.errors import ImageError, OutputExistsError, UsageError
from elir_cli.images.read import (
    DEFAULT_MAX_PIXELS,
    DecodedImage,
    bgr_uint8_to_rgb,
    is_image_file,
    make_output,
    read_image,
    resize_alpha,
    rgb_to_bgr_uint8,
)
from elir_cli.images.write import choose_format, encode_image, format_losses, write_image

PHOTOS = Path(__file__).parent / "data" / "photos"
AWKWARD = PHOTOS / "awkward"
FACES = PHOTOS / "faces"
ORIENTATION, DATETIME_ORIGINAL, EXIF_IFD = 0x0112, 0x9003, 0x8769
PIXEL_X, PIXEL_Y = 0xA002, 0xA003


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def random_rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def png_with_exif(path: Path, pixels: np.ndarray, orientation: int) -> Path:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    Image.fromarray(pixels).save(path, exif=exif.tobytes())
    return path


# --------------------------------------------------------------------------- exactness


def test_8bit_rgb_png_identity_write_equals_input_pixels(tmp_path: Path) -> None:
    src = FACES / "astronaut.png"
    out = write_image(make_output(img := read_image(src), img.rgb), tmp_path / "a.png", source_path=src)
    with Image.open(src) as a, Image.open(out) as b:
        assert b.mode == "RGB"
        assert np.array_equal(np.asarray(a), np.asarray(b))
        assert b.info["icc_profile"] == a.info["icc_profile"]


@pytest.mark.parametrize("name", ["tree_alpha_16bit.png", "tiff_16bit_RGB.tiff"])
def test_16bit_colour_keeps_every_16bit_value(name: str, tmp_path: Path) -> None:
    src = AWKWARD / name
    image = read_image(src)
    assert image.bit_depth == 16
    out = write_image(make_output(image, image.rgb), tmp_path / f"o{src.suffix}", source_path=src)
    want = cv2.imread(str(src), cv2.IMREAD_UNCHANGED)
    got = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert got.dtype == np.uint16 and np.array_equal(got, want)
    assert len(np.unique(want)) > 256, "the file must really use more than 8 bits"


def test_16bit_grey_tiff_keeps_values_and_stays_grey(tmp_path: Path) -> None:
    src = AWKWARD / "16bit.cropped.tif"
    image = read_image(src)
    out = write_image(make_output(image, image.rgb), tmp_path / "g.tif", source_path=src)
    with Image.open(src) as a, Image.open(out) as b:
        assert b.mode == "I;16"
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_16bit_grey_with_alpha_png_round_trips_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 65536, (20, 30), dtype=np.uint16)
    alpha = rng.integers(0, 65536, (20, 30), dtype=np.uint16)
    rgb = np.repeat((grey / 65535.0).astype(np.float32)[:, :, None], 3, axis=2)
    image = DecodedImage(rgb=rgb, alpha=(alpha / 65535.0).astype(np.float32), grayscale=True, bit_depth=16)
    out = write_image(image, tmp_path / "ga.png")
    decoded = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)  # grey+alpha comes back as BGRA
    assert decoded.dtype == np.uint16
    assert np.array_equal(decoded[:, :, 0], grey) and np.array_equal(decoded[:, :, 3], alpha)
    back = read_image(out)
    assert back.grayscale and back.bit_depth == 16
    assert np.array_equal(np.rint(back.alpha * 65535).astype(np.uint16), alpha)


def test_jpeg_quality_is_honoured(tmp_path: Path) -> None:
    image = read_image(FACES / "grace_hopper.jpg")
    sizes = {q: len(encode_image(image, "jpg", quality=q)) for q in (30, 60, 95)}
    assert sizes[30] < sizes[60] < sizes[95]
    errors = {q: np.abs(read_image(encode_image(image, "jpg", quality=q)).rgb - image.rgb).mean() for q in (30, 95)}
    assert errors[95] < errors[30]


def test_webp_quality_is_honoured() -> None:
    image = read_image(FACES / "astronaut.png")
    assert len(encode_image(image, "webp", quality=40)) < len(encode_image(image, "webp", quality=95))


# --------------------------------------------------------------------------- orientation and metadata


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillows_exif_transpose(orientation: int, tmp_path: Path) -> None:
    path = png_with_exif(tmp_path / "o.png", random_rgb(3, 5), orientation)
    image = read_image(path)
    with Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im))
    assert np.array_equal(np.rint(image.rgb * 255).astype(np.uint8), expected)
    parsed = Image.Exif()
    parsed.load(image.exif)
    assert parsed.get(ORIENTATION) == 1


@pytest.mark.parametrize("fmt", ["jpg", "png", "webp", "tiff"])
def test_exif_is_carried_with_orientation_reset_and_size_updated(fmt: str, tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    sub = exif.get_ifd(EXIF_IFD)
    sub[DATETIME_ORIGINAL] = "2001:02:03 04:05:06"
    sub[PIXEL_X], sub[PIXEL_Y] = 40, 30
    src = tmp_path / "cam.jpg"
    Image.fromarray(random_rgb(30, 40)).save(src, exif=exif.tobytes(), quality=95)
    image = read_image(src)
    assert image.size == (30, 40)  # rotated upright
    upscaled = np.repeat(np.repeat(image.rgb, 2, axis=0), 2, axis=1)
    out = write_image(make_output(image, upscaled), tmp_path / f"out.{fmt}", source_path=src)
    with Image.open(out) as im:
        assert im.size == (60, 80)
        got = im.getexif()
        assert got.get(ORIENTATION) == 1
        got_sub = got.get_ifd(EXIF_IFD)
        assert got_sub.get(DATETIME_ORIGINAL) == "2001:02:03 04:05:06"
        assert (got_sub.get(PIXEL_X), got_sub.get(PIXEL_Y)) == (60, 80)


@pytest.mark.parametrize("fmt", ["jpg", "png", "webp", "tiff"])
def test_icc_profile_is_carried_to_every_format(fmt: str, tmp_path: Path) -> None:
    src = FACES / "astronaut.png"
    with Image.open(src) as im:
        icc = im.info["icc_profile"]
    out = write_image(read_image(src), tmp_path / f"a.{fmt}")
    with Image.open(out) as im:
        assert im.info.get("icc_profile") == icc


def test_16bit_png_carries_icc_exif_and_dpi(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[ORIENTATION] = 1
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    image = DecodedImage(rgb=np.full((4, 6, 3), 0.5, np.float32), bit_depth=16, icc_profile=icc,
                         exif=exif.tobytes(), dpi=(300.0, 300.0))
    out = write_image(image, tmp_path / "d.png")
    with Image.open(out) as im:
        im.load()
        assert im.info["icc_profile"] == icc
        assert im.getexif().get(ORIENTATION) == 1
        assert im.info["dpi"] == pytest.approx((300, 300), abs=0.01)


def test_cmyk_with_embedded_profile_is_converted_through_it() -> None:
    image = read_image(AWKWARD / "pil_sample_cmyk.jpg")
    with Image.open(AWKWARD / "pil_sample_cmyk.jpg") as im:
        plain = np.asarray(im.convert("RGB"))
    assert np.array_equal(np.rint(image.rgb * 255).astype(np.uint8), plain)  # no profile: Pillow's formula
    assert any("CMYK" in note for note in image.warnings)


def test_animated_input_gives_first_frame_and_says_so() -> None:
    image = read_image(AWKWARD / "iss634.webp")
    assert image.frames == 42
    assert any("42 frames" in note and "first frame" in note for note in image.warnings)
    with Image.open(AWKWARD / "iss634.webp") as im:
        first = np.asarray(im.convert("RGBA"))
    assert np.array_equal(np.rint(image.rgb * 255).astype(np.uint8), first[:, :, :3])


def test_palette_transparency_becomes_alpha() -> None:
    image = read_image(AWKWARD / "pil123p.png")
    with Image.open(AWKWARD / "pil123p.png") as im:
        alpha = np.asarray(im.convert("RGBA"))[:, :, 3]
    assert image.alpha is not None and alpha.min() == 0
    assert np.array_equal(np.rint(image.alpha * 255).astype(np.uint8), alpha)


# --------------------------------------------------------------------------- output helpers and format rule


def test_make_output_resizes_alpha_and_scales_dpi() -> None:
    alpha = np.zeros((10, 20), np.float32)
    alpha[:, 10:] = 1.0
    source = DecodedImage(rgb=np.zeros((10, 20, 3), np.float32), alpha=alpha, dpi=(72.0, 72.0), warnings=("x",))
    out = make_output(source, np.ones((40, 80, 3), np.float32))
    assert out.size == (80, 40) and out.alpha.shape == (40, 80)
    assert out.alpha[:, :35].max() == 0.0 and out.alpha[:, 45:].min() == 1.0
    assert out.dpi == (288.0, 288.0) and out.warnings == ()
    same = make_output(source, np.full((10, 20, 3), 2.0, np.float32))
    assert same.alpha is source.alpha and same.rgb.max() == 1.0  # clipped to [0, 1]
    with pytest.raises(ValueError):
        make_output(source, np.zeros((10, 20), np.float32))


def test_resize_alpha_stays_in_range() -> None:
    alpha = np.random.default_rng(0).random((7, 9)).astype(np.float32)
    big = resize_alpha(alpha, (36, 28))
    assert big.shape == (28, 36) and big.dtype == np.float32 and 0.0 <= big.min() and big.max() <= 1.0


def test_bgr_helpers_round_trip() -> None:
    rgb = (random_rgb(4, 5) / 255.0).astype(np.float32)
    bgr = rgb_to_bgr_uint8(rgb)
    assert bgr.dtype == np.uint8 and np.array_equal(bgr[:, :, 0], np.rint(rgb[:, :, 2] * 255).astype(np.uint8))
    assert np.allclose(bgr_uint8_to_rgb(bgr), rgb, atol=1e-7)


def _img(**fields: object) -> DecodedImage:
    return DecodedImage(rgb=np.zeros((2, 2, 3), np.float32), **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"format": "JPEG"}, "jpg"),
        ({"format": "MPO"}, "jpg"),
        ({"format": "JPEG", "alpha": np.ones((2, 2), np.float32)}, "png"),
        ({"format": "WEBP", "alpha": np.ones((2, 2), np.float32)}, "webp"),
        ({"format": "WEBP", "grayscale": True}, "png"),
        ({"format": "TIFF"}, "tiff"),
        ({"format": "TIFF", "bit_depth": 16, "grayscale": True}, "tiff"),
        ({"format": "TIFF", "bit_depth": 16}, "tiff"),
        ({"format": "TIFF", "bit_depth": 16, "icc_profile": b"icc"}, "png"),
        ({"format": "TIFF", "bit_depth": 16, "grayscale": True, "alpha": np.ones((2, 2), np.float32)}, "png"),
        ({"format": "PNG", "bit_depth": 16}, "png"),
        ({"format": "GIF"}, "png"),
        ({"format": "AVIF"}, "png"),
    ],
)
def test_auto_format_rule(fields: dict[str, object], expected: str) -> None:
    image = _img(**fields)
    assert choose_format(image) == expected
    assert format_losses(image, expected) == []


def test_explicit_format_conversions_report_losses_and_flatten_alpha(tmp_path: Path) -> None:
    alpha = np.zeros((2, 2), np.float32)
    image = DecodedImage(rgb=np.zeros((2, 2, 3), np.float32), alpha=alpha, bit_depth=16)
    assert len(format_losses(image, "jpg")) == 2
    with Image.open(io.BytesIO(encode_image(image, "jpg"))) as im:
        assert im.mode == "RGB" and np.asarray(im).min() >= 250  # transparent black composited on white


@pytest.mark.parametrize(("ext", "quality"), [("gif", 95), ("png", 0), ("jpg", 101)])
def test_bad_format_or_quality_is_a_usage_error(ext: str, quality: int) -> None:
    with pytest.raises(UsageError):
        encode_image(_img(), ext, quality=quality)


def test_explicit_format_contradicting_the_suffix_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not match"):
        write_image(_img(), tmp_path / "x.jpg", ext="png")
    assert list(tmp_path.iterdir()) == []
    assert write_image(_img(), tmp_path / "x.jpeg", ext="jpg").exists()


def test_auto_format_follows_a_known_suffix(tmp_path: Path) -> None:
    out = write_image(_img(format="PNG"), tmp_path / "x.webp")
    with Image.open(out) as im:
        assert im.format == "WEBP"


# --------------------------------------------------------------------------- safe writing


def test_refuses_to_replace_its_input_by_any_name(tmp_path: Path) -> None:
    src = tmp_path / "in.png"
    Image.fromarray(random_rgb(4, 4)).save(src)
    before = sha256(src)
    image = read_image(src)
    link = tmp_path / "hard.png"
    os.link(src, link)
    sym = tmp_path / "sym.png"
    sym.symlink_to(src)
    for target in (src, tmp_path / "." / "in.png", link, sym):
        with pytest.raises(ImageError, match="is the input file"):
            write_image(image, target, overwrite=True, source_path=src)
    assert sha256(src) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hard.png", "in.png", "sym.png"]


def test_existing_output_is_kept_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "o.png"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError, match="already exists") as info:
        write_image(_img(), out)
    assert "--overwrite" in (info.value.hint or "")
    assert out.read_bytes() == b"keep me"
    write_image(_img(), out, overwrite=True)
    assert is_image_file(out)
    assert sorted(tmp_path.iterdir()) == [out]


def test_failed_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(ImageError, match="No space left"):
        write_image(_img(), tmp_path / "o.png")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_destination_is_a_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(ImageError) as info:
        write_image(_img(), blocker / "sub" / "o.png")
    assert "\n" not in info.value.message
    with pytest.raises(ImageError, match="is a folder"):
        write_image(_img(), tmp_path)


def test_creates_missing_output_folders_and_uses_normal_permissions(tmp_path: Path) -> None:
    out = write_image(_img(), tmp_path / "a" / "b" / "o.png")
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask


# --------------------------------------------------------------------------- limits and bad input


def test_pixel_limit_gives_a_clear_error_and_leaves_pillow_alone() -> None:
    saved = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageError, match="over the limit") as info:
        read_image(FACES / "astronaut.png", max_pixels=512 * 511)
    assert "max-pixels" in (info.value.hint or "")
    assert read_image(FACES / "astronaut.png", max_pixels=512 * 512).size == (512, 512)
    assert Image.MAX_IMAGE_PIXELS == saved
    assert DEFAULT_MAX_PIXELS >= 150_000_000  # medium-format cameras fit


def test_bomb_is_refused_before_decoding() -> None:
    with pytest.raises(ImageError, match="65535x66601"):
        read_image(AWKWARD / "decompression_bomb.gif")


@pytest.mark.parametrize(
    ("data", "match"),
    [(b"", "not an image"), (b"hello, world\n", "not an image"), (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "corrupt")],
)
def test_bad_bytes_are_one_line_errors(data: bytes, match: str) -> None:
    with pytest.raises(ImageError, match=match) as info:
        read_image(data)
    assert "\n" not in info.value.message


def test_missing_file_and_folder_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no such file"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="folder"):
        read_image(tmp_path)


def test_is_image_file_goes_by_content_not_name(tmp_path: Path) -> None:
    renamed = tmp_path / "PHOTO.TXT"
    renamed.write_bytes((FACES / "grace_hopper.jpg").read_bytes())
    fake = tmp_path / "fake.jpg"
    fake.write_text("not really a jpeg")
    bm = tmp_path / "notes.bmp"
    bm.write_text("BMW service notes, 2024\n")
    assert is_image_file(renamed)
    assert not is_image_file(fake)
    assert not is_image_file(bm)
    assert not is_image_file(tmp_path)
    assert not is_image_file(tmp_path / "missing.png")


# --------------------------------------------------------------------------- stdin / stdout

STDIO_SCRIPT = """
import sys
from elir_cli.images.read import read_image, make_output
from elir_cli.images.write import encode_image
image = read_image(sys.stdin.buffer)
sys.stdout.buffer.write(encode_image(make_output(image, image.rgb), "png"))
"""


def test_stdin_to_stdout_round_trip() -> None:
    src = FACES / "camera.png"
    done = subprocess.run([sys.executable, "-c", STDIO_SCRIPT], input=src.read_bytes(),
                          capture_output=True, check=True, timeout=120)
    with Image.open(io.BytesIO(done.stdout)) as out, Image.open(src) as ref:
        assert out.mode == "L"
        assert np.array_equal(np.asarray(out), np.asarray(ref))


def test_importing_image_io_does_not_import_torch_or_opencv() -> None:
    code = "import sys, elir_cli.images.read, elir_cli.images.write; print('torch' in sys.modules, 'cv2' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.split() == ["False", "False"]


def test_no_clobber_rename_refuses_a_file_that_appeared_meanwhile(tmp_path: Path) -> None:
    from elir_cli.atomicwrite import _link_no_clobber

    temp, target = tmp_path / ".o.png.tmp", tmp_path / "o.png"
    temp.write_bytes(b"new")
    target.write_bytes(b"someone else's")  # created after our existence check
    with pytest.raises(OutputExistsError):
        _link_no_clobber(temp, target)
    assert target.read_bytes() == b"someone else's"


def test_corrupt_exif_becomes_a_warning_not_noise_or_a_failure() -> None:
    buffer = io.BytesIO()
    Image.fromarray(random_rgb(4, 4)).save(buffer, "JPEG", exif=b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\xff\x12\x01")
    image = read_image(buffer.getvalue())
    assert image.exif is None
    assert any("Corrupt EXIF" in note for note in image.warnings)
    assert encode_image(image, "jpg")
