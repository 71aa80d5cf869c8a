"""Paste restored face crops back into the (possibly upscaled) photo.

Each crop goes back by the inverse of its alignment transform, computed only
inside that face's box in the output (never over the whole frame), under a
soft mask defined in crop coordinates: a rounded rectangle over the face, the
forehead and the chin, whose feather is a fixed fraction of the crop and so
scales with the face's size in the photo.

Overlapping faces blend independently of their order: the result is
``background * prod(1 - m_i) + (1 - prod(1 - m_i)) * sum(m_i f_i) / sum(m_i)``,
accumulated in a :class:`Canvas` that covers only the faces' region.
:class:`Uint8Canvas` pastes into an 8-bit image in place, touching only the
faces' boxes (video frames).

The face is warped with a cubic kernel (sharp), the mask with a linear one:
the mask is smooth, so the two differ by under 1e-4, and OpenCV's cubic warp
of the mask as a fourth float channel cost as much as the three colour
channels (16 ms against 10 ms for a 700 px face).

Output coordinates: a photo pixel centre ``p`` lands at ``u * p + (u - 1) / 2``
for an upscale ``u`` (the half-pixel convention of OpenCV's resize).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from .alignment import apply_affine, invert_affine, warp_affine

# Full-weight part of the mask, as fractions of the crop (x0, y0, x1, y1): it
# covers the face box of an FFHQ-aligned face (about 0.2..0.8 x 0.22..0.92).
MASK_INNER = (0.15, 0.12, 0.85, 0.93)
# Width of the soft edge outside the full-weight part, fraction of the crop.
MASK_FEATHER = 0.07
Box = tuple[int, int, int, int]


@lru_cache(maxsize=8)
def soft_mask(size: int) -> np.ndarray:
    """The paste mask of a ``size`` crop: 1 inside MASK_INNER, smooth fall to 0 (float32)."""
    coords = (np.arange(size, dtype=np.float64) + 0.5) / size
    x0, y0, x1, y1 = MASK_INNER
    dx = np.maximum(np.maximum(x0 - coords, coords - x1), 0.0)[None, :]  # (1,S)
    dy = np.maximum(np.maximum(y0 - coords, coords - y1), 0.0)[:, None]  # (S,1)
    t = np.clip(1.0 - np.hypot(dx, dy) / MASK_FEATHER, 0.0, 1.0)  # (S,S)
    mask = t * t * (3.0 - 2.0 * t)  # smoothstep: no kink at either end of the feather
    mask.setflags(write=False)
    return mask.astype(np.float32)


def crop_to_output(matrix: np.ndarray, upscale: float) -> np.ndarray:
    """The crop -> output transform, from the photo -> crop ``matrix`` and the upscale."""
    inv = invert_affine(matrix)
    out = inv * upscale
    out[:, 2] += (upscale - 1.0) / 2.0
    return out


def paste_box(to_output: np.ndarray, crop_size: int, out_hw: tuple[int, int]) -> Box | None:
    """The output box (x0, y0, x1, y1) the face's mask touches, or None if outside."""
    x0, y0, x1, y1 = MASK_INNER
    lo = -MASK_FEATHER
    support = np.array([[x0 + lo, y0 + lo], [x1 - lo, y0 + lo], [x0 + lo, y1 - lo], [x1 - lo, y1 - lo]])
    corners = apply_affine(to_output, np.clip(support, 0.0, 1.0) * crop_size - 0.5)
    height, width = out_hw
    bx0 = max(0, math.floor(corners[:, 0].min()) - 1)
    by0 = max(0, math.floor(corners[:, 1].min()) - 1)
    bx1 = min(width, math.ceil(corners[:, 0].max()) + 2)
    by1 = min(height, math.ceil(corners[:, 1].max()) + 2)
    if bx1 <= bx0 or by1 <= by0:
        return None
    return bx0, by0, bx1, by1


