"""Is the restored face still the person? Faithfulness scores, the guard's search, the colour fix.

Every restored face (and every whole restored image) is compared with its own
input, on the aligned crop, at the cost of a few 64 x 64 operations:

- ``faithfulness_db``: for the blind tasks (bfr, bsr), both the input and the
  restoration reduced to 64 x 64 with antialiasing (area averaging), then
  PSNR (dB): what is left when the detail ELIR is meant to invent is taken
  away. For sr, denoising and inpainting, :func:`consistency`, the measure
  ``elir eval`` reports: the task's known degradation applied to the
  restoration and compared with the input.
- ``delta_e``: the mean CIEDE2000 colour difference of the two 64 x 64
  low-passes (for inpainting, over the pixels the input kept): colour shift.
- ``identity``: with an identity model (``identity_weights``), the cosine
  similarity of the two faces' ArcFace embeddings (1: the same person to ArcFace).

:func:`search_fidelity` is the guard: a face below ``min_faithfulness`` is
restored again at lower fidelity (0 is the coarse estimate, closest to the
input) and keeps the highest fidelity that passes. :func:`color_fix` takes
the low frequencies (wavelet) or the per-channel mean and spread (AdaIN)
from the input: the colour of the photo, the detail of the restoration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from elir_cli.registry.tasks import get_task

LOW_PASS = 64  # pixels: the side both faces are reduced to before comparing
PSNR_EPS = 1e-8  # as pyiqa: a perfect match gives 80 dB, not infinity
BLIND_TASKS = ("bfr", "bsr")
GUARD_PROBES = 4  # bisection steps after fidelity 0 passes: within requested / 16
WAVELET_LEVELS = 5  # a trous levels of the wavelet colour fix (the kernel reaches 2**5 = 32 px)
ADAIN_EPS = 1e-6
# What the guard did to a face (``guard`` in the face records; None: it passed as asked).
GUARD_LOWERED = "lowered"  # restored again at a lower fidelity that passes
GUARD_FAILED = "failed"  # below the minimum even at fidelity 0; kept at 0
# sRGB (D65) -> XYZ, and the D65 white point (IEC 61966-2-1; CIE 15).
SRGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                        [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]])
D65 = np.array([0.95047, 1.0, 1.08883])


@dataclass(frozen=True)
class Faithfulness:
    """One restoration measured against its input."""

    db: float
    delta_e: float
    identity: float | None = None


# -- measures ----------------------------------------------------------------------------------

def psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    """PSNR (dB, peak 1) of float images in [0, 1]; ``where`` (HxW bool) limits it to those pixels."""
    diff = (np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2
    mse = float(diff[where].mean()) if where is not None else float(diff.mean())
    return float(10.0 * np.log10(1.0 / (mse + PSNR_EPS)))


def low_pass(rgb: np.ndarray, side: int = LOW_PASS) -> np.ndarray:
    """``rgb`` reduced to side x side by area averaging (antialiased), float32."""
    import cv2

    return cv2.resize(np.asarray(rgb, dtype=np.float32), (side, side), interpolation=cv2.INTER_AREA)


def redegrade(task: str, restored: np.ndarray, lq_shape: tuple[int, ...]) -> np.ndarray:
    """The noise-free degradation of ``task`` applied to ``restored`` (float), at the LQ's geometry.

    For sr this returns the low-resolution image (H/8 x W/8), to be compared with the LQ's blocks.
    """
    from elir_cli.images.resize import resize_bicubic_float

    height, width = lq_shape[:2]
    if restored.shape[:2] != (height, width):
        restored = resize_bicubic_float(restored, (width, height))
    if task == "sr":
        factor = get_task("sr").scale
        return resize_bicubic_float(restored, (width // factor, height // factor))
    return restored


def consistency(task: str, restored: np.ndarray, lq: np.ndarray, mask: np.ndarray | None = None) -> float | None:
    """PSNR between the re-degraded restoration and the input; None for blind tasks (bfr, bsr).

    The task's known degradation without its noise: sr the same PIL bicubic
    downscale by 8, compared with the input's low-resolution pixels (every
    8 x 8 block of an sr input holds one); inpainting the same mask,
    compared on the pixels the input kept (``mask``: HxW, True where
    missing); denoising the identity. A restorer that returns an exact
    pre-image of the input scores highest; one that invents what the input
    contradicts scores lower.
    """
    if task in BLIND_TASKS:
        return None
    restored = np.clip(restored, 0.0, 1.0)
    again = redegrade(task, restored, lq.shape)
    if task == "sr":
        factor = get_task("sr").scale
        return psnr(again, lq[::factor, ::factor])
    if task == "inpainting" and mask is not None:
        return psnr(again, lq, where=~mask)
    return psnr(again, lq)


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIE L*a*b* (D65) of sRGB values in [0, 1], (..., 3) float64."""
    c = np.clip(np.asarray(rgb, dtype=np.float64), 0.0, 1.0)
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = linear @ SRGB_TO_XYZ.T / D65
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def ciede2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIEDE2000 colour difference of L*a*b* values (kL = kC = kH = 1), per pixel.

    The formula of Sharma, Wu and Dalal, "The CIEDE2000 color-difference
    formula: implementation notes" (2005), equations 1-22.
    """
    L1, a1, b1 = np.moveaxis(np.asarray(lab1, dtype=np.float64), -1, 0)
    L2, a2, b2 = np.moveaxis(np.asarray(lab2, dtype=np.float64), -1, 0)
    c_mean = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2
    g = 0.5 * (1 - np.sqrt(c_mean ** 7 / (c_mean ** 7 + 25.0 ** 7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360
    dLp, dCp = L2 - L1, c2p - c1p
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(c1p * c2p == 0, 0.0, dh)
    dHp = 2 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh) / 2)
    L_mean, cp_mean = (L1 + L2) / 2, (c1p + c2p) / 2
    h_sum = h1p + h2p
    h_mean = np.where(np.abs(h1p - h2p) <= 180, h_sum / 2, np.where(h_sum < 360, (h_sum + 360) / 2, (h_sum - 360) / 2))
    h_mean = np.where(c1p * c2p == 0, h_sum, h_mean)
    t = (1 - 0.17 * np.cos(np.radians(h_mean - 30)) + 0.24 * np.cos(np.radians(2 * h_mean))
         + 0.32 * np.cos(np.radians(3 * h_mean + 6)) - 0.20 * np.cos(np.radians(4 * h_mean - 63)))
    d_theta = 30 * np.exp(-(((h_mean - 275) / 25) ** 2))
    r_c = 2 * np.sqrt(cp_mean ** 7 / (cp_mean ** 7 + 25.0 ** 7))
    s_l = 1 + 0.015 * (L_mean - 50) ** 2 / np.sqrt(20 + (L_mean - 50) ** 2)
    s_c = 1 + 0.045 * cp_mean
    s_h = 1 + 0.015 * cp_mean * t
    r_t = -np.sin(np.radians(2 * d_theta)) * r_c
    return np.sqrt((dLp / s_l) ** 2 + (dCp / s_c) ** 2 + (dHp / s_h) ** 2 + r_t * (dCp / s_c) * (dHp / s_h))


def mean_delta_e(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    """Mean CIEDE2000 between two sRGB float images (over ``where`` if given)."""
    d = ciede2000(srgb_to_lab(a), srgb_to_lab(b))
    return float(d[where].mean() if where is not None else d.mean())


def measure(task: str, model_input: np.ndarray, restored: np.ndarray, *, mask: np.ndarray | None = None,
            identity: "Callable[[np.ndarray, np.ndarray], float] | None" = None) -> Faithfulness:
    """The faithfulness of ``restored`` to ``model_input`` (the aligned crop as the model saw it).

    ``mask``: inpainting's missing pixels (HxW, True where missing), on the
    crop; ``identity``: a similarity of two face crops (ArcFace), or None.
    """
    small_in, small_out = low_pass(model_input), low_pass(restored)
    if restored.shape != model_input.shape:
        # A whole image at another scale (bsr, --upscale): the two 64 x 64 low-passes compare at any
        # scale, without making a copy of the input at the output's size.
        db, delta = psnr(small_in, small_out), mean_delta_e(small_in, small_out)
    elif task == "inpainting" and mask is not None:
        kept = ~mask
        db = consistency(task, restored, model_input, mask)
        delta = mean_delta_e(model_input, restored, where=kept) if kept.any() else 0.0
    else:
        db = consistency(task, restored, model_input) if task not in BLIND_TASKS else psnr(small_in, small_out)
        delta = mean_delta_e(small_in, small_out)
    assert db is not None
    return Faithfulness(db=round(db, 2), delta_e=round(delta, 2),
                        identity=None if identity is None else round(identity(model_input, restored), 4))


# -- the guard ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class GuardResult:
    """What the guard chose for one face: its fidelity, score, and whether it changed or failed."""

    fidelity: float
    faithfulness: Faithfulness
    restored: np.ndarray
    status: str | None  # None: passed as requested; GUARD_LOWERED; GUARD_FAILED (kept at 0, still below)


def search_fidelity(attempt: Callable[[float], tuple[np.ndarray, Faithfulness]], requested: float,
                    minimum_db: float, first: tuple[np.ndarray, Faithfulness], probes: int = GUARD_PROBES
                    ) -> GuardResult:
    """The highest fidelity in [0, requested] whose restoration scores at least ``minimum_db``.

    ``attempt(f)`` restores the face at fidelity ``f`` (same noise) and
    measures it; ``first`` is the restoration at ``requested``. Fidelity 0
    is tried first (the coarse estimate, nearest the input): if even it
    fails, the face stays at 0 (:data:`GUARD_FAILED`); else a bisection of
    ``probes`` steps keeps the highest fidelity that passed.
    """
    restored, score = first
    if score.db >= minimum_db:
        return GuardResult(requested, score, restored, None)
    low = (0.0, *attempt(0.0))
    if low[2].db < minimum_db:
        return GuardResult(0.0, low[2], low[1], GUARD_FAILED)
    high = requested
    for _ in range(probes):
        middle = (low[0] + high) / 2
        trial = attempt(middle)
        if trial[1].db >= minimum_db:
            low = (middle, *trial)
        else:
            high = middle
    return GuardResult(round(low[0], 4), low[2], low[1], GUARD_LOWERED)


# -- the colour fix ---------------------------------------------------------------------------------

def _a_trous_blur(rgb: np.ndarray, level: int) -> np.ndarray:
    """One level of the a trous B3-like blur: the 3x3 [1,2,1]x[1,2,1]/16 kernel with holes of 2**level."""
    import cv2

    step = 2 ** level
    kernel = np.zeros((2 * step + 1, 2 * step + 1), np.float32)
    for i, wi in zip((0, step, 2 * step), (0.25, 0.5, 0.25)):
        for j, wj in zip((0, step, 2 * step), (0.25, 0.5, 0.25)):
            kernel[i, j] = wi * wj
    return cv2.filter2D(rgb, -1, kernel, borderType=cv2.BORDER_REPLICATE)


def wavelet_low(rgb: np.ndarray, levels: int = WAVELET_LEVELS) -> np.ndarray:
    """The low frequencies of ``rgb``: what is left after ``levels`` a trous blurs."""
    low = np.asarray(rgb, dtype=np.float32)
    for level in range(levels):
        low = _a_trous_blur(low, level)
    return low


def color_fix(restored: np.ndarray, reference: np.ndarray, method: str) -> np.ndarray:
    """``restored`` with the colour of ``reference`` (the same size, float in [0, 1]).

    ``wavelet``: the reference's low frequencies with the restoration's high
    ones; ``adain``: each channel's mean and standard deviation matched to
    the reference's; ``none``: unchanged.
    """
    if method == "none":
        return restored
    restored = np.asarray(restored, dtype=np.float32)
    reference = np.asarray(reference, dtype=np.float32)
    if method == "wavelet":
        out = restored - wavelet_low(restored) + wavelet_low(reference)
    elif method == "adain":
        axes = (0, 1)
        mean_r, std_r = restored.mean(axes), restored.std(axes)
        mean_f, std_f = reference.mean(axes), reference.std(axes)
        out = (restored - mean_r) / (std_r + ADAIN_EPS) * std_f + mean_f
    else:
        raise ValueError(f"unknown colour fix {method!r}")
    return np.clip(out, 0.0, 1.0).astype(np.float32)
