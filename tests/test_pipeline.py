"""The face pipeline end to end on real photos with the real detector."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import elir_cli
from elir_cli.errors import UsageError
from elir_cli.faces.paste import Canvas, crop_to_output, resize_background, soft_mask
from elir_cli.pipeline.restorer import restore_array
from tests.helpers.facephotos import FACE_PHOTOS, box_slice, collage, load, psnr, shared_detector


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


@pytest.mark.parametrize("name", FACE_PHOTOS)
def test_identity_restorer_gives_the_photo_back(name: str) -> None:
    rgb = load(name)
    result = restore_array(rgb, restorer=identity, detector=shared_detector())
    assert len(result.faces) == 1
    assert psnr(result.array, rgb) >= 45.0
    for face in result.faces:
        assert psnr(result.array[box_slice(face.box, rgb.shape)], rgb[box_slice(face.box, rgb.shape)]) >= 40.0
        assert face.matrix is not None and face.matrix.shape == (2, 3)


@pytest.mark.parametrize("upscale,face_db", [(1, 40.0), (2, 37.0)])
def test_identity_on_the_collage(upscale: int, face_db: float) -> None:
    """Nine faces, rotated, scaled, at the borders. At upscale 2 the reference is
    the Lanczos-resized photo, so the bound measures two resamplers' difference."""
    canvas, _ = collage()
    result = restore_array(np.array(canvas), restorer=identity, upscale=upscale, batch_size=4,
                           detector=shared_detector())
    reference = resize_background(np.array(canvas), upscale)
    assert result.array.shape == (canvas.shape[0] * upscale, canvas.shape[1] * upscale, 3)
    assert len(result.faces) == 9
    assert psnr(result.array, reference) >= 45.0
    for face in result.faces:
        sl = box_slice(tuple(upscale * v for v in face.box), reference.shape)
        assert psnr(result.array[sl], reference[sl]) >= face_db


@pytest.mark.parametrize("name", ["astronaut.png", "grace_hopper.jpg"])
def test_constant_restorer_covers_the_face_and_stops_short_of_the_background(name: str) -> None:
    rgb = load(name)
    result = restore_array(rgb, restorer=lambda x: torch.full_like(x, 0.5), detector=shared_detector())
    face = result.faces[0]
    inside = result.array[box_slice(face.box, rgb.shape)]
    assert (np.abs(inside - 0.5).max(axis=2) < 2e-3).mean() >= 0.99  # the face box is covered
    changed = np.abs(result.array - rgb).max(axis=2) > 1e-4
    ys, xs = np.nonzero(changed)
    x0, y0, x1, y1 = face.box
    w, h = x1 - x0, y1 - y0
    # measured: the pasted region reaches 16-28 % of the box size beyond it
    assert xs.min() > x0 - 0.4 * w and xs.max() < x1 + 0.4 * w
    assert ys.min() > y0 - 0.4 * h and ys.max() < y1 + 0.4 * h
    # and is well inside the aligned crop's footprint (which holds hair and background)
    footprint = 512 ** 2 / np.linalg.det(face.matrix[:, :2])
    assert changed.sum() < 0.85 * footprint  # measured 0.79


def test_overlapping_faces_blend_in_any_order() -> None:
    size = 64
    matrices = [np.array([[1.0, 0, -10], [0, 1.0, -20]]), np.array([[1.0, 0, -40], [0, 1.0, -25]])]
    crops = [np.full((size, size, 3), 0.2, np.float32), np.full((size, size, 3), 0.8, np.float32)]
    results = []
    for order in ([0, 1], [1, 0]):
        canvas = Canvas(np.zeros((120, 140, 3), np.float32), (0, 0, 140, 120))
        for i in order:
            canvas.paste(crops[i], crop_to_output(matrices[i], 1))
        results.append(canvas.result())
    assert np.allclose(results[0], results[1], atol=1e-6)
    both = results[0][60, 55]  # inside both full-weight regions: the mean of the two faces
    assert np.allclose(both, 0.5, atol=1e-5)