def union_box(boxes: list[Box | None]) -> Box | None:
    real = [b for b in boxes if b is not None]
    if not real:
        return None
    return (min(b[0] for b in real), min(b[1] for b in real),
            max(b[2] for b in real), max(b[3] for b in real))


def warp_face(crop: np.ndarray, to_output: np.ndarray, box: Box) -> tuple[np.ndarray, np.ndarray]:
    """The crop (SxSx3 float32) and its soft mask warped into output ``box``: (HxWx3, HxW in [0,1]).

    Zero border: outside the crop the mask must be 0 (a reflection would
    bring the mask's inside back far from the face).
    """
    local = to_output.copy()
    local[:, 2] -= (box[0], box[1])
    out_size = (box[2] - box[0], box[3] - box[1])
    face = warp_affine(crop.astype(np.float32, copy=False), local, out_size, border="zero", interpolation="cubic")
    mask = warp_affine(soft_mask(crop.shape[0]), local, out_size, border="zero", interpolation="linear")
    mask = mask.reshape(out_size[1], out_size[0])
    return face, np.clip(mask, 0.0, 1.0, out=mask)


def pasted_mask(matrices: "list[np.ndarray]", crop_size: int, upscale: float, out_hw: tuple[int, int]) -> np.ndarray:
    """Where restored faces were pasted: HxW float32 in [0,1], each pixel's share of restored face.

    ``matrices``: each face's photo -> crop transform (``Face.matrix``), for
    crops of ``crop_size`` pasted into an output of ``out_hw`` at ``upscale``.
    The value is ``1 - prod(1 - mask_i)``, the weight the paste gave the faces
    over the background (soft at the edges, as the paste blends).
    """
    keep = np.ones(out_hw, np.float32)
    for matrix in matrices:
        to_output = crop_to_output(matrix, upscale)
        box = paste_box(to_output, crop_size, out_hw)
        if box is None:
            continue
        local = to_output.copy()
        local[:, 2] -= (box[0], box[1])
        size = (box[2] - box[0], box[3] - box[1])
        mask = warp_affine(soft_mask(crop_size), local, size, border="zero", interpolation="linear")
        keep[box[1]:box[3], box[0]:box[2]] *= 1.0 - np.clip(mask.reshape(size[1], size[0]), 0.0, 1.0)
    return 1.0 - keep


def boxes_overlap(boxes: list[Box | None]) -> bool:
    """Whether any two of the boxes share a pixel."""
    real = [b for b in boxes if b is not None]
    return any(a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
               for i, a in enumerate(real) for b in real[i + 1:])


class Canvas:
    """Order-independent accumulation of pasted faces over a background.

    Holds three accumulators (5 floats per pixel) over ``region`` only.
    """

    def __init__(self, background: np.ndarray, region: Box | None) -> None:
        if background.ndim != 3 or background.shape[2] != 3 or background.dtype != np.float32:
            raise ValueError(f"background must be float32 HxWx3, got {background.dtype} {background.shape}")
        self.background = background
        self.region = region
        if region is not None:
            h, w = region[3] - region[1], region[2] - region[0]
            self._num = np.zeros((h, w, 3), np.float32)
            self._wsum = np.zeros((h, w, 1), np.float32)
            self._keep = np.ones((h, w, 1), np.float32)

    def paste(self, crop: np.ndarray, to_output: np.ndarray) -> Box | None:
        """Add one restored crop (SxSx3 float32) through ``to_output``; returns its box."""
        size = crop.shape[0]
        box = paste_box(to_output, size, self.background.shape[:2])
        if box is None or self.region is None:
            return None
        rx0, ry0, rx1, ry1 = self.region
        box = (max(box[0], rx0), max(box[1], ry0), min(box[2], rx1), min(box[3], ry1))
        if box[2] <= box[0] or box[3] <= box[1]:
            return None
        face, mask = warp_face(crop, to_output, box)
        mask = mask[:, :, None]
        sl = np.s_[box[1] - ry0:box[3] - ry0, box[0] - rx0:box[2] - rx0]
        self._num[sl] += mask * face
        self._wsum[sl] += mask
        self._keep[sl] *= 1.0 - mask
        return box

    def result(self) -> np.ndarray:
        """The composed photo (float32 HxWx3, clipped to [0,1]); the background is updated in place."""
        out = self.background
        if self.region is not None:
            rx0, ry0, rx1, ry1 = self.region
            bg = out[ry0:ry1, rx0:rx1]
            mean = self._num / np.maximum(self._wsum, np.float32(1e-12))
            bg[...] = bg * self._keep + (1.0 - self._keep) * mean
        np.clip(out, 0.0, 1.0, out=out)
        return out


