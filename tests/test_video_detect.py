"""Video detection: crops around tracks between full detections, and torch threads outside the model.

Real RetinaFace on the project's photos and on short clips made with the
ffmpeg executable (see ``tests/helpers/videoclips.py``); a stand-in crop restorer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.video
pytest.importorskip("av", reason="the video tests need PyAV (pip install 'elir-cli[video,test]')")

from tests.helpers.torch_threads import one_torch_thread  # noqa: E402,F401 (an autouse fixture)
from tests.helpers.videoclips import ffmpeg_exe, make_clip  # noqa: E402
from tests.helpers.video_worker import pattern_restorer  # noqa: E402

from elir_cli.pipeline.settings import RestoreSettings
from elir_cli.video.detect import detect_in_crop  # noqa: E402
from elir_cli.video.stream import VideoOptions, restore_video  # noqa: E402
from elir_cli.video.tracking import iou  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "tests" / "data" / "photos" / "faces" / "astronaut.png"
SETTINGS = RestoreSettings(task="denoising", seed=0)
needs_ffmpeg = pytest.mark.skipif(ffmpeg_exe() is None, reason="no ffmpeg executable to make test clips "
                                  "(install imageio-ffmpeg or put ffmpeg on PATH)")


@pytest.fixture(scope="module")
def detector():
    from elir_cli.faces.detection import FaceDetector

    return FaceDetector()


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(PHOTO).convert("RGB"))


def test_a_crop_finds_the_face_of_the_full_frame_in_frame_pixels(detector, photo: np.ndarray) -> None:
    (full,) = detector.detect(photo)
    pad = (37, 23)  # x, y: the same face elsewhere in a bigger frame
    padded = np.pad(photo, ((pad[1], 40), (pad[0], 50), (0, 0)))
    for frame, offset in ((photo, np.zeros(2)), (padded, np.array(pad, dtype=float))):
        box = np.array(full.box) + np.tile(offset, 2)
        found = detect_in_crop(detector, frame, tuple(box), threshold=0.9)
        assert found is not None
        assert iou(found.box, tuple(box)) > 0.8
        error = np.abs(found.landmarks - (full.landmarks + offset)).max() / full.eye_distance
        assert error < 0.15, error  # the same landmarks, mapped back from the crop
    far = (0.0, 0.0, 60.0, 60.0)  # a corner with no face
    assert iou(far, full.box) == 0
    assert detect_in_crop(detector, photo, far, threshold=0.9) is None


@needs_ffmpeg
@pytest.mark.parametrize("every", [8, 1])
def test_full_detections_only_every_n_frames(tmp_path: Path, every: int) -> None:
    src = make_clip(tmp_path / "clip.mp4", seconds=1.6, fps=10, audio=None)
    record = restore_video(src, tmp_path / "out.mp4", settings=SETTINGS, restorer=pattern_restorer(),
                           options=VideoOptions(detect_every=every))
    assert record.frames == 16 and min(record.faces_per_frame) == 1
    full, crops = record.timings["full_detections"], record.timings["crop_detections"]
    if every == 1:
        assert full == 16
    else:
        assert 2 <= full <= 4, record.timings  # frames 0 and 8 (+ a fallback when a crop misses)
        assert crops >= 16, record.timings  # every frame's face from a crop
    assert [t["id"] for t in record.tracks] == [0]


@needs_ffmpeg
def test_only_the_model_runs_on_torchs_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from elir_cli.faces.detection import FaceDetector

    seen: dict[str, set[int]] = {"detect": set(), "model": set()}
    detect = FaceDetector.detect

    def spy_detect(self, rgb, **kw):  # type: ignore[no-untyped-def]
        seen["detect"].add(torch.get_num_threads())
        return detect(self, rgb, **kw)

    stand_in = pattern_restorer()

    def spy_model(x: torch.Tensor) -> torch.Tensor:
        seen["model"].add(torch.get_num_threads())
        return stand_in(x)

    monkeypatch.setattr(FaceDetector, "detect", spy_detect)
    src = make_clip(tmp_path / "clip.mp4", seconds=0.5, fps=10, audio=None)
    torch.set_num_threads(2)
    restore_video(src, tmp_path / "out.mp4", settings=SETTINGS, restorer=spy_model)
    assert seen == {"detect": {1}, "model": {2}}
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("where", ["inside", "at the edge"])
def test_restoring_the_faces_region_gives_the_whole_frames_result(photo: np.ndarray, where: str) -> None:
    """The 8-bit path (only the crops' windows read, only the paste boxes written) gives the
    whole-frame float path's pixels, also where the crop is reflected at the frame's edge."""
    from elir_cli.pipeline.restorer import PhotoRestorer
    from elir_cli.video.frames import FrameRestorer

    if where == "inside":
        frame = np.ascontiguousarray(np.pad(photo, ((150, 170), (260, 240), (0, 0)), mode="edge"))
    else:  # the face's crop reaches past the left and top edges (reflected there)
        frame = np.ascontiguousarray(np.pad(photo[60:, 90:], ((0, 200), (0, 300), (0, 0)), mode="edge"))
    outputs = {}
    for regions in (True, False):
        restorer = FrameRestorer(PhotoRestorer(SETTINGS), restorer=pattern_restorer())
        restorer.restore_regions = regions
        outputs[regions] = restorer.restore(frame, time_s=0.0, frame=0, default_dt=0.1)
    region, whole = outputs[True], outputs[False]
    assert region.faces == whole.faces == 1
    difference = np.abs(region.rgb.astype(int) - whole.rgb.astype(int))
    assert difference.max() <= 1 and difference.mean() < 1e-3, (difference.max(), difference.mean())
    assert (whole.rgb != frame).any(axis=2).mean() > 0.01  # the face was restored (its crop changed)
