"""Face detection with RetinaFace: anchors, decoding, NMS, numbering.

One :class:`FaceDetector` is built once and reused: it holds only the network
(:mod:`elir_cli.faces.retinaface`, our copy of facexlib's, keyed like its
checkpoints; never per-image state), loads its weights safely
(``weights_only=True``, ``strict=True``) from our bundled file or our cache,
never from site-packages, and takes RGB at its boundary (the network expects
BGR). Neither facexlib nor torchvision is imported: torchvision 0.29 imports
``torch._dynamo`` when it is imported, seconds of every run's start-up.

Faces are numbered by one exact rule so that ``face_indices=[0, 2]`` means the
same faces on every run: sorted by the centre of their box, x first (left to
right), then y (top to bottom), both rounded to whole pixels. Numbers are given
after the score threshold and before any other selection, so a face keeps its
number whatever ``min_face_size`` / ``max_faces`` / ``only_center_face`` do.
"No face" is an empty list, never an error.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from elir_cli.errors import CheckpointError, UsageError, first_line

if TYPE_CHECKING:
    import torch

    from .retinaface import RetinaFaceConfig

DEFAULT_DETECTOR = "retinaface_mobilenet0.25"
DEFAULT_THRESHOLD = 0.9
NMS_IOU = 0.4
# Photos are detected at most this large (long side, px); bigger ones are
# downscaled for detection only, which bounds time and memory and keeps big
# faces within the anchors' range (16..512 px).
DETECT_MAX_SIDE = 1600
# RetinaFace's training mean, BGR order.
BGR_MEAN = (104.0, 117.0, 123.0)
N_LANDMARKS = 5


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face, in the input photo's pixel coordinates.

    ``landmarks`` is (5,2) x,y: the eye on the image's left, the other eye,
    the nose tip, the mouth corner on the left, the other mouth corner.
    ``matrix`` is the 2x3 similarity transform from the photo to the aligned
    crop, once the pipeline has aligned the face (None before).
    """

    index: int
    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray
    matrix: np.ndarray | None = field(default=None)
    # Once restored (elir_cli.pipeline.faithfulness): agreement with the input crop (dB), colour
    # difference (mean CIEDE2000), the fidelity used, ArcFace similarity where measured, and what
    # the guard did (None, "lowered", "failed").
    faithfulness_db: float | None = None
    delta_e: float | None = None
    fidelity: float | None = None
    identity: float | None = None
    guard: str | None = None

    @property
    def eye_distance(self) -> float:
        return float(np.hypot(*(self.landmarks[1] - self.landmarks[0])))

    @property
    def centre(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return (x0 + x1) / 2, (y0 + y1) / 2

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready record (for ``--json`` output)."""
        return {
            "index": self.index,
            "box": [round(v, 2) for v in self.box],
            "score": round(self.score, 4),
            "landmarks": np.round(self.landmarks, 2).tolist(),
            "matrix": None if self.matrix is None else np.round(self.matrix, 6).tolist(),
            **({} if self.faithfulness_db is None else {
                "faithfulness_db": self.faithfulness_db, "delta_e": self.delta_e, "fidelity": self.fidelity,
                "identity": self.identity, "guard": self.guard}),
        }


def number_faces(faces: Sequence[Face]) -> list[Face]:
    """Renumber faces by the module's rule: box centre x, then y, rounded to px."""
    from dataclasses import replace

    def key(face: Face) -> tuple[int, int, float]:
        cx, cy = face.centre
        return round(cx), round(cy), -face.score

    return [replace(face, index=i) for i, face in enumerate(sorted(faces, key=key))]


def select_faces(
    faces: Sequence[Face],
    *,
    image_size: tuple[int, int],
    min_face_size: float = 0.0,
    only_center_face: bool = False,
    max_faces: int | None = None,
    face_indices: Sequence[int] | None = None,
) -> list[Face]:
    """Apply the user's face choice; faces keep their numbers, in index order.

    ``image_size`` is (width, height). ``min_face_size`` is the smallest eye
    distance in px. ``face_indices`` keeps only those numbers (numbers with no
    face are ignored: a batch of photos may have fewer faces in some).
    ``only_center_face`` keeps the face whose box centre is nearest the photo
    centre; ``max_faces`` keeps the N largest boxes.
    """
    if min_face_size < 0:
        raise UsageError(f"min_face_size must be >= 0 px, got {min_face_size}")
    if max_faces is not None and max_faces < 1:
        raise UsageError(f"max_faces must be >= 1, got {max_faces}")
    chosen = [f for f in faces if f.eye_distance >= min_face_size]
    if face_indices is not None:
        wanted = set(int(i) for i in face_indices)
        if any(i < 0 for i in wanted):
            raise UsageError(f"face indices are numbers >= 0, got {sorted(wanted)}")
        chosen = [f for f in chosen if f.index in wanted]
    if only_center_face and chosen:
        cx, cy = image_size[0] / 2, image_size[1] / 2
        chosen = [min(chosen, key=lambda f: (math.hypot(f.centre[0] - cx, f.centre[1] - cy), f.index))]
    if max_faces is not None and len(chosen) > max_faces:
        largest = sorted(chosen, key=lambda f: (-f.area, f.index))[:max_faces]
        chosen = sorted(largest, key=lambda f: f.index)
    return sorted(chosen, key=lambda f: f.index)


def detector_weights(name: str) -> Path:
    """The verified weights file of a registry detector: bundled, or fetched into our cache."""
    from elir_cli.registry.hub import ensure_detector_weights
    from elir_cli.registry.tasks import load_manifest

    detectors = load_manifest().detectors
    if name not in detectors:
        raise UsageError(f"unknown face detector {name!r}", hint=f"choose one of: {', '.join(detectors)}")

    return Path(ensure_detector_weights(name))


class FaceDetector:
    """RetinaFace with our safe loading and RGB interface.

    Build once, call :meth:`detect` on any number of photos; nothing about one
    photo is kept for the next.
    """

    def __init__(self, name: str = DEFAULT_DETECTOR, *, device: "str | torch.device" = "cpu",
                 weights: str | Path | None = None) -> None:
        import torch

        from elir_cli.registry.tasks import load_manifest

        from .retinaface import RetinaFace, fuse_batchnorm

        detectors = load_manifest().detectors
        if name not in detectors:
            raise UsageError(f"unknown face detector {name!r}",
                             hint=f"choose one of: {', '.join(detectors)}")
        self.name = name
        self.device = torch.device(device)
        path = Path(weights) if weights is not None else detector_weights(name)
        net = RetinaFace(network=detectors[name].network)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError) as exc:
            raise CheckpointError(f"cannot read face detector weights {path}: {first_line(exc, 200)}",
                                  hint="delete the file to download it again") from exc
        if not isinstance(state, dict):
            raise CheckpointError(f"{path} is not a RetinaFace state dict")
        # Some releases prefix keys with "module." (DataParallel).
        state = {k.removeprefix("module."): v for k, v in state.items()}
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{path} does not fit RetinaFace {detectors[name].network}: "
                                  f"{first_line(exc, 200)}") from None
        # Folded BatchNorm and channels-last: 15 % and 20 % less time a detection on the CPU.
        self._net = fuse_batchnorm(net.eval()).to(self.device, memory_format=torch.channels_last)
        self._cfg = net.cfg
        self._mean = torch.tensor(BGR_MEAN, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    def detect(self, rgb: np.ndarray, *, threshold: float = DEFAULT_THRESHOLD) -> list[Face]:
        """Faces in an RGB photo (HxWx3, uint8 or float in [0,1]), numbered by the rule."""
        import cv2
        import torch

        if not 0.0 < threshold < 1.0:
            raise UsageError(f"detection threshold must be in (0, 1), got {threshold}")
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"rgb must be HxWx3, got shape {rgb.shape}")
        height, width = rgb.shape[:2]
        image = rgb.astype(np.float32) * (255.0 if rgb.dtype != np.uint8 else 1.0)
        resize = min(1.0, DETECT_MAX_SIDE / max(height, width))
        if resize < 1.0:
            image = cv2.resize(image, (max(1, round(width * resize)), max(1, round(height * resize))),
                               interpolation=cv2.INTER_AREA)
        det_h, det_w = image.shape[:2]
        # RGB -> BGR at the boundary, HWC -> (1,3,H,W)
        x = torch.from_numpy(np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1)))[None]
        x = (x.to(self.device) - self._mean).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            loc, conf, landm = self._net(x)
            priors = prior_boxes(self._cfg, det_h, det_w).to(self.device)
            variance = self._cfg.variance
            boxes = decode_boxes(loc[0].float(), priors, variance).cpu().numpy()  # (A, 4) x0 y0 x1 y1
            points = decode_landmarks(landm[0].float(), priors, variance).cpu().numpy()  # (A, 10)
            scores = conf[0, :, 1].float().cpu().numpy()  # (A,)
        sx, sy = width / det_w, height / det_h
        keep = np.flatnonzero(scores > threshold)
        if keep.size == 0:
            return []
        boxes = boxes[keep] * np.array([det_w, det_h, det_w, det_h], dtype=np.float32)
        points = points[keep] * np.tile(np.array([det_w, det_h], dtype=np.float32), N_LANDMARKS)
        scores = scores[keep]
        faces = []
        for i in nms(boxes, scores, NMS_IOU):
            box = boxes[i] * np.array([sx, sy, sx, sy])
            lms = points[i].reshape(N_LANDMARKS, 2).astype(np.float64) * np.array([sx, sy])
            faces.append(Face(index=-1, box=tuple(float(v) for v in box), score=float(scores[i]),
                              landmarks=lms))
        return number_faces(faces)


