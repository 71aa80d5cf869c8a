"""Faces tracked across frames: an id per track, smoothed landmarks, resets at scene cuts.

Each frame's detections are matched to the tracks of the frame before by box
overlap (IoU, greedy, best pairs first); a detection left over starts a new
track with the next id. The 5 landmarks of a track go through a One-Euro
filter (Casiez et al., CHI 2012): a low-pass filter whose cut-off rises with
the landmarks' speed, so a still face stops jittering while a moving face is
followed with little lag. Speeds are measured in eye distances per second, so
the filter behaves the same at every resolution. The filter is causal (it only
sees the past), so it runs while streaming.

A track that misses a detection is kept for :data:`MAX_COAST` frames at its
last smoothed place (detectors blink on hard frames; pasting nothing for one
frame is the worst flicker of all). A scene cut (the mean absolute difference
of small grey thumbnails of consecutive frames above :data:`CUT_THRESHOLD`)
ends every track.

The whole state is plain numbers (:meth:`FaceTracker.state`), so a resumed run
continues exactly where the interrupted one stopped.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from elir_cli.faces.detection import Face

MIN_IOU = 0.3
MAX_COAST = 2  # frames a track is kept without a detection
MIN_CUTOFF = 0.5  # Hz: the filter's cut-off for a still face
BETA = 2.0  # cut-off increase (Hz) per eye distance per second of speed
DERIVATIVE_CUTOFF = 1.0  # Hz
THUMB_SIZE = 48
CUT_THRESHOLD = 0.12  # mean absolute difference in [0,1] of consecutive thumbnails


@dataclass
class Track:
    id: int
    box: tuple[float, float, float, float]  # last detected box
    landmarks: np.ndarray  # (5,2) smoothed
    speed: np.ndarray  # (5,2) smoothed derivative, px/s
    time: float
    missed: int = 0
    first_frame: int = 0
    last_frame: int = 0
    frames: int = 0  # frames with a detection
    # Faithfulness of the track's restored faces (elir_cli.pipeline.faithfulness), summed over frames.
    scored: int = 0
    db_sum: float = 0.0
    db_min: float | None = None
    delta_e_sum: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "box": list(self.box), "landmarks": self.landmarks.tolist(),
                "speed": self.speed.tolist(), "time": self.time, "missed": self.missed,
                "first_frame": self.first_frame, "last_frame": self.last_frame, "frames": self.frames,
                "scored": self.scored, "db_sum": self.db_sum, "db_min": self.db_min, "delta_e_sum": self.delta_e_sum}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Track":
        return cls(id=int(data["id"]), box=tuple(data["box"]),  # type: ignore[arg-type]
                   landmarks=np.array(data["landmarks"], dtype=np.float64),
                   speed=np.array(data["speed"], dtype=np.float64), time=float(data["time"]),
                   missed=int(data["missed"]), first_frame=int(data["first_frame"]),
                   last_frame=int(data["last_frame"]), frames=int(data["frames"]),
                   scored=int(data.get("scored", 0)), db_sum=float(data.get("db_sum", 0.0)),
                   db_min=data.get("db_min"), delta_e_sum=float(data.get("delta_e_sum", 0.0)))


@dataclass(frozen=True)
class TrackedFace:
    """A face to restore in this frame: its track and the smoothed face (detected or coasting)."""

    track_id: int
    face: Face
    detected: bool


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def thumbnail(rgb: np.ndarray) -> np.ndarray:
    """A small grey uint8 picture of a frame, for scene-cut detection."""
    import cv2

    # shrink first, then average the channels: a whole-frame mean over the
    # channel axis took ~0.1 s a 720p frame. Every few pixels are enough for
    # the average of a 48 px thumbnail: an area resize of the whole 720p frame
    # took 2.3-3.3 ms, of every 3rd pixel 1.4 ms (thumbnails 0.7 % apart,
    # against a cut threshold of 12 %).
    step = max(1, min(rgb.shape[:2]) // (4 * THUMB_SIZE))
    sampled = np.ascontiguousarray(rgb[::step, ::step])
    small = cv2.resize(sampled if rgb.dtype == np.uint8 else sampled.astype(np.float32), (THUMB_SIZE, THUMB_SIZE),
                       interpolation=cv2.INTER_AREA)
    grey = small.mean(axis=2, dtype=np.float32)
    if rgb.dtype != np.uint8:
        grey = grey * 255.0
    return np.round(np.clip(grey, 0, 255)).astype(np.uint8)


def is_cut(before: np.ndarray | None, after: np.ndarray) -> bool:
    if before is None:
        return False
    return float(np.abs(before.astype(np.float32) - after.astype(np.float32)).mean()) / 255.0 > CUT_THRESHOLD


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class FaceTracker:
    """Matches faces frame to frame and smooths their landmarks (see the module docstring)."""

    def __init__(self, *, min_cutoff: float = MIN_CUTOFF, beta: float = BETA) -> None:
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.tracks: list[Track] = []
        self.next_id = 0
        self.last_thumb: np.ndarray | None = None
        self.finished: list[dict[str, int]] = []  # summaries of ended tracks, for the record
        self.cuts = 0

    def cut_ahead(self, rgb: np.ndarray) -> tuple[bool, np.ndarray]:
        """Whether ``rgb`` starts a new scene, and its thumbnail (for :meth:`update`)."""
        thumb = thumbnail(rgb)
        return is_cut(self.last_thumb, thumb), thumb

    def update(self, faces: Sequence[Face], rgb: np.ndarray, time: float, frame: int,
               default_dt: float, *, thumb: np.ndarray | None = None) -> list[TrackedFace]:
        """Match this frame's faces to the tracks; ``thumb``: :meth:`cut_ahead`'s, to not make it twice."""
        thumb = thumbnail(rgb) if thumb is None else thumb
        if is_cut(self.last_thumb, thumb):
            self.cuts += 1
            self._end(self.tracks)
            self.tracks = []
        self.last_thumb = thumb
        pairs = sorted(((iou(t.box, f.box), ti, fi) for ti, t in enumerate(self.tracks)
                        for fi, f in enumerate(faces)), reverse=True)
        matched_t: dict[int, int] = {}
        used_f: set[int] = set()
        for overlap, ti, fi in pairs:
            if overlap < MIN_IOU:
                break
            if ti in matched_t or fi in used_f:
                continue
            matched_t[ti] = fi
            used_f.add(fi)
        out: list[TrackedFace] = []
        kept: list[Track] = []
        for ti, track in enumerate(self.tracks):
            if ti in matched_t:
                face = faces[matched_t[ti]]
                self._filter(track, face.landmarks, time, default_dt)
                track.box, track.missed, track.last_frame = face.box, 0, frame
                track.frames += 1
                out.append(TrackedFace(track.id, _smoothed(face, track.landmarks), True))
                kept.append(track)
            elif track.missed < MAX_COAST:
                track.missed += 1
                coast = Face(index=-1, box=track.box, score=0.0, landmarks=track.landmarks.copy())
                out.append(TrackedFace(track.id, coast, False))
                kept.append(track)
            else:
                self._end([track])
        for fi, face in enumerate(faces):
            if fi not in used_f:
                track = Track(id=self.next_id, box=face.box, landmarks=np.array(face.landmarks, dtype=np.float64),
                              speed=np.zeros((5, 2)), time=time, first_frame=frame, last_frame=frame, frames=1)
                self.next_id += 1
                kept.append(track)
                out.append(TrackedFace(track.id, _smoothed(face, track.landmarks), True))
        self.tracks = kept
        return sorted(out, key=lambda tf: tf.track_id)

    def _filter(self, track: Track, raw: np.ndarray, time: float, default_dt: float) -> None:
        """One-Euro step on the 10 landmark coordinates, speed measured in eye distances/s."""
        dt = time - track.time if time > track.time else default_dt
        raw = np.asarray(raw, dtype=np.float64)
        speed = (raw - track.landmarks) / dt
        a_d = _alpha(DERIVATIVE_CUTOFF, dt)
        track.speed = a_d * speed + (1.0 - a_d) * track.speed
        eye = max(1.0, float(np.hypot(*(track.landmarks[1] - track.landmarks[0]))))
        cutoff = self.min_cutoff + self.beta * np.abs(track.speed).max() / eye
        a = _alpha(cutoff, dt)
        track.landmarks = a * raw + (1.0 - a) * track.landmarks
        track.time = time

    def _end(self, tracks: Sequence[Track]) -> None:
        self.finished.extend(_summary(t) for t in tracks)

    def record_scores(self, track_ids: Sequence[int], faces: Sequence[Face]) -> None:
        """Add each restored face's faithfulness to its track (faces in the order of ``track_ids``)."""
        live = {t.id: t for t in self.tracks}
        for track_id, face in zip(track_ids, faces):
            track = live.get(track_id)
            if track is None or face.faithfulness_db is None:
                continue
            track.scored += 1
            track.db_sum += face.faithfulness_db
            track.db_min = face.faithfulness_db if track.db_min is None else min(track.db_min, face.faithfulness_db)
            track.delta_e_sum += face.delta_e or 0.0

    def summaries(self) -> list[dict[str, Any]]:
        """Every track seen so far (ended and live), by id."""
        return sorted(self.finished + [_summary(t) for t in self.tracks], key=lambda s: s["id"])

    # -- state for resuming ------------------------------------------------------
    def state(self) -> dict[str, Any]:
        thumb = None if self.last_thumb is None else base64.b64encode(self.last_thumb.tobytes()).decode()
        return {"tracks": [t.to_json() for t in self.tracks], "next_id": self.next_id, "thumb": thumb,
                "finished": [dict(s) for s in self.finished], "cuts": self.cuts, "min_cutoff": self.min_cutoff, "beta": self.beta}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "FaceTracker":
        tracker = cls(min_cutoff=float(state["min_cutoff"]), beta=float(state["beta"]))
        tracker.tracks = [Track.from_json(t) for t in state["tracks"]]
        tracker.next_id = int(state["next_id"])
        tracker.finished = list(state["finished"])
        tracker.cuts = int(state["cuts"])
        if state["thumb"] is not None:
            tracker.last_thumb = np.frombuffer(base64.b64decode(state["thumb"]), dtype=np.uint8).reshape(
                THUMB_SIZE, THUMB_SIZE).copy()
        return tracker


def _smoothed(face: Face, landmarks: np.ndarray) -> Face:
    from dataclasses import replace

    return replace(face, landmarks=landmarks.copy())


def _summary(track: Track) -> dict[str, Any]:
    summary: dict[str, Any] = {"id": track.id, "first_frame": track.first_frame, "last_frame": track.last_frame,
                               "detections": track.frames}
    if track.scored:
        summary.update(faithfulness_db_mean=round(track.db_sum / track.scored, 2), faithfulness_db_min=track.db_min,
                       delta_e_mean=round(track.delta_e_sum / track.scored, 2))
    return summary