class Uint8Canvas:
    """Pastes faces into an 8-bit image in place, writing only inside their boxes.

    With no two boxes overlapping (the usual case), each face is blended
    straight into its box: ``rint(bg + m (255 f - bg))``, the float
    :class:`Canvas`'s result for a lone face, rounded once. When boxes
    overlap, every face goes through a float :class:`Canvas` over the union of
    the boxes (order-independent), written back by :meth:`result`. The
    background is never converted whole: at 720p that conversion, the
    accumulators and the conversion back cost 3x the paste itself.
    """

    def __init__(self, image: np.ndarray, boxes: list[Box | None]) -> None:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be uint8 HxWx3, got {image.dtype} {image.shape}")
        self.image = image
        self._shared: Canvas | None = None
        self._origin = (0, 0)
        if boxes_overlap(boxes):
            x0, y0, x1, y1 = union_box(boxes)  # type: ignore[misc]
            self._origin = (x0, y0)
            sub = image[y0:y1, x0:x1].astype(np.float32) * np.float32(1.0 / 255.0)
            self._shared = Canvas(sub, (0, 0, x1 - x0, y1 - y0))

    def paste(self, crop: np.ndarray, to_output: np.ndarray) -> Box | None:
        """Add one restored crop (SxSx3 float32 in [0,1]) through ``to_output``; returns its box."""
        if self._shared is not None:
            ox, oy = self._origin
            local = to_output.copy()
            local[:, 2] -= (ox, oy)
            box = self._shared.paste(crop, local)
            return None if box is None else (box[0] + ox, box[1] + oy, box[2] + ox, box[3] + oy)
        box = paste_box(to_output, crop.shape[0], self.image.shape[:2])
        if box is None:
            return None
        import cv2

        face, mask = warp_face(crop * np.float32(255.0), to_output, box)
        sub = self.image[box[1]:box[3], box[0]:box[2]]
        # m f + (1 - m) bg in one pass (OpenCV; half the time of numpy's three)
        out = cv2.blendLinear(np.ascontiguousarray(face), sub.astype(np.float32), mask, 1.0 - mask)
        np.clip(out, 0.0, 255.0, out=out)
        sub[...] = np.rint(out, out=out)
        return box

    def result(self) -> np.ndarray:
        """The image, with every face pasted."""
        if self._shared is not None:
            x0, y0 = self._origin
            out = self._shared.result()
            self.image[y0:y0 + out.shape[0], x0:x0 + out.shape[1]] = np.rint(out * np.float32(255.0))
            self._shared = None
        return self.image


def resize_background(rgb: np.ndarray, upscale: int) -> np.ndarray:
    """The photo resized by ``upscale`` (Lanczos), float32; a copy at upscale 1."""
    import cv2

    if upscale == 1:
        return rgb.astype(np.float32, copy=True)
    height, width = rgb.shape[:2]
    out = cv2.resize(rgb.astype(np.float32, copy=False), (width * upscale, height * upscale),
                     interpolation=cv2.INTER_LANCZOS4)
    return np.clip(out, 0.0, 1.0, out=out)
