"""Face alignment: 5 landmarks -> the FFHQ template -> an aligned square crop.

The template is the 5-point FFHQ one facexlib and GFPGAN use at 512 px,
scaled to the task's crop size (512 for bfr, 256 for the other face tasks).
The similarity transform (rotation, uniform scale, translation) is the least
squares fit of the landmarks onto the template (Umeyama 1991), closed form.

Coordinates: pixel centres sit on integers (OpenCV's convention). Warps read
only the part of the photo the crop needs, reflect at the photo's edge (so a
face cut by the border does not pull in black or grey bands) and area-average
first when the crop is smaller than the face (no aliasing).

Task inputs, as the models were trained: ``sr`` sees a 32 px crop upsampled x8
with nearest-exact to 256; ``inpainting`` sees masked pixels set to 0.
"""

from __future__ import annotations

import math

import numpy as np

# FFHQ 5-point template at 512 px (facexlib FaceRestoreHelper / GFPGAN):
# left eye, right eye, nose tip, left mouth corner, right mouth corner.
FFHQ_TEMPLATE_512 = np.array(
    [[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
     [201.26117, 371.41043], [313.08905, 371.15118]], dtype=np.float64)
TEMPLATE_SIZE = 512
# Extra source pixels read around the needed region, for the interpolation kernel.
WARP_MARGIN = 4
# Below this scale (output px per source px) the source is first area-averaged
# to this scale, so the final (cubic) warp never shrinks by more than 2x:
# enough against aliasing, and the round trip photo -> crop -> photo stays
# above 45 dB on real faces.
ANTIALIAS_BELOW = 0.5
SR_CROP = 32  # the sr model's low-resolution face size


def face_template(size: int) -> np.ndarray:
    """The 5-point FFHQ template for a ``size`` x ``size`` crop, (5,2) float64."""
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    return FFHQ_TEMPLATE_512 * (size / TEMPLATE_SIZE)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (2x3) mapping points ``src`` (N,2) onto ``dst`` (N,2)."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"need two (N,2) point sets with N >= 2, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s_c, d_c = src - mu_s, dst - mu_d
    var_s = (s_c ** 2).sum() / len(src)
    if var_s <= 0:
        raise ValueError("source points are all equal; no transform fits them")
    cov = d_c.T @ s_c / len(src)  # (2,2)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    rot = u @ np.diag(sign) @ vt
    scale = (sig * sign).sum() / var_s
    matrix = np.empty((2, 3), dtype=np.float64)
    matrix[:, :2] = scale * rot
    matrix[:, 2] = mu_d - scale * rot @ mu_s
    return matrix


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """The inverse of a 2x3 affine transform."""
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def affine_scale(matrix: np.ndarray) -> float:
    """Output px per input px of a similarity (sqrt of the determinant)."""
    return math.sqrt(abs(float(np.linalg.det(matrix[:, :2]))))


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (N,2) points through a 2x3 transform."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def warp_affine(src: np.ndarray, matrix: np.ndarray, out_size: tuple[int, int], *,
                border: str = "reflect", interpolation: str = "linear") -> np.ndarray:
    """``out[y, x] = src[matrix^-1 (x, y)]`` for an (H,W) or (H,W,C) float32 array.

    Reads only the source region the output needs (plus a margin); when the
    output is smaller than the source region the source is area-averaged first.
    An 8-bit source is read as float32 in [0, 1]: only that region is
    converted (video frames stay 8-bit; see :func:`align_face`).
    ``out_size`` is (width, height). ``border``: "reflect" (mirror at the
    source's edge, without repeating the edge pixel) or "zero".
    """
    import cv2

    out_w, out_h = out_size
    inv = invert_affine(matrix)
    corners = np.array([[-0.5, -0.5], [out_w - 0.5, -0.5], [-0.5, out_h - 0.5], [out_w - 0.5, out_h - 0.5]])
    region = apply_affine(inv, corners)
    height, width = src.shape[:2]
    x0 = max(0, math.floor(region[:, 0].min()) - WARP_MARGIN)
    y0 = max(0, math.floor(region[:, 1].min()) - WARP_MARGIN)
    x1 = min(width, math.ceil(region[:, 0].max()) + WARP_MARGIN + 1)
    y1 = min(height, math.ceil(region[:, 1].max()) + WARP_MARGIN + 1)
    if x1 - x0 < 2 or y1 - y0 < 2:
        # The output lies (almost) wholly outside the source: the reflection
        # reads the nearest edge, so warp from the full source.
        x0, y0, x1, y1 = 0, 0, width, height
    sub = src[y0:y1, x0:x1]
    if sub.dtype == np.uint8:
        sub = sub.astype(np.float32) * np.float32(1.0 / 255.0)
    # matrix over sub coordinates: p = q + (x0, y0)
    m = matrix.copy()
    m[:, 2] = matrix[:, 2] + matrix[:, :2] @ np.array([x0, y0], dtype=np.float64)
    scale = affine_scale(m)
    if scale < ANTIALIAS_BELOW and min(sub.shape[:2]) * scale >= 2:
        new_w = max(2, round(sub.shape[1] * scale / ANTIALIAS_BELOW))
        new_h = max(2, round(sub.shape[0] * scale / ANTIALIAS_BELOW))
        fx, fy = new_w / sub.shape[1], new_h / sub.shape[0]
        sub = cv2.resize(sub, (new_w, new_h), interpolation=cv2.INTER_AREA)
        # resized q' = f (q + 0.5) - 0.5  <=>  q = (q' + 0.5) / f - 0.5
        to_old = np.array([[1 / fx, 0, 0.5 / fx - 0.5], [0, 1 / fy, 0.5 / fy - 0.5]])
        m = np.hstack([m[:, :2] @ to_old[:, :2], (m[:, :2] @ to_old[:, 2] + m[:, 2])[:, None]])
    flags = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC, "nearest": cv2.INTER_NEAREST}[interpolation]
    border_mode = {"reflect": cv2.BORDER_REFLECT101, "zero": cv2.BORDER_CONSTANT}[border]
    if border_mode == cv2.BORDER_REFLECT101 and min(sub.shape[:2]) < 2:
        border_mode = cv2.BORDER_REPLICATE  # OpenCV's reflect never returns on a 1-px side
    out = cv2.warpAffine(np.ascontiguousarray(sub), m, (out_w, out_h), flags=flags,
                         borderMode=border_mode, borderValue=0)
    if src.ndim == 3 and out.ndim == 2:
        out = out[:, :, None]
    return out


