"""The flicker measure: mean absolute frame-to-frame change inside face boxes.

For each pair of consecutive frames, the mean absolute difference (0..255 per
channel) of the later frame and the one before, over the boxes of the faces
found in the reference video's later frame; averaged over all pairs. The boxes
come from one video (the input) so that input, untracked and tracked outputs
are measured over the same pixels. Real motion counts too, equally in all of
them; what a restorer adds on top of it is flicker.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from .media import require_av

if TYPE_CHECKING:
    from elir_cli.faces.detection import FaceDetector

Box = tuple[int, int, int, int]


def video_frames(path: Path) -> Iterator[np.ndarray]:
    """Decoded RGB uint8 frames of a video, one at a time."""
    av = require_av()
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


def face_boxes(path: Path, detector: "FaceDetector") -> list[list[Box]]:
    """Integer face boxes per frame of ``path``."""
    out = []
    for rgb in video_frames(path):
        height, width = rgb.shape[:2]
        boxes = []
        for face in detector.detect(rgb):
            x0, y0, x1, y1 = face.box
            boxes.append((max(0, int(x0)), max(0, int(y0)), min(width, int(np.ceil(x1))), min(height, int(np.ceil(y1)))))
        out.append(boxes)
    return out


def flicker(path: Path, boxes: Sequence[Sequence[Box]], *, scale: int = 1) -> float:
    """The measure for one video, over ``boxes`` (per frame, in input pixels; ``scale``: output/input)."""
    total, pairs = 0.0, 0
    before: np.ndarray | None = None
    for index, rgb in enumerate(video_frames(path)):
        frame = rgb.astype(np.float32)
        if before is not None and index < len(boxes) and boxes[index]:
            diffs = [np.abs(frame[y0 * scale:y1 * scale, x0 * scale:x1 * scale]
                            - before[y0 * scale:y1 * scale, x0 * scale:x1 * scale]).mean()
                     for x0, y0, x1, y1 in boxes[index] if x1 > x0 and y1 > y0]
            if diffs:
                total += float(np.mean(diffs))
                pairs += 1
        before = frame
    return total / pairs if pairs else 0.0
