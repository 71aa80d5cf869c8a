"""One video frame restored with the photo pipeline, from tracked and smoothed faces.

Face tasks: detect and choose faces as for a photo, hand them to the
:class:`~.tracking.FaceTracker`, and restore the frame given the smoothed
faces (so crops and paste masks follow the smoothed geometry): at the input's
size the frame stays 8-bit and only the faces' windows are read and their
paste boxes written (:func:`~elir_cli.pipeline.photo.restore_faces_uint8`);
with an upscale or a background model, :func:`~elir_cli.pipeline.photo.restore_array`. Each face's noise comes
from a generator seeded with the seed and its track id, fresh for every frame:
a track sees the same noise from its first frame to its last.

Without tracking (``tracking=False``, the baseline the flicker benchmark
compares with) every frame is restored exactly as a photo would be.

Whole-image tasks (bsr, ``--whole-image``) and ``--aligned`` restore every
frame with the same seeded noise.

Torch threads: only the model runs on torch's thread count; everything else
of a frame (detection, alignment, paste, conversions) runs on one thread.
Those are many small operations, and with OpenMP each one ends at a barrier
where the other thread spin-waits: when the decoder, the encoder or another
process holds a core, every barrier waits for a scheduler time slice.
Measured on the 2-core machine under load: a 720p detection took 10 s on two
threads and 0.2 s on one (see README "Video", speed).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from elir_cli.faces.detection import DEFAULT_THRESHOLD
from elir_cli.registry.tasks import get_task

from .detect import DETECT_EVERY, VideoDetector
from .tracking import FaceTracker

if TYPE_CHECKING:
    import torch

    from elir_cli.pipeline.restorer import PhotoRestorer

Restorer = Callable[["torch.Tensor"], "torch.Tensor"]
DEFAULT_VIDEO_SEED = 0  # video is always seeded, so a resumed run gives the frames of an uninterrupted one
TRACK_SEED_STRIDE = 1_000_003
OUTSIDE_MODEL_THREADS = 1


def _to_float(rgb8: np.ndarray) -> np.ndarray:
    return rgb8.astype(np.float32) * np.float32(1.0 / 255.0)


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block on ``count`` torch threads, then go back to the number before."""
    import torch

    before = torch.get_num_threads()
    if before == count:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def track_seed(seed: int, track_id: int) -> int:
    """The noise seed of one face track."""
    return (int(seed) * TRACK_SEED_STRIDE + int(track_id)) % (1 << 63)


@dataclass
class Timings:
    """Seconds spent per part of the work (the restore stage's side)."""

    detect: float = 0.0
    track: float = 0.0
    model: float = 0.0
    restore: float = 0.0  # the whole restore stage: detect + track + model + align/paste/convert
    full_detections: int = 0
    crop_detections: int = 0

    def to_json(self) -> dict[str, float]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in self.__dict__.items()}


@dataclass
class FrameResult:
    rgb: np.ndarray  # uint8 HxWx3
    faces: int
    tracks: list[int] = field(default_factory=list)