def alignment_matrix(landmarks: np.ndarray, size: int) -> np.ndarray:
    """The photo -> crop similarity for a face's 5 landmarks at crop ``size``."""
    return similarity_transform(landmarks, face_template(size))


def align_face(rgb: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """The aligned ``size`` x ``size`` crop (float32, HxWx3 in [0,1]) of a float or 8-bit photo."""
    return np.clip(warp_affine(rgb, matrix, (size, size), interpolation="cubic"), 0.0, 1.0)


def sr_input(crop: np.ndarray, factor: int) -> np.ndarray:
    """The sr model's input: the crop area-averaged to 1/factor, then nearest-exact x factor.

    For an integer factor, nearest-exact upsampling repeats each pixel
    ``factor`` times along both axes.
    """
    import cv2

    size = crop.shape[0]
    if size % factor:
        raise ValueError(f"crop size {size} is not a multiple of the sr factor {factor}")
    small = cv2.resize(crop, (size // factor, size // factor), interpolation=cv2.INTER_AREA)
    return np.repeat(np.repeat(small, factor, axis=0), factor, axis=1)


def crop_missing(mask: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """The photo's mask (True where pixels are missing) on the aligned ``size`` crop, boolean SxS."""
    warped = warp_affine(mask.astype(np.float32), matrix, (size, size), interpolation="linear")
    return warped.reshape(size, size) >= 0.5


def masked_input(crop: np.ndarray, mask: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The inpainting model's input: pixels the user masked (photo mask True) set to 0."""
    out = crop.copy()
    out[crop_missing(mask, matrix, crop.shape[0])] = 0.0
    return out