def prior_boxes(cfg: "RetinaFaceConfig", height: int, width: int) -> "torch.Tensor":
    """RetinaFace anchors (cx, cy, w, h), normalised; facexlib's PriorBox, vectorised.

    Order: level, then row, then column, then anchor size, as in PriorBox.
    """
    import torch

    out = []
    for step, min_sizes in zip(cfg.steps, cfg.min_sizes):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        cy = (torch.arange(rows, dtype=torch.float64) + 0.5) * step / height
        cx = (torch.arange(cols, dtype=torch.float64) + 0.5) * step / width
        gy, gx = torch.meshgrid(cy, cx, indexing="ij")  # (rows, cols)
        per_size = [torch.stack([gx, gy, torch.full_like(gx, s / width), torch.full_like(gy, s / height)], -1)
                    for s in min_sizes]  # each (rows, cols, 4)
        out.append(torch.stack(per_size, 2).reshape(-1, 4))  # (rows*cols*n_sizes, 4)
    return torch.cat(out).float()


# decode_boxes and decode_landmarks invert the anchor encoding these checkpoints were trained with
# (SSD's, Liu et al. 2016, with RetinaFace's variances; facexlib's decode/decode_landm define it):
# a centre moves by offset * variance[0] * anchor size, a size scales by exp(offset * variance[1]).
def decode_boxes(loc: "torch.Tensor", priors: "torch.Tensor", variances: Sequence[float]) -> "torch.Tensor":
    """Box offsets (A,4) against anchors (A,4: cx, cy, w, h) to corners (A,4: x0, y0, x1, y1), normalised."""
    import torch

    centres = priors[:, :2] + loc[:, :2] * variances[0] * priors[:, 2:]  # (A, 2)
    sizes = priors[:, 2:] * torch.exp(loc[:, 2:] * variances[1])  # (A, 2)
    top_left = centres - sizes / 2
    return torch.cat((top_left, top_left + sizes), dim=1)


