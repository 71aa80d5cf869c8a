"""Test photos and collages with known face positions, built from tests/data/photos/faces."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from PIL import Image

from tests.helpers import DATA

PHOTOS = DATA / "photos" / "faces"
FACE_PHOTOS = ("astronaut.png", "grace_hopper.jpg", "camera.png")


def load(name: str) -> np.ndarray:
    """A test photo as float32 HxWx3 RGB in [0,1]."""
    return np.asarray(Image.open(PHOTOS / name).convert("RGB"), dtype=np.float32) / 255.0


@dataclass
class Placement:
    photo: str
    scale: float
    angle: float  # degrees, counter-clockwise
    centre: tuple[float, float]  # where the face centre lands on the canvas


def similarity(scale: float, angle: float, src_c: np.ndarray, dst_c: np.ndarray) -> np.ndarray:
    a = np.deg2rad(angle)
    rot = scale * np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
    return np.hstack([rot, (dst_c - rot @ src_c)[:, None]])


def build_collage(size: tuple[int, int], placements: list[Placement], detector,
                  patch_factor: float = 1.9, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """Paste face patches (scaled, rotated) on a textured canvas; returns it and each face's 5 landmarks.

    The true landmarks are the detector's landmarks on the source photo mapped
    through the placement; patches must not overlap (asserted).
    """
    width, height = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    canvas = np.stack([0.35 + 0.2 * xx / width, 0.45 + 0.1 * yy / height, 0.4 * np.ones_like(xx)], -1)
    canvas += rng.normal(0, 0.02, canvas.shape).astype(np.float32)
    occupied = np.zeros((height, width), bool)
    truths = []
    for p in placements:
        src = load(p.photo)
        face = detector.detect(src)[0]
        x0, y0, x1, y1 = face.box
        centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
        half = patch_factor * max(x1 - x0, y1 - y0) / 2
        m = similarity(p.scale, p.angle, centre, np.array(p.centre, dtype=np.float64))
        src_mask = np.zeros(src.shape[:2], np.float32)
        sy0, sy1 = int(max(0, centre[1] - half)), int(min(src.shape[0], centre[1] + half))
        sx0, sx1 = int(max(0, centre[0] - half)), int(min(src.shape[1], centre[0] + half))
        src_mask[sy0:sy1, sx0:sx1] = 1.0
        warped = cv2.warpAffine(src, m, size, flags=cv2.INTER_AREA if p.scale < 1 else cv2.INTER_CUBIC)
        mask = cv2.warpAffine(src_mask, m, size, flags=cv2.INTER_NEAREST) > 0.5
        assert not (occupied & mask).any(), f"placement {p} overlaps another"
        occupied |= mask
        canvas[mask] = warped[mask]
        truths.append(face.landmarks @ m[:, :2].T + m[:, 2])
    return np.clip(canvas, 0, 1), truths


COLLAGE_SIZE = (1200, 800)
COLLAGE = [
    Placement("astronaut.png", 0.7, 0.0, (140, 130)),
    Placement("grace_hopper.jpg", 0.45, 15.0, (430, 170)),
    Placement("astronaut.png", 1.6, -20.0, (800, 250)),
    Placement("grace_hopper.jpg", 0.3, -10.0, (52, 420)),      # patch touches the left border
    Placement("astronaut.png", 0.5, 25.0, (420, 730)),         # patch touches the bottom border
    Placement("camera.png", 1.8, 0.0, (1062, 655)),            # patch touches the right border
    Placement("grace_hopper.jpg", 0.55, 30.0, (680, 665)),
    Placement("astronaut.png", 0.45, -35.0, (250, 420)),
    Placement("grace_hopper.jpg", 0.22, 0.0, (1150, 40)),      # small, patch touches the top border
]


@lru_cache(maxsize=1)
def shared_detector():
    """One bundled detector for the whole test session (it keeps no per-image state)."""
    from elir_cli.faces.detection import FaceDetector

    return FaceDetector()


@lru_cache(maxsize=1)
def collage() -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    canvas, truths = build_collage(COLLAGE_SIZE, COLLAGE, shared_detector())
    canvas.setflags(write=False)
    return canvas, tuple(truths)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def box_slice(box, shape) -> tuple[slice, slice]:
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    return slice(max(0, y0), min(shape[0], y1)), slice(max(0, x0), min(shape[1], x1))
