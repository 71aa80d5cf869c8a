"""Alignment: the similarity fit, the template, the border handling, the task inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from elir_cli.faces.alignment import (FFHQ_TEMPLATE_512, align_face, alignment_matrix, apply_affine, face_template,
                                masked_input, similarity_transform, sr_input, warp_affine)
from tests.helpers.facephotos import collage, load, shared_detector


def test_similarity_recovers_a_known_transform() -> None:
    a = np.deg2rad(23.0)
    true = np.array([[1.7 * np.cos(a), -1.7 * np.sin(a), 12.5], [1.7 * np.sin(a), 1.7 * np.cos(a), -4.0]])
    src = np.random.default_rng(1).random((5, 2)) * 100
    assert np.allclose(similarity_transform(src, apply_affine(true, src)), true, atol=1e-9)


def test_template_scales_with_size() -> None:
    assert np.allclose(face_template(512), FFHQ_TEMPLATE_512)
    assert np.allclose(face_template(256), FFHQ_TEMPLATE_512 / 2)


PROFILE_FACE_CENTRE = (1062, 655)  # camera.png's three-quarter profile in the collage


@pytest.mark.parametrize("size", [512, 256])
def test_detected_landmarks_fall_on_the_template(size: int) -> None:
    """Faces of the collage (rotated, scaled, at the border): after alignment the
    landmarks sit on the template, and the detector finds them there again.

    Measured at 512 on the frontal faces: fit <= 17 px, re-detection <= 39 px
    (the smallest, most rotated face); the profile face fits to 55 px.
    """
    canvas, _ = collage()
    det = shared_detector()
    for face in det.detect(canvas):
        matrix = alignment_matrix(face.landmarks, size)
        fit = np.hypot(*(apply_affine(matrix, face.landmarks) - face_template(size)).T).max()
        again = det.detect(align_face(canvas, matrix, size))
        assert len(again) >= 1
        centre = min(again, key=lambda f: np.hypot(f.centre[0] - size / 2, f.centre[1] - size / 2))
        redetect = np.hypot(*(centre.landmarks - face_template(size)).T).max()
        if np.hypot(face.centre[0] - PROFILE_FACE_CENTRE[0], face.centre[1] - PROFILE_FACE_CENTRE[1]) < 30:
            assert fit < 0.12 * size
            continue
        # crop px; the template's eye distance is 0.25 * size
        assert fit < 0.04 * size, (face.centre, fit)
        assert redetect < 0.09 * size, (face.centre, redetect)


def test_face_at_the_border_pulls_in_no_band() -> None:
    rgb = load("grace_hopper.jpg")[:, 200:]  # the face is cut by the left edge
    face = shared_detector().detect(rgb)[0]
    matrix = alignment_matrix(face.landmarks, 512)
    crop = align_face(rgb, matrix, 512)
    zero = warp_affine(rgb, matrix, (512, 512), border="zero")
    dark_cols = lambda img: int((img.max(axis=(0, 2)) < 1e-3).sum())  # noqa: E731
    assert dark_cols(zero) > 10  # the naive warp has a black band ...
    assert dark_cols(crop) == 0  # ... the reflecting one has none
    assert (np.abs(crop - 135 / 255).max(axis=2) < 1e-3).mean() < 0.01  # nor a grey fill


def test_warp_reads_only_what_it_needs_and_antialiases() -> None:
    rng = np.random.default_rng(0)
    big = rng.random((2000, 2000, 3)).astype(np.float32)
    # shrink a 1000-px region to 100 px: mean of white noise stays, variance drops (averaged)
    matrix = np.array([[0.1, 0.0, -50.0], [0.0, 0.1, -50.0]])
    out = warp_affine(big, matrix, (100, 100), interpolation="cubic")
    assert abs(out.mean() - 0.5) < 0.01
    assert out.std() < 0.1  # point sampling would keep std 0.29


def test_sr_input_is_small_crop_upsampled_nearest_exact() -> None:
    crop = load("astronaut.png")[:256, :256]
    x = sr_input(crop, 8)
    small = x[::8, ::8]
    ref = torch.nn.functional.interpolate(torch.from_numpy(small).permute(2, 0, 1)[None], scale_factor=8,
                                          mode="nearest-exact")[0].permute(1, 2, 0).numpy()
    assert x.shape == (256, 256, 3)
    assert np.array_equal(x, ref)
    assert abs(float(small.mean()) - float(crop.mean())) < 1e-3  # area-averaged, not point-sampled


def test_masked_pixels_are_zero() -> None:
    rgb = load("astronaut.png")
    face = shared_detector().detect(rgb)[0]
    matrix = alignment_matrix(face.landmarks, 256)
    mask = np.zeros(rgb.shape[:2], bool)
    mask[:, :225] = True  # left of the nose
    crop = align_face(rgb, matrix, 256)
    out = masked_input(crop, mask, matrix)
    zeros = (out.max(axis=2) == 0)
    assert 0.2 < zeros.mean() < 0.8
    assert np.array_equal(out[~zeros], crop[~zeros])