def decode_landmarks(pre: "torch.Tensor", priors: "torch.Tensor", variances: Sequence[float]) -> "torch.Tensor":
    """Landmark offsets (A,10) against anchors (A,4) to five x,y points (A,10), normalised."""
    import torch

    return torch.cat([priors[:, :2] + pre[:, 2 * k:2 * k + 2] * variances[0] * priors[:, 2:]
                      for k in range(N_LANDMARKS)], dim=1)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression, as ``torchvision.ops.nms``: indices of the kept
    boxes (N,4: x0, y0, x1, y1), highest score first; a box is dropped when its IoU
    with a kept box is above ``iou_threshold``. Ties in score keep the input order."""
    order = np.argsort(-scores, kind="stable")
    x0, y0, x1, y1 = (boxes[:, k] for k in range(4))
    areas = (x1 - x0) * (y1 - y0)
    suppressed = np.zeros(len(boxes), dtype=bool)
    kept = []
    for pos, i in enumerate(order):
        if suppressed[i]:
            continue
        kept.append(i)
        rest = order[pos + 1:]
        rest = rest[~suppressed[rest]]
        w = np.maximum(0, np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]))
        h = np.maximum(0, np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]))
        inter = w * h
        with np.errstate(divide="ignore", invalid="ignore"):  # empty boxes: NaN, never suppressing
            iou = inter / (areas[i] + areas[rest] - inter)
        suppressed[rest[iou > iou_threshold]] = True
    return np.asarray(kept, dtype=np.int64)


_CACHE: dict[tuple[str, str], FaceDetector] = {}


def cached_detector(name: str = DEFAULT_DETECTOR, device: "str | torch.device" = "cpu") -> FaceDetector:
    """A process-wide detector per (name, device); it holds no per-image state."""
    import torch

    key = (name, str(torch.device(device)))
    if key not in _CACHE:
        _CACHE[key] = FaceDetector(name, device=device)
    return _CACHE[key]
