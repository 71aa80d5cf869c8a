"""The paper's synthetic degradations, deterministic per file, with a manifest.

Tasks (the ELIR paper's evaluation protocol, and GFPGAN's training degradation):

- ``sr``: the HQ face resized to ``size`` (256, PIL bicubic), PIL bicubic down
  by 8, Gaussian noise of std 12.8 (in 0-255 units), rounded and clipped to
  uint8, then nearest-exact x8 back to ``size``.
- ``denoising``: Gaussian noise of std 89.6 (0.35 of 255), rounded, clipped.
- ``inpainting``: 90 % of the pixels set to 0 by one random mask shared by the
  three channels, then noise of std 25.6, rounded, clipped. The mask is saved
  next to the LQ files (``masks/``, white = missing) for the consistency measure.
- ``bfr-synthetic``: GFPGAN's blind degradation (``options/train_gfpgan_v1.yml``
  and basicsr's ``FFHQDegradationDataset``): a 41x41 Gaussian blur kernel,
  isotropic or anisotropic with equal odds, sigma in [0.1, 10], rotation in
  [-pi, pi]; bilinear downscale by a factor in [0.8, 8]; Gaussian noise std in
  [0, 20]; JPEG quality in [60, 100]; bilinear resize back. GFPGAN's colour
  jitter and grey conversion are augmentations, not degradations, and are
  left out. The bfr evaluation set itself (CelebA-Test) is shipped pre-made.

Each file's random numbers come from a generator seeded with the sha256 of
(task, seed, the file's path relative to the input folder), never from the
order of the files or the number of workers, so the same seed gives
byte-identical files however the work is split. The manifest
(``degradation.json``) records the parameters, the seed, each file's sampled
values and the sha256 of every input and output; it is itself deterministic.
"""

from __future__ import annotations

import hashlib
import json
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from elir_cli._version import __version__
from elir_cli.atomicwrite import write_bytes_atomic
from elir_cli import errors
from elir_cli.errors import ElirError, UsageError
from elir_cli.registry.tasks import get_task

from .images import encode_png, read_uint8, resize_bicubic_uint8, walk_images

MANIFEST_NAME = "degradation.json"
MASKS_DIR = "masks"
DEFAULT_SEED = 2025
MAX_8BIT = 255

# The paper's evaluation degradations (noise std in 0-255 units).
SR_FACTOR = 8
SR_NOISE = 12.8
DENOISING_NOISE = 89.6
INPAINTING_MISSING = 0.9
INPAINTING_NOISE = 25.6

# GFPGAN's train_gfpgan_v1.yml.
GFPGAN = {
    "blur_kernel_size": 41,
    "kernel_list": ["iso", "aniso"],
    "kernel_prob": [0.5, 0.5],
    "blur_sigma": [0.1, 10.0],
    "downsample_range": [0.8, 8.0],
    "noise_range": [0.0, 20.0],
    "jpeg_range": [60, 100],
}


@dataclass(frozen=True)
class Degradation:
    """One task's degradation: its fixed parameters, its image size, and the function applying it."""

    task: str
    model_task: str  # the registry task whose input size is the default
    parameters: dict[str, Any]

    @property
    def default_size(self) -> int:
        return get_task(self.model_task).input_size


DEGRADATIONS = {
    "sr": Degradation("sr", "sr", {"hq_resize": "PIL bicubic", "factor": SR_FACTOR, "down": "PIL bicubic",
                                   "noise_std_255": SR_NOISE, "quantise": "round, clip to uint8",
                                   "up": "nearest-exact"}),
    "denoising": Degradation("denoising", "denoising", {"hq_resize": "PIL bicubic", "noise_std_255": DENOISING_NOISE,
                                                        "quantise": "round, clip to uint8"}),
    "inpainting": Degradation("inpainting", "inpainting", {
        "hq_resize": "PIL bicubic", "missing_fraction": INPAINTING_MISSING, "mask": "per pixel, shared by channels",
        "missing_value": 0, "noise_std_255": INPAINTING_NOISE, "quantise": "round, clip to uint8"}),
    "bfr-synthetic": Degradation("bfr-synthetic", "bfr", {"hq_resize": "PIL bicubic", **GFPGAN,
                                                          "down": "bilinear (cv2)", "up": "bilinear (cv2)"}),
}


