"""Calibration: is a reduced precision safe for these weights? Measured, not assumed.

Before ``--precision auto`` uses bf16 (or fp16) with a weights file on a
device kind for the first time, the model restores a fixed calibration set in
float32 and in the reduced precision, and the PSNR between the two outputs
decides: at or above :data:`THRESHOLD_DB` the reduced precision is used,
below it float32, with a one-line note saying why. The result is recorded in
the store (``registry.store.CalibrationRecord``, keyed by the file's sha256,
the precision and the device kind), so it runs once per file and device kind.

The calibration set, the same for every run: the bundled example faces
(``examples/*_degraded.jpg``, detected and aligned to the FFHQ template at
512 by ``tools/make_calibration_faces.py`` and shipped as package data in
``calibration_faces/``), brought to the task's size and prepared as the
task's model sees its inputs (sr: the faces layer's x8 down/up input;
denoising: added Gaussian noise; inpainting: a masked band; bsr: a whole-image
crop), plus one synthetic input (smooth gradients, edges and texture), each
with fixed noise. If the set cannot be read or the run fails, the result is
float32 with a note, never an error (and nothing is recorded, so the next
run tries again).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from elir_cli.errors import first_line
from elir_cli.registry.store import (CalibrationRecord, onnxruntime_cache_dir, openvino_cache_dir, read_calibration,
                                     sha256_file, write_calibration)
from elir_cli.registry.tasks import Task, get_task

if TYPE_CHECKING:
    import torch

    from elir_cli.model.elir import ElirModel
    from elir_cli.model.runtime import Runtime

THRESHOLD_DB = 45.0
FACES_DIR = Path(__file__).with_name("calibration_faces")
SEED = 20251
DENOISING_SIGMA = 25 / 255  # the paper's denoising level
INPAINT_BAND = (0.45, 0.62)  # rows of the crop masked for inpainting (the nose/mouth band)
BSR_FACTOR = 4
PSNR_CAP_DB = 120.0  # identical outputs: report this rather than infinity

Log = Callable[[str], None]


@dataclass(frozen=True)
class Choice:
    """What calibration decided: the model to use and why."""

    model: "ElirModel"
    runtime: "Runtime"
    record: CalibrationRecord | None  # None: no calibration ran or was recorded
    note: str | None = None  # a one-line note for the user when float32 was chosen


def calibration_faces(folder: Path | None = None) -> list[np.ndarray]:
    """The shipped aligned faces, float32 HxWx3 in [0,1]; [] when they are missing."""
    from PIL import Image

    folder = FACES_DIR if folder is None else folder
    faces = []
    for path in sorted(folder.glob("*.jpg")) if folder.is_dir() else []:
        with Image.open(path) as image:
            faces.append(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)
    return faces


def synthetic_image(size: int) -> np.ndarray:
    """Smooth gradients, a hard-edged disc and fine texture, float32 in [0,1] (fixed)."""
    rng = np.random.default_rng(SEED)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    r = 0.5 + 0.4 * np.sin(6 * xx) * np.cos(3 * yy)
    g = yy
    b = 1.0 - xx
    disc = ((xx - 0.5) ** 2 + (yy - 0.5) ** 2 < 0.08).astype(np.float32)
    rgb = np.stack([r, g, b], axis=-1) * (1 - 0.5 * disc[..., None]) + 0.1 * disc[..., None]
    rgb = rgb + 0.05 * rng.standard_normal(rgb.shape).astype(np.float32)
    return np.clip(rgb, 0.0, 1.0).astype(np.float32)


def task_input(image: np.ndarray, spec: Task, rng: np.random.Generator) -> np.ndarray:
    """One image brought to ``spec.input_size`` and prepared as the task's model sees it."""
    import cv2

    from elir_cli.faces.alignment import sr_input

    size = spec.input_size
    if spec.kind == "image":  # whole photos: a central crop, downscaled and nearest-upscaled
        side = min(image.shape[:2])
        top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
        crop = cv2.resize(image[top:top + side, left:left + side], (size // BSR_FACTOR,) * 2,
                          interpolation=cv2.INTER_AREA)
        return np.repeat(np.repeat(crop, BSR_FACTOR, axis=0), BSR_FACTOR, axis=1)
    crop = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_CUBIC)
    crop = np.clip(crop, 0.0, 1.0)
    if spec.name == "sr":
        crop = sr_input(crop, spec.scale)
    elif spec.name == "denoising":
        crop = np.clip(crop + DENOISING_SIGMA * rng.standard_normal(crop.shape).astype(np.float32), 0.0, 1.0)
    elif spec.name == "inpainting":
        top, bottom = (int(f * size) for f in INPAINT_BAND)
        crop = crop.copy()
        crop[top:bottom] = 0.0
    return crop.astype(np.float32)


def calibration_set(task: str, faces: list[np.ndarray] | None = None) -> np.ndarray:
    """(N,S,S,3) float32: the faces and the synthetic input, prepared for ``task``.

    Raises FileNotFoundError when the shipped faces are missing.
    """
    spec = get_task(task)
    faces = calibration_faces() if faces is None else faces
    if not faces:
        raise FileNotFoundError(f"no calibration faces in {FACES_DIR}")
    rng = np.random.default_rng(SEED)
    images = [*faces, synthetic_image(max(spec.input_size, faces[0].shape[0]))]
    return np.stack([task_input(image, spec, rng) for image in images])


def psnr_db(a: "torch.Tensor", b: "torch.Tensor") -> float:
    """PSNR of ``b`` against ``a`` (both in [0,1]), capped at :data:`PSNR_CAP_DB`."""
    mse = float(((a.double() - b.double()) ** 2).mean())
    return PSNR_CAP_DB if mse <= 0 else min(PSNR_CAP_DB, 10 * math.log10(1.0 / mse))


