"""Face detection for video: the whole frame now and then, small crops around the tracks in between.

A full 720p RetinaFace pass costs about a quarter of a bf16 bfr face on
two cores (0.2 s on one thread), so detecting every frame in full kept a
fifth or more of a video's time outside the model. Between full detections each live track is detected
again in a crop around its last box (the box widened by :data:`CROP_MARGIN`
on every side), scaled so the face is at most :data:`CROP_FACE_SIDE` pixels:
a few percent of a full frame's pixels. Every face restored on a frame still
has the landmarks of a detection run on that frame; only where the detector
looks changes.

Landmarks of a face always come from such a face-sized crop, also on the
frames of a full detection (its faces are detected once more in their
crops): RetinaFace's landmarks move by up to a tenth of the eye distance
when the same face is seen at another scale, so mixing full-frame and crop
landmarks would jump at every full detection. Crops make the scale the same
on every frame, whatever the face's size.

A full detection runs on the first frame, every :data:`DETECT_EVERY` frames
(faces that enter the picture are found within that many frames), at a
scene cut, when there is no live track, and when a track's crop shows no
face (it moved too fast or left): the schedule depends only on the frame
number and the tracker's state, so a resumed run detects on the same frames.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from elir_cli.faces.detection import Face

from .tracking import MIN_IOU, Track, iou

if TYPE_CHECKING:
    from elir_cli.faces.detection import FaceDetector

DETECT_EVERY = 12  # frames between full detections
CROP_MARGIN = 0.4  # the crop extends the box by this share of its long side on every side
CROP_FACE_SIDE = 160  # px: a face is detected at most this large in its crop (smaller ones at full size)


def crop_window(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """The integer crop (x0, y0, x1, y1) around ``box``, widened by :data:`CROP_MARGIN`, inside the frame."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0, 1.0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = side * (0.5 + CROP_MARGIN)
    return (max(0, int(np.floor(cx - half))), max(0, int(np.floor(cy - half))),
            min(width, int(np.ceil(cx + half))), min(height, int(np.ceil(cy + half))))


def detect_in_crop(detector: "FaceDetector", rgb: np.ndarray, box: Sequence[float], *,
                   threshold: float) -> Face | None:
    """The face overlapping ``box`` best, detected in a crop around it, in frame pixels (or None)."""
    import cv2

    height, width = rgb.shape[:2]
    a, b, c, d = crop_window(box, width, height)
    if c - a < 2 or d - b < 2:
        return None
    side = max(box[2] - box[0], box[3] - box[1], 1.0)
    scale = min(1.0, CROP_FACE_SIDE / side)
    crop = rgb[b:d, a:c]
    if scale < 1.0:
        crop = cv2.resize(crop, (max(1, round((c - a) * scale)), max(1, round((d - b) * scale))),
                          interpolation=cv2.INTER_AREA)
    sx, sy = (c - a) / crop.shape[1], (d - b) / crop.shape[0]
    best: Face | None = None
    best_overlap = MIN_IOU
    for face in detector.detect(np.ascontiguousarray(crop), threshold=threshold):
        fx0, fy0, fx1, fy1 = face.box
        frame_box = (a + fx0 * sx, b + fy0 * sy, a + fx1 * sx, b + fy1 * sy)
        overlap = iou(frame_box, box)
        if overlap >= best_overlap:
            best_overlap = overlap
            landmarks = np.asarray(face.landmarks, dtype=np.float64) * np.array([sx, sy]) + np.array([a, b])
            best = replace(face, box=frame_box, landmarks=landmarks)
    return best


class VideoDetector:
    """Decides per frame where to detect (see the module docstring) and returns the frame's faces."""

    def __init__(self, detector: "FaceDetector", *, threshold: float, every: int = DETECT_EVERY) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.detector = detector
        self.threshold = threshold
        self.every = every
        self.full_detections = 0
        self.crop_detections = 0

    def full_due(self, frame: int, tracks: Sequence[Track], cut: bool) -> bool:
        return cut or not tracks or frame % self.every == 0

    def detect(self, rgb: np.ndarray, frame: int, tracks: Sequence[Track], *, cut: bool,
               choose: Callable[[list[Face]], list[Face]]) -> list[Face]:
        """The faces of this frame; ``choose`` applies the user's face choice to a full detection."""
        if not self.full_due(frame, tracks, cut):
            found = [self._crop(rgb, t.box) for t in tracks]
            if all(face is not None for face in found):
                return [f for f in found if f is not None]
        return self._full(rgb, choose)

    def _full(self, rgb: np.ndarray, choose: Callable[[list[Face]], list[Face]]) -> list[Face]:
        self.full_detections += 1
        chosen = choose(self.detector.detect(rgb, threshold=self.threshold))
        out = []
        for face in chosen:
            again = self._crop(rgb, face.box)
            out.append(face if again is None else replace(again, index=face.index, score=face.score))
        return out

    def _crop(self, rgb: np.ndarray, box: Sequence[float]) -> Face | None:
        self.crop_detections += 1
        return detect_in_crop(self.detector, rgb, box, threshold=self.threshold)