def degradation_names() -> list[str]:
    return list(DEGRADATIONS)


def file_seed(seed: int, task: str, relative: str) -> int:
    """The seed of one file: sha256 of (task, seed, relative path); stable across runs and machines."""
    digest = hashlib.sha256(f"elir-degrade\0{task}\0{int(seed)}\0{relative}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


# --------------------------------------------------------------------------- the degradations


@dataclass
class Degraded:
    lq: np.ndarray  # uint8 HxWx3
    mask: np.ndarray | None  # bool HxW, True where missing (inpainting)
    sampled: dict[str, Any]


def add_noise_uint8(x: np.ndarray, std_255: float, rng: np.random.Generator) -> np.ndarray:
    """uint8 (or float in 0-255) + N(0, std) in 0-255 units, rounded and clipped to uint8."""
    noisy = x.astype(np.float64) + rng.standard_normal(x.shape) * std_255
    return np.clip(np.rint(noisy), 0, MAX_8BIT).astype(np.uint8)


def degrade_sr(hq: np.ndarray, rng: np.random.Generator, factor: int = SR_FACTOR,
               noise: float = SR_NOISE) -> Degraded:
    height, width = hq.shape[:2]
    if height % factor or width % factor:
        raise UsageError(f"sr needs a size that is a multiple of {factor}, got {width}x{height}",
                         hint=f"choose --size as a multiple of {factor} (the paper: 256)")
    small = resize_bicubic_uint8(hq, (width // factor, height // factor))
    small = add_noise_uint8(small, noise, rng)
    lq = np.repeat(np.repeat(small, factor, axis=0), factor, axis=1)  # nearest-exact for an integer factor
    return Degraded(lq, None, {})


def degrade_denoising(hq: np.ndarray, rng: np.random.Generator, noise: float = DENOISING_NOISE) -> Degraded:
    return Degraded(add_noise_uint8(hq, noise, rng), None, {})


def degrade_inpainting(hq: np.ndarray, rng: np.random.Generator, missing: float = INPAINTING_MISSING,
                       noise: float = INPAINTING_NOISE) -> Degraded:
    mask = rng.random(hq.shape[:2]) < missing  # True: missing
    masked = np.where(mask[:, :, None], 0, hq)
    return Degraded(add_noise_uint8(masked, noise, rng), mask, {"missing_fraction": float(mask.mean())})


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """basicsr's bivariate Gaussian: covariance U diag(sx^2, sy^2) U^T, U the rotation by theta, sum 1."""
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    cov = rotation @ np.diag([sigma_x ** 2, sigma_y ** 2]) @ rotation.T
    ax = np.arange(-size // 2 + 1.0, size // 2 + 1.0)
    xx, yy = np.meshgrid(ax, ax)
    grid = np.stack([xx, yy], axis=-1)  # (size, size, 2)
    kernel = np.exp(-0.5 * np.sum((grid @ np.linalg.inv(cov)) * grid, axis=-1))
    return kernel / kernel.sum()


def degrade_bfr_synthetic(hq: np.ndarray, rng: np.random.Generator, params: dict[str, Any] = GFPGAN) -> Degraded:
    import cv2

    height, width = hq.shape[:2]
    kind = params["kernel_list"][int(rng.choice(len(params["kernel_list"]), p=params["kernel_prob"]))]
    lo, hi = params["blur_sigma"]
    sigma_x = float(rng.uniform(lo, hi))
    sigma_y, theta = (sigma_x, 0.0) if kind == "iso" else (float(rng.uniform(lo, hi)), float(rng.uniform(-math.pi, math.pi)))
    kernel = gaussian_kernel(params["blur_kernel_size"], sigma_x, sigma_y, theta)
    img = hq.astype(np.float32) / MAX_8BIT
    img = cv2.filter2D(img, -1, kernel.astype(np.float32))
    scale = float(rng.uniform(*params["downsample_range"]))
    img = cv2.resize(img, (max(1, int(width // scale)), max(1, int(height // scale))), interpolation=cv2.INTER_LINEAR)
    noise = float(rng.uniform(*params["noise_range"]))
    img = np.clip(img + rng.standard_normal(img.shape).astype(np.float32) * np.float32(noise / MAX_8BIT), 0.0, 1.0)
    quality = int(rng.uniform(*params["jpeg_range"]))
    bgr = np.ascontiguousarray(np.rint(img[:, :, ::-1] * MAX_8BIT).astype(np.uint8))
    ok, encoded = cv2.imencode(".jpg", bgr, [int(cv2.IMWRITE_JPEG_QUALITY), quality])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        raise RuntimeError("JPEG encoding failed")
    img = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[:, :, ::-1].astype(np.float32) / MAX_8BIT
    img = cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
    lq = np.clip(np.rint(img * MAX_8BIT), 0, MAX_8BIT).astype(np.uint8)
    sampled = {"kernel": kind, "sigma_x": sigma_x, "sigma_y": sigma_y, "theta": theta, "downscale": scale,
               "noise_std_255": noise, "jpeg_quality": quality}
    return Degraded(lq, None, sampled)


_APPLY: dict[str, Callable[[np.ndarray, np.random.Generator], Degraded]] = {
    "sr": degrade_sr,
    "denoising": degrade_denoising,
    "inpainting": degrade_inpainting,
    "bfr-synthetic": degrade_bfr_synthetic,
}


def degrade_array(task: str, hq: np.ndarray, rng: np.random.Generator) -> Degraded:
    """Apply ``task``'s degradation to uint8 RGB ``hq`` (already at the evaluation size)."""
    return _APPLY[task](hq, rng)


# --------------------------------------------------------------------------- folders


@dataclass(frozen=True)
class _Job:
    task: str
    seed: int
    size: int
    src: str
    relative: str  # POSIX, relative to the HQ folder
    out: str
    mask_out: str | None
    overwrite: bool


def _run_job(job: _Job) -> dict[str, Any]:
    """Degrade one file (in a worker process or in-line); its manifest entry, or the error to raise."""
    try:
        return _degrade_file(job)
    except ElirError as exc:  # crosses the process boundary as data: an exception would lose its hint
        return {"error": type(exc).__name__, "message": exc.message, "hint": exc.hint}


def _degrade_file(job: _Job) -> dict[str, Any]:
    import cv2

    cv2.setNumThreads(1)  # one file per worker; also keeps the float results independent of threading
    src = Path(job.src)
    data = src.read_bytes()
    hq = resize_bicubic_uint8(read_uint8(src), (job.size, job.size))
    seed = file_seed(job.seed, job.task, job.relative)
    result = degrade_array(job.task, hq, np.random.default_rng(seed))
    png = encode_png(result.lq)
    write_bytes_atomic(job.out, png, overwrite=job.overwrite, source_path=src)
    entry: dict[str, Any] = {"input": job.relative, "input_sha256": hashlib.sha256(data).hexdigest(),
                             "output_sha256": hashlib.sha256(png).hexdigest(), "seed": seed}
    if result.mask is not None and job.mask_out is not None:
        mask_png = encode_png((result.mask * MAX_8BIT).astype(np.uint8))
        write_bytes_atomic(job.mask_out, mask_png, overwrite=job.overwrite, source_path=src)
        entry["mask_sha256"] = hashlib.sha256(mask_png).hexdigest()
    if result.sampled:
        entry["sampled"] = result.sampled
    return entry


def output_relative(relative: Path) -> str:
    """Where the LQ file of ``relative`` goes: the same path with a ``.png`` extension."""
    return relative.with_suffix(".png").as_posix()


def degrade_folder(task: str, hq_dir: Path, lq_dir: Path, *, seed: int = DEFAULT_SEED, size: int | None = None,
                   workers: int = 1, overwrite: bool = False,
                   progress: Callable[[int, int, str], None] | None = None) -> dict[str, Any]:
    """Degrade every image under ``hq_dir`` into ``lq_dir`` (same tree, PNG) and write the manifest.

    Returns the manifest. ``workers`` > 1 uses that many processes; the files
    are the same bytes whatever ``workers`` is.
    """
    if task not in DEGRADATIONS:
        raise UsageError(f"unknown degradation {task!r}", hint=f"choose one of: {', '.join(DEGRADATIONS)}")
    if workers < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")
    spec = DEGRADATIONS[task]
    size = spec.default_size if size is None else int(size)
    if size < 8:
        raise UsageError(f"--size must be at least 8, got {size}")
    if task == "sr" and size % SR_FACTOR:
        raise UsageError(f"sr needs a size that is a multiple of {SR_FACTOR}, got {size}",
                         hint="the paper uses 256")
    hq_r, lq_r = hq_dir.resolve(), lq_dir.resolve()
    if hq_r == lq_r or hq_r.is_relative_to(lq_r) or lq_r.is_relative_to(hq_r):
        raise UsageError("the LQ folder and the HQ folder overlap; outputs could mix with or replace inputs",
                         hint="choose an -o folder outside the HQ folder")
    if lq_dir.exists() and not lq_dir.is_dir():
        raise UsageError(f"{lq_dir} is a file, not a folder", hint="give a folder with -o")
    sources = walk_images(hq_dir)
    if not sources:
        raise UsageError(f"no images found in {hq_dir}")
    jobs = []
    seen: dict[str, Path] = {}
    for src in sources:
        rel = src.relative_to(hq_dir)
        out_rel = output_relative(rel)
        if out_rel in seen:
            raise UsageError(f"{seen[out_rel]} and {src} would both become {out_rel}",
                             hint="rename one of them (the LQ files are PNGs named after the inputs)")
        seen[out_rel] = src
        mask_rel = f"{MASKS_DIR}/{out_rel}" if task == "inpainting" else None
        jobs.append(_Job(task, int(seed), size, str(src), rel.as_posix(), str(lq_dir / out_rel),
                         str(lq_dir / mask_rel) if mask_rel else None, overwrite))
    manifest_path = lq_dir / MANIFEST_NAME
    if not overwrite:
        taken = [p for job in jobs for p in (job.out, job.mask_out) if p and Path(p).exists()]
        if manifest_path.exists():
            taken.insert(0, str(manifest_path))
        if taken:
            raise UsageError(f"{taken[0]} already exists" + (f" (and {len(taken) - 1} more)" if len(taken) > 1 else ""),
                             hint="pass --overwrite to replace them, or choose another -o folder")
    entries = _run_all(jobs, workers, progress)
    failed = next((e for e in entries if "error" in e), None)
    if failed is not None:
        raise getattr(errors, failed["error"], ElirError)(failed["message"], hint=failed["hint"])
    files = []
    for job, entry in zip(jobs, entries):
        out_rel = Path(job.out).relative_to(lq_dir).as_posix()
        entry["output"] = out_rel
        if job.mask_out:
            entry["mask"] = Path(job.mask_out).relative_to(lq_dir).as_posix()
        files.append(dict(sorted(entry.items())))
    manifest = {
        "tool": f"elir-cli {__version__}",
        "command": "elir degrade",
        "task": task,
        "seed": int(seed),
        "size": size,
        "seeding": "per file: sha256('elir-degrade\\0' + task + '\\0' + seed + '\\0' + input path), first 8 bytes little-endian",
        "parameters": spec.parameters,
        "files": files,
    }
    write_bytes_atomic(manifest_path, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode(),
                       overwrite=overwrite)
    return manifest


def _run_all(jobs: list[_Job], workers: int, progress: Callable[[int, int, str], None] | None) -> list[dict[str, Any]]:
    total = len(jobs)
    if workers == 1 or total == 1:
        results = []
        for i, job in enumerate(jobs):
            results.append(_run_job(job))
            if progress:
                progress(i + 1, total, job.relative)
        return results
    import multiprocessing

    # spawn: a forked copy of a process that has started threads (torch, OpenCV) can deadlock.
    with ProcessPoolExecutor(max_workers=min(workers, total), mp_context=multiprocessing.get_context("spawn")) as pool:
        results = []
        for i, (job, entry) in enumerate(zip(jobs, pool.map(_run_job, jobs, chunksize=1))):
            results.append(entry)
            if progress:
                progress(i + 1, total, job.relative)
        return results


def read_manifest(lq_dir: Path) -> dict[str, Any] | None:
    """The ``degradation.json`` of an LQ folder, or None if it has none."""
    path = lq_dir / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UsageError(f"{path} is not valid JSON: {exc}", hint="re-run elir degrade") from None