def _restore_all(model: "ElirModel", inputs: np.ndarray, device: "torch.device") -> list["torch.Tensor"]:
    """Each calibration image restored alone, with its own fixed noise."""
    import torch

    outputs = []
    for i, crop in enumerate(inputs):
        x = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None].to(device)  # (1,3,S,S)
        generator = torch.Generator(device="cpu").manual_seed(SEED + i)
        outputs.append(model.restore(x, generator=generator).float().cpu())
    return outputs


def measure(model_fp32: "ElirModel", model_reduced: "ElirModel", inputs: np.ndarray,
            device: "torch.device") -> list[float]:
    """Per-image PSNR (dB) between the float32 and the reduced-precision outputs."""
    reference = _restore_all(model_fp32, inputs, device)
    reduced = _restore_all(model_reduced, inputs, device)
    return [psnr_db(a, b) for a, b in zip(reference, reduced)]


def prepare(model: "ElirModel", runtime: "Runtime", sha256: str | None) -> "ElirModel":
    """``runtime.prepare_model``, with the backend's cache of the weights file with ``sha256``."""
    from elir_cli.model.runtime import ONNXRUNTIME, OPENVINO, prepare_model

    cache = None
    if sha256 and runtime.backend == OPENVINO:
        cache = openvino_cache_dir(sha256)
    elif sha256 and runtime.backend == ONNXRUNTIME:
        cache = onnxruntime_cache_dir(sha256)
    return prepare_model(model, runtime, openvino_cache=cache)


def choose_precision(model: "ElirModel", runtime: "Runtime", *, weights: Path | None, sha256: str | None = None,
                     task: str | None = None, force: bool = False, log: Log | None = None,
                     faces: list[np.ndarray] | None = None) -> Choice:
    """Prepare the float32 ``model`` at ``runtime``'s precision, or at float32 where that is unsafe.

    Only a runtime chosen by ``auto`` with a reduced precision is calibrated;
    any other is prepared as asked. A recorded result for the file is reused
    unless ``force``. ``log`` receives the one-line progress and notes. On
    the openvino backend the reduced precision is OpenVINO's, compared with
    PyTorch float32 (the authors' arithmetic), and the fallback is OpenVINO
    float32; its records are kept apart (``runtime.calibration_kind``).
    """
    from elir_cli.model.runtime import OPENVINO, fp32_runtime, prepare_model, torch_fp32_runtime

    say = log or (lambda message: None)
    if sha256 is None and weights is not None and (runtime.backend == OPENVINO or (
            runtime.auto and runtime.compute_dtype is not None)):
        sha256 = sha256_file(weights)
    if runtime.compute_dtype is None or not runtime.auto:
        return Choice(prepare(model, runtime, sha256), runtime, None)
    task = task or model.task
    fallback = fp32_runtime(runtime)
    if task is None:
        note = "float32: the weights do not say their task, so the reduced precision could not be calibrated"
        return Choice(prepare(model, fallback, sha256), fallback, None, note)
    device_kind = runtime.calibration_kind
    record = None if force or sha256 is None else read_calibration(sha256, runtime.precision, device_kind)
    if record is not None:
        if record.passed:
            return Choice(prepare(model, runtime, sha256), runtime, record)
        return Choice(prepare(model, fallback, sha256), fallback, record, _failed_note(record))
    on_openvino = runtime.backend == OPENVINO
    reference = prepare_model(model, torch_fp32_runtime(runtime))
    what = f"{runtime.precision}{' (openvino)' if on_openvino else ''}"
    started = time.perf_counter()
    try:
        inputs = calibration_set(task, faces)
        say(f"Calibrating {what} on {runtime.device.type} for these weights ({len(inputs)} images, "
            "once per weights file)...")
        # OpenVINO converts the float32 modules and leaves them as they are; PyTorch casts a copy.
        reduced = prepare(reference if on_openvino else copy.deepcopy(reference), runtime, sha256)
        per_image = measure(reference, reduced, inputs, runtime.device)
    except (FileNotFoundError, OSError, RuntimeError, ValueError, MemoryError) as exc:
        first = first_line(exc, 200)
        fp32 = prepare(reference, fallback, sha256) if on_openvino else reference
        return Choice(fp32, fallback, None,
                      f"float32: the {runtime.precision} calibration could not run ({first})")
    seconds = time.perf_counter() - started
    record = CalibrationRecord(
        sha256=sha256 or "", precision=runtime.precision, device_kind=device_kind, psnr_db=round(min(per_image), 2),
        threshold_db=THRESHOLD_DB, passed=min(per_image) >= THRESHOLD_DB, images=len(per_image),
        seconds=round(seconds, 2), task=task, per_image_db=tuple(round(p, 2) for p in per_image))
    if sha256 is not None:
        try:
            write_calibration(record)
        except OSError as exc:  # a read-only cache: use the result now, calibrate again next time
            say(f"Note: the calibration result could not be recorded ({exc})")
    say(f"Calibrated in {seconds:.1f} s: {what} vs fp32 {record.psnr_db:.1f} dB "
        f"(threshold {THRESHOLD_DB:.0f}) -> {'using ' + what if record.passed else 'fp32'}")
    if record.passed:
        return Choice(reduced, runtime, record)
    del reduced
    fp32 = prepare(reference, fallback, sha256) if on_openvino else reference
    return Choice(fp32, fallback, record, _failed_note(record))


def _failed_note(record: CalibrationRecord) -> str:
    return (f"float32: {record.precision} changed these weights' output too much "
            f"({record.psnr_db:.1f} dB PSNR against fp32, below {record.threshold_db:.0f} dB); "
            "--precision bf16/fp16 forces the reduced one")