class FrameRestorer:
    """Restores frame after frame with one loaded model (held by a PhotoRestorer)."""

    def __init__(self, files: "PhotoRestorer", *, tracking: bool = True, restorer: Restorer | None = None,
                 tracker: FaceTracker | None = None, detect_every: int = DETECT_EVERY) -> None:
        self.files = files
        # The guard would change fidelity face by face and frame by frame: flicker. Videos report
        # each track's scores instead (restore_video says so in the record's warnings).
        self.settings = files.settings.replace(min_faithfulness=None)
        self.spec = get_task(self.settings.task)
        self.tracking = tracking
        self.plug_in = restorer
        self.seed = DEFAULT_VIDEO_SEED if self.settings.seed is None else int(self.settings.seed)
        self.tracker = tracker or FaceTracker()
        self.timings = Timings()
        self.detects = self.spec.kind == "face" and not self.settings.aligned
        self.detect_every = detect_every
        self._video_detector: VideoDetector | None = None
        self._model_threads: int | None = None  # torch's count when the first frame came
        # Tracked faces at the input's size without a background model: the frame
        # stays 8-bit; only the windows the crops read and the paste boxes are
        # touched (pipeline.photo.restore_faces_uint8).
        self.restore_regions = (self.settings.bg_task is None and self.spec.scale == 1
                                and self.settings.upscale in (None, 1))
        # Tracked faces are chosen by the tracker; the photo path then gets them without choices.
        self.tracked_settings = self.settings.replace(face_indices=None, max_faces=None, only_center_face=False,
                                                      min_face_size=0.0, det_threshold=None, detector=None)

    def restore(self, rgb8: np.ndarray, *, time_s: float, frame: int, default_dt: float) -> FrameResult:
        import torch

        if self._model_threads is None:
            self._model_threads = torch.get_num_threads()
        with torch_threads(OUTSIDE_MODEL_THREADS):
            return self._restore(rgb8, time_s=time_s, frame=frame, default_dt=default_dt)

    def _restore(self, rgb8: np.ndarray, *, time_s: float, frame: int, default_dt: float) -> FrameResult:
        from elir_cli.images.read import to_uint8
        from elir_cli.pipeline.photo import FaceCheck, restore_faces_uint8, restore_photo

        started = time.perf_counter()
        s = self.settings
        common: dict[str, Any] = dict(device=self.files.runtime.device, batch_size=self.files.batch_size,
                                      bg_restorer=self._bg_restorer())
        track_ids: list[int] = []
        if self.detects and self.tracking:
            faces, track_ids = self._tracked_faces(rgb8, time_s, frame, default_dt)
            restorer = self._timed(self.plug_in or self._track_restorer(track_ids))
            if self.restore_regions:
                out, pasted = restore_faces_uint8(rgb8, faces, task=s.task, restorer=restorer,
                                                  batch_size=self.files.batch_size, device=self.files.runtime.device,
                                                  check=FaceCheck.of(s))
                self.tracker.record_scores(track_ids, pasted)
                self.timings.restore += time.perf_counter() - started
                return FrameResult(rgb=out, faces=len(faces), tracks=track_ids)
            result = restore_photo(_to_float(rgb8), self.tracked_settings, restorer=restorer, faces=faces, **common)
            self.tracker.record_scores(track_ids, result.faces)
        else:
            restorer = self._timed(self.plug_in or self._frame_restorer())
            result = restore_photo(_to_float(rgb8), s, restorer=restorer,
                                   detector=self.files.detector if self.detects else None, **common)
        out = to_uint8(result.array)
        self.timings.restore += time.perf_counter() - started
        return FrameResult(rgb=out, faces=len(result.faces), tracks=track_ids)

    def _tracked_faces(self, rgb8: np.ndarray, time_s: float, frame: int, default_dt: float):  # type: ignore[no-untyped-def]
        """Faces from the whole frame or from crops around the tracks (:mod:`.detect`), then tracked."""
        from elir_cli.faces.detection import Face, select_faces

        s = self.settings
        height, width = rgb8.shape[:2]

        def choose(found: list[Face]) -> list[Face]:
            return select_faces(found, image_size=(width, height), min_face_size=s.min_face_size,
                                only_center_face=s.only_center_face, max_faces=s.max_faces,
                                face_indices=s.face_indices)

        if self._video_detector is None:
            self._video_detector = VideoDetector(self.files.detector, threshold=s.det_threshold or DEFAULT_THRESHOLD,
                                                 every=self.detect_every)
        t0 = time.perf_counter()
        cut, thumb = self.tracker.cut_ahead(rgb8)
        t1 = time.perf_counter()
        chosen = self._video_detector.detect(rgb8, frame, self.tracker.tracks, cut=cut, choose=choose)
        t2 = time.perf_counter()
        tracked = self.tracker.update(chosen, rgb8, time_s, frame, default_dt, thumb=thumb)
        self.timings.detect += t2 - t1
        self.timings.track += (t1 - t0) + (time.perf_counter() - t2)
        self.timings.full_detections = self._video_detector.full_detections
        self.timings.crop_detections = self._video_detector.crop_detections
        return [t.face for t in tracked], [t.track_id for t in tracked]

    def _frame_restorer(self) -> Restorer:
        from elir_cli.pipeline.photo import model_restorer

        s = self.settings
        return model_restorer(self.files.model, seed=self.seed, steps=s.steps, fidelity=s.fidelity)

    def _track_restorer(self, track_ids: list[int]) -> Restorer:
        """Restores crops in the order of ``track_ids``, each with its track's noise."""
        import torch

        model = self.files.model
        param = next(model.parameters())
        s = self.settings
        pending = list(track_ids)

        def restore(x: "torch.Tensor") -> "torch.Tensor":
            out = []
            for crop in x.split(1):
                generator = torch.Generator(device=param.device).manual_seed(track_seed(self.seed, pending.pop(0)))
                out.append(model.restore(crop.to(device=param.device, dtype=param.dtype), generator=generator,
                                         steps=s.steps, fidelity=s.fidelity))
            return torch.cat(out)

        return restore

    def _bg_restorer(self) -> Restorer | None:
        if not self.settings.bg_task:
            return None
        from elir_cli.pipeline.photo import model_restorer

        return self._timed(model_restorer(self.files.bg_model, seed=self.seed))

    def _timed(self, restorer: Restorer) -> Restorer:
        def run(x: "torch.Tensor") -> "torch.Tensor":
            t0 = time.perf_counter()
            try:
                with torch_threads(self._model_threads or OUTSIDE_MODEL_THREADS):
                    return restorer(x)
            finally:
                self.timings.model += time.perf_counter() - t0

        return run