def test_soft_mask_feather_scales_with_size() -> None:
    for size in (256, 512):
        row = soft_mask(size)[size // 2]
        ramp = np.count_nonzero((row > 0.01) & (row < 0.99))
        assert 0.08 * size < ramp < 0.16 * size


def test_batches_are_bounded_and_results_do_not_depend_on_them() -> None:
    canvas, _ = collage()
    sizes: list[int] = []

    def recording(x: torch.Tensor) -> torch.Tensor:
        sizes.append(x.shape[0])
        return x.flip(-1)  # any per-crop function

    a = restore_array(np.array(canvas), restorer=recording, batch_size=4, detector=shared_detector())
    assert sizes == [4, 4, 1]
    b = restore_array(np.array(canvas), restorer=recording, batch_size=9, detector=shared_detector())
    assert np.array_equal(a.array, b.array)
    sizes.clear()
    c = restore_array(np.array(canvas), restorer=recording, detector=shared_detector())  # default, on the CPU
    assert sizes == [1] * 9  # one face per call: batching is not faster on a CPU, only bigger
    assert np.array_equal(a.array, c.array)


def test_tiny_elir_model_is_the_default_restorer(tmp_path) -> None:
    from elir_cli.model.checkpoint import save_safetensors
    from elir_cli.model.elir import ElirModel
    from elir_cli.model.config import ModelConfig

    torch.manual_seed(0)
    config = ModelConfig(k_steps=2, sigma_s=0.1, hid_channels=32, n_mid_blocks=1, rrdb_c_hid=16, n_rrdb=1)
    path = save_safetensors(tmp_path / "tiny.safetensors", ElirModel(config).state_dict(), config,
                            task="denoising")
    rgb = load("grace_hopper.jpg")
    # fp32: exact equality across batch sizes (bf16 kernels need not be batch-invariant)
    run = lambda bs: restore_array(rgb, task="denoising", weights=str(path), seed=3,  # noqa: E731
                                   batch_size=bs, detector=shared_detector(), precision="fp32").array
    first, again = run(1), run(2)
    assert np.array_equal(first, again)  # seeded, and no state carried from one call to the next
    assert psnr(first, rgb) < 40  # the random model did change the face


def test_no_face_photo_passes_through() -> None:
    rgb = load("astronaut.png")[300:500, 300:500]
    result = restore_array(rgb, restorer=identity, detector=shared_detector())
    assert result.faces == []
    assert np.array_equal(result.array, rgb)
    up = restore_array(rgb, restorer=identity, upscale=3, detector=shared_detector())
    assert up.array.shape == (600, 600, 3)


def test_bsr_background_and_whole_image_tasks() -> None:
    rgb = load("grace_hopper.jpg")
    calls: list[tuple[int, ...]] = []

    def bg(x: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(x.shape))
        return x

    result = restore_array(rgb, restorer=identity, upscale=2, bg_task="bsr", bg_restorer=bg,
                           detector=shared_detector())
    assert result.array.shape == (1200, 1024, 3) and calls
    whole = restore_array(rgb, task="bsr", restorer=identity, upscale=1)
    assert whole.faces == [] and whole.array.shape == rgb.shape
    assert psnr(whole.array, rgb) > 30  # bicubic x4 then area x1/4 round trip
    denoise = restore_array(rgb, task="denoising", restorer=identity, whole_image=True)
    assert np.abs(denoise.array - rgb).max() < 1e-6


def test_aligned_input_skips_detection() -> None:
    rgb = load("astronaut.png")
    face = shared_detector().detect(rgb)[0]
    from elir_cli.faces.alignment import align_face, alignment_matrix

    crop = align_face(rgb, alignment_matrix(face.landmarks, 512), 512)
    result = restore_array(crop, restorer=identity, aligned=True)
    assert len(result.faces) == 1 and np.abs(result.array - crop).max() < 1e-5


def test_restore_image_pil_in_pil_out() -> None:
    image = Image.open("tests/data/photos/faces/camera.png")  # mode L
    result = elir_cli.restore_image(image, restorer=identity, detector=shared_detector())
    assert result.image.mode == "RGB" and result.image.size == image.size
    assert result.faces[0].to_dict()["index"] == 0


@pytest.mark.parametrize("options,option,match", [
    ({"upscale": 0}, "upscale", "upscale must be between 1 and 16, got 0"),
    ({"upscale": 2.5}, "upscale", "upscale must be a whole number"),
    ({"batch_size": 0}, "batch_size", "batch_size must be at least 1"),
    ({"bg_task": "bfr"}, "bg_task", "background task"),
    ({"mask": np.zeros((10, 10), bool)}, "task", "mask"),
    ({"aligned": True, "whole_image": True}, "aligned", "aligned and whole_image exclude each other"),
    ({"aligned": True, "face_indices": [0]}, "aligned",
     "aligned skips face detection, so face_indices would be ignored"),
    ({"whole_image": True, "max_faces": 1, "only_center_face": True}, "whole_image",
     "so max_faces, only_center_face would be"),
    ({"task": "bsr", "det_threshold": 0.5}, "det_threshold",
     "task bsr restores whole photos, without face detection, so det_threshold would be ignored"),
    ({"fidelity": 2.0}, "fidelity", "fidelity must be between 0 and 1, got 2.0"),
])
def test_bad_options_are_usage_errors(options: dict, option: str, match: str) -> None:
    """Errors carry the option and its value; the library's message names it as Python does."""
    with pytest.raises(UsageError, match=match) as caught:
        restore_array(load("astronaut.png"), restorer=identity, **options)
    assert caught.value.option == option
    if option in options:
        assert caught.value.value == options[option] or list(caught.value.value) == list(options[option])
    assert "--" not in str(caught.value) and "--" not in (caught.value.hint or "")


def test_inpainting_mask_must_fit_the_photo() -> None:
    with pytest.raises(UsageError, match="mask"):
        restore_array(load("astronaut.png"), task="inpainting", restorer=identity, mask=np.zeros((10, 10), bool))


def test_restorer_with_wrong_shape_is_an_error() -> None:
    with pytest.raises(ValueError, match="restorer must return"):
        restore_array(load("astronaut.png"), restorer=lambda x: x[:, :, :10], detector=shared_detector())


def _eight_bit(rgb: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


@pytest.mark.parametrize("case", ["one face", "nine faces", "two overlapping faces"])
def test_eight_bit_path_matches_the_float_path_and_writes_only_the_boxes(case: str) -> None:
    """restore_faces_uint8 (video frames): the float path's pixels within one 8-bit step,
    outside the faces' paste boxes the input's bytes, and the input untouched."""
    from elir_cli.faces.paste import boxes_overlap, paste_box
    from elir_cli.pipeline.photo import restore_faces_uint8

    from dataclasses import replace

    rgb8 = _eight_bit(np.array(collage()[0]) if case == "nine faces" else load("grace_hopper.jpg"))
    before = rgb8.copy()
    rgb = rgb8.astype(np.float32) / 255.0
    faces = shared_detector().detect(rgb8)
    assert len(faces) == (9 if case == "nine faces" else 1)
    if case == "two overlapping faces":  # the same face again, 40 px to the right
        faces = [faces[0], replace(faces[0], landmarks=faces[0].landmarks + np.array([40.0, 0.0]))]

    def darken(x: torch.Tensor) -> torch.Tensor:
        return x * 0.5 + 0.1 * torch.linspace(0, 1, x.shape[-1])

    whole = _eight_bit(restore_array(rgb, restorer=darken, faces=faces).array)
    out, pasted = restore_faces_uint8(rgb8, faces, task="bfr", restorer=darken, batch_size=4)
    assert np.array_equal(rgb8, before)
    difference = np.abs(out.astype(int) - whole.astype(int))
    assert difference.max() <= 1 and difference.mean() < 1e-3, (difference.max(), difference.mean())
    boxes = [paste_box(crop_to_output(f.matrix, 1), 512, rgb8.shape[:2]) for f in pasted]
    assert boxes_overlap(boxes) == (case == "two overlapping faces")
    inside = np.zeros(rgb8.shape[:2], bool)
    for x0, y0, x1, y1 in boxes:
        inside[y0:y1, x0:x1] = True
    assert np.array_equal(out[~inside], rgb8[~inside])
    assert (out[inside] != rgb8[inside]).any(axis=1).mean() > 0.3  # the faces were pasted


def test_eight_bit_canvas_blends_overlapping_faces_in_any_order() -> None:
    from elir_cli.faces.paste import Uint8Canvas, paste_box

    matrices = [np.array([[1.0, 0, -10], [0, 1.0, -20]]), np.array([[1.0, 0, -40], [0, 1.0, -25]])]
    crops = [np.full((64, 64, 3), 0.2, np.float32), np.full((64, 64, 3), 0.8, np.float32)]
    to_out = [crop_to_output(m, 1) for m in matrices]
    boxes = [paste_box(m, 64, (120, 140)) for m in to_out]
    results = []
    for order in ([0, 1], [1, 0]):
        canvas = Uint8Canvas(np.zeros((120, 140, 3), np.uint8), boxes)
        for i in order:
            canvas.paste(crops[i], to_out[i])
        results.append(canvas.result())
    assert np.array_equal(results[0], results[1])
    assert np.abs(results[0][60, 55].astype(int) - 128).max() <= 1  # inside both: the mean of 0.2 and 0.8


def test_eight_bit_path_refuses_what_it_cannot_do() -> None:
    from elir_cli.errors import ImageError
    from elir_cli.pipeline.photo import restore_faces_uint8

    with pytest.raises(UsageError, match="scale 1"):
        restore_faces_uint8(np.zeros((8, 8, 3), np.uint8), [], task="sr", restorer=identity)
    with pytest.raises(ImageError, match="uint8"):
        restore_faces_uint8(np.zeros((8, 8, 3), np.float32), [], task="bfr", restorer=identity)
