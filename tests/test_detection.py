"""The bundled RetinaFace on real photos and on collages with known faces."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from elir_cli.faces.detection import Face, FaceDetector, select_faces
from elir_cli.errors import CheckpointError, UsageError
from tests.helpers.facephotos import FACE_PHOTOS, collage, load, shared_detector


@pytest.mark.parametrize("name", FACE_PHOTOS)
def test_finds_the_one_face_of_each_photo(name: str) -> None:
    faces = shared_detector().detect(load(name))
    assert len(faces) == 1
    face = faces[0]
    x0, y0, x1, y1 = face.box
    # all five landmarks inside the box, eyes above the mouth
    assert ((face.landmarks[:, 0] > x0) & (face.landmarks[:, 0] < x1)).all()
    assert ((face.landmarks[:, 1] > y0) & (face.landmarks[:, 1] < y1)).all()
    assert face.landmarks[:2, 1].max() < face.landmarks[3:, 1].min()


def test_uint8_and_float_input_agree() -> None:
    rgb = load("astronaut.png")
    a = shared_detector().detect(rgb)[0]
    b = shared_detector().detect((rgb * 255 + 0.5).astype(np.uint8))[0]
    assert np.abs(a.landmarks - b.landmarks).max() < 0.5


def test_collage_every_face_found_with_landmarks_on_target() -> None:
    canvas, truths = collage()
    faces = shared_detector().detect(canvas)
    assert len(faces) == len(truths)
    for truth in truths:
        eye_distance = float(np.hypot(*(truth[1] - truth[0])))
        best = min(faces, key=lambda f: np.abs(f.landmarks - truth).max())
        error = np.hypot(*(best.landmarks - truth).T).max()
        # within a third of the eye distance: each point lands on its eye, nose, mouth corner
        assert error < 0.35 * eye_distance, (truth, best.landmarks)


def test_faces_numbered_left_to_right() -> None:
    faces = shared_detector().detect(collage()[0])
    assert [f.index for f in faces] == list(range(len(faces)))
    xs = [round(f.centre[0]) for f in faces]
    assert xs == sorted(xs)


def test_numbering_ties_go_top_to_bottom() -> None:
    lm = np.zeros((5, 2))
    a = Face(index=-1, box=(10, 50, 30, 70), score=0.9, landmarks=lm)
    b = Face(index=-1, box=(10, 10, 30, 30), score=0.9, landmarks=lm)
    from elir_cli.faces.detection import number_faces

    ordered = number_faces([a, b])
    assert [f.box[1] for f in ordered] == [10, 50]


def test_no_face_is_an_empty_result() -> None:
    rgb = load("astronaut.png")[300:500, 300:500]  # helmet and suit, no face
    assert shared_detector().detect(rgb) == []
    noise = np.random.default_rng(0).random((240, 320, 3), dtype=np.float32)
    assert shared_detector().detect(noise) == []


def test_detector_keeps_no_state_between_images() -> None:
    det = shared_detector()
    first = det.detect(load("grace_hopper.jpg"))
    det.detect(collage()[0])
    again = det.detect(load("grace_hopper.jpg"))
    assert np.array_equal(first[0].landmarks, again[0].landmarks)


def test_big_photo_is_detected_downscaled() -> None:
    import cv2

    rgb = cv2.resize(load("grace_hopper.jpg"), None, fx=4.5, fy=4.5, interpolation=cv2.INTER_LINEAR)
    faces = shared_detector().detect(rgb)  # 2700 px long side: detected at 1600
    small = shared_detector().detect(load("grace_hopper.jpg"))[0]
    assert len(faces) == 1
    # a 480-px face at the edge of the anchors' range: landmarks within 20 % of the eye distance
    assert np.abs(faces[0].landmarks / 4.5 - small.landmarks).max() < 0.2 * small.eye_distance


def _faces() -> list[Face]:
    lm = np.array([[0, 0], [10, 0], [5, 5], [2, 8], [8, 8]], dtype=float)
    boxes = [(0, 0, 20, 20), (40, 40, 100, 100), (80, 0, 90, 10), (200, 0, 240, 40)]
    scales = [1.0, 3.0, 0.5, 2.0]
    return [Face(index=i, box=b, score=0.99, landmarks=lm * s) for i, (b, s) in enumerate(zip(boxes, scales))]


def test_select_faces_options() -> None:
    faces = _faces()
    size = (240, 140)
    assert [f.index for f in select_faces(faces, image_size=size, min_face_size=10)] == [0, 1, 3]
    assert [f.index for f in select_faces(faces, image_size=size, face_indices=[3, 0, 9])] == [0, 3]
    assert [f.index for f in select_faces(faces, image_size=size, only_center_face=True)] == [1]
    assert [f.index for f in select_faces(faces, image_size=size, max_faces=2)] == [1, 3]
    assert select_faces([], image_size=size, only_center_face=True) == []
    with pytest.raises(UsageError):
        select_faces(faces, image_size=size, max_faces=0)
    with pytest.raises(UsageError):
        select_faces(faces, image_size=size, face_indices=[-1])


def test_bad_detector_weights_are_refused(tmp_path) -> None:
    bad = tmp_path / "bad.pth"
    torch.save({"body.stage1.0.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(CheckpointError):
        FaceDetector(weights=bad)
    with pytest.raises(UsageError):
        FaceDetector("no-such-detector")
    with pytest.raises(UsageError):
        shared_detector().detect(load("camera.png"), threshold=1.5)
