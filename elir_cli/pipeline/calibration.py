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
import functools
import math
import statistics
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


def _restore_one(model: "ElirModel", crop: np.ndarray, index: int, device: "torch.device") -> "torch.Tensor":
    """Calibration image number ``index`` restored alone, with its own fixed noise."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None].to(device)  # (1,3,S,S)
    generator = torch.Generator(device="cpu").manual_seed(SEED + index)
    return model.restore(x, generator=generator).float().cpu()


def _restore_all(model: "ElirModel", inputs: np.ndarray, device: "torch.device") -> list["torch.Tensor"]:
    """Each calibration image restored alone, with its own fixed noise."""
    return [_restore_one(model, crop, i, device) for i, crop in enumerate(inputs)]


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
    from elir_cli.model.runtime import OPENVINO, fp32_runtime, int8_runtime, prepare_model, torch_fp32_runtime

    say = log or (lambda message: None)
    if sha256 is None and weights is not None and (runtime.backend == OPENVINO or runtime.int8_candidate or (
            runtime.auto and runtime.compute_dtype is not None)):
        sha256 = sha256_file(weights)
    if runtime.int8:
        return _int8_choice(model, runtime, sha256=sha256, task=task or model.task, force=force, say=say, faces=faces)
    if runtime.int8_candidate and not force and sha256 is not None and (task or model.task):
        record = read_calibration(sha256, "int8", INT8_KIND)
        uses, why = int8_verdict(record, runtime.precision) if record is not None else (False, "")
        if uses and _int8_cached(sha256):
            chosen = int8_runtime(runtime)
            say(f"Using int8 (openvino) instead of {runtime.precision}, by its calibration record: {why}")
            return Choice(prepare(model, chosen, sha256), chosen, record)
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


def _int8_cached(sha256: str) -> bool:
    """Whether the four quantized networks of the weights file with ``sha256`` are in its OpenVINO cache."""
    from elir_cli.model.int8 import ir_path
    from elir_cli.model.openvino_backend import cache_folder
    from elir_cli.model.stages import STAGES

    folder = cache_folder(openvino_cache_dir(sha256))
    return all(ir_path(folder, name).is_file() and ir_path(folder, name).with_suffix(".bin").is_file()
               for name in STAGES)


def _int8_choice(model: "ElirModel", runtime: "Runtime", *, sha256: str | None, task: str | None, force: bool,
                 say: Log, faces: list[np.ndarray] | None) -> Choice:
    """``--precision int8``: the quantized networks from the cache, or quantized now; the measured dB said."""
    from elir_cli.errors import ElirError

    if task is None:
        raise ElirError("int8 needs the weights' task to quantize them (its calibration set depends on it)",
                        hint="give --task")
    record = None if force or sha256 is None else read_calibration(sha256, "int8", INT8_KIND)
    if record is not None and sha256 is not None and _int8_cached(sha256):
        quantized = prepare(model, runtime, sha256)
    else:
        try:
            quantized, record = calibrate_int8(model, task, sha256=sha256, log=say, faces=faces)
        except FileNotFoundError as exc:
            raise ElirError(f"int8 could not be calibrated: {first_line(exc, 200)}",
                            hint="reinstall elir-cli (its calibration faces are missing)") from exc
        except (OSError, RuntimeError, ValueError, MemoryError) as exc:  # OpenVINO's and NNCF's errors
            raise ElirError(f"int8 quantization failed: {first_line(exc, 200)}",
                            hint="use --precision auto (or fp32/bf16); elir doctor shows the OpenVINO and NNCF "
                                 "in use") from exc
        if sha256 is not None:
            try:
                write_calibration(record)
            except OSError as exc:
                say(f"Note: the int8 calibration could not be recorded ({exc})")
    if record.passed:
        say(f"int8 (openvino): {record.psnr_db:.1f} dB vs fp32 on the calibration set (threshold "
            f"{record.threshold_db:.0f})")
        return Choice(quantized, runtime, record)
    return Choice(quantized, runtime, record,
                  f"int8 as asked, although it is {record.psnr_db:.1f} dB from fp32 on the calibration set, below "
                  f"{record.threshold_db:.0f} dB; --precision auto would not use it")


def _failed_note(record: CalibrationRecord) -> str:
    return (f"float32: {record.precision} changed these weights' output too much "
            f"({record.psnr_db:.1f} dB PSNR against fp32, below {record.threshold_db:.0f} dB); "
            "--precision bf16/fp16 forces the reduced one")


# -- int8 (OpenVINO + NNCF) ------------------------------------------------------------
#
# int8 is a different kind of reduced precision: it has to be made (quantized from
# the inputs each network meets), not just switched on, and it pays only where the
# CPU's int8 kernels beat its float ones. So its calibration quantizes, measures the
# output against PyTorch float32 like bf16's, and also times int8, fp32 and (where
# the CPU has it natively) bf16 on the same images in the same run; ``auto`` uses
# the record (:func:`int8_verdict`) and never quantizes on its own: a quantization
# takes about a minute at 512 (``--precision int8`` or ``elir models verify
# --precision`` makes it, once per weights file).

INT8_MIN_SPEEDUP = 1.5  # auto picks int8 only where it is at least this much faster than fp32 (issue 23)
# ... and, where auto's alternative is bf16, at least this much faster than bf16: "beats bf16"
# by more than the run-to-run noise of a timing on a busy machine (about 5 % here).
INT8_MIN_SPEEDUP_OVER_BF16 = 1.1
METRIC_CAP_DB = 80.0  # the accuracy-control metric: PSNR capped here, so identical outputs score finitely
INT8_KIND = "cpu-openvino"  # calibration records of int8 are kept under this device kind


def int8_verdict(record: CalibrationRecord, alternative: str = "fp32") -> tuple[bool, str]:
    """Whether ``auto`` uses int8 by this record, where it would otherwise use ``alternative``; and why."""
    if not record.passed:
        return False, (f"int8 is {record.psnr_db:.1f} dB from fp32 on the calibration set, below "
                       f"{record.threshold_db:.0f} dB")
    if not record.seconds_per_image or not record.fp32_seconds_per_image:
        return False, "int8's speed was not measured (calibrate again: elir models verify --precision)"
    over_fp32 = record.fp32_seconds_per_image / record.seconds_per_image
    if over_fp32 < INT8_MIN_SPEEDUP:
        return False, f"int8 is {over_fp32:.2f}x as fast as fp32 here, under the {INT8_MIN_SPEEDUP}x that pays"
    if alternative == "bf16":
        if not record.bf16_seconds_per_image:
            return False, "int8 was not timed against bf16 (calibrate again: elir models verify --precision)"
        over_bf16 = record.bf16_seconds_per_image / record.seconds_per_image
        if over_bf16 < INT8_MIN_SPEEDUP_OVER_BF16:
            return False, (f"int8 is {over_bf16:.2f}x as fast as bf16 here, under the "
                           f"{INT8_MIN_SPEEDUP_OVER_BF16}x that beats it")
        return True, (f"int8: {record.psnr_db:.1f} dB vs fp32, {over_fp32:.2f}x as fast as fp32 and "
                      f"{over_bf16:.2f}x as fast as bf16")
    return True, f"int8: {record.psnr_db:.1f} dB vs fp32, {over_fp32:.2f}x as fast as fp32"


def _paired_seconds(models: dict[str, "ElirModel"], inputs: np.ndarray, device: "torch.device") -> dict[str, float]:
    """Median seconds per image of each model, timed in turn image by image, after one warm-up image each.

    Interleaved, so that a busy spell on the machine slows all of them alike
    and their ratio holds (timed one model after the other, a shared 2-core
    machine gave fp32/int8 ratios of 1.8x and 3.9x for the same pair).
    """
    seconds: dict[str, list[float]] = {name: [] for name in models}
    for i, crop in enumerate(inputs):
        for name, model in models.items():
            started = time.perf_counter()
            _restore_one(model, crop, i, device)
            seconds[name].append(time.perf_counter() - started)
    return {name: statistics.median(times[1:] or times) for name, times in seconds.items()}


def _stage_inputs(model: "ElirModel", inputs: np.ndarray, device: "torch.device"
                  ) -> tuple[list["torch.Tensor"], dict[str, list[list[np.ndarray]]], dict[str, float]]:
    """The float32 ``model``'s outputs over the calibration set, what each of its networks receives, and
    the seconds each network takes."""
    from elir_cli.model.stages import STAGES

    met: dict[str, list[list[np.ndarray]]] = {name: [] for name in STAGES}
    spent = dict.fromkeys(STAGES, 0.0)
    started: dict[str, float] = {}
    hooks = []
    for name in STAGES:
        module = getattr(model, name)

        def before(_module, args, name=name):  # type: ignore[no-untyped-def]
            met[name].append([a.detach().float().contiguous().cpu().numpy().copy() for a in args])
            started[name] = time.perf_counter()

        def after(_module, _args, _output, name=name):  # type: ignore[no-untyped-def]
            spent[name] += time.perf_counter() - started[name]

        hooks += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    try:
        outputs = _restore_all(model, inputs, device)
    finally:
        for hook in hooks:
            hook.remove()
    return outputs, met, spent


def calibrate_int8(model: "ElirModel", task: str, *, sha256: str | None, log: Log | None = None,
                   faces: list[np.ndarray] | None = None) -> tuple["ElirModel", CalibrationRecord]:
    """Quantize the float32 ``model`` to int8 on OpenVINO, within :data:`THRESHOLD_DB` of fp32 where NNCF can.

    1. The float32 PyTorch model restores the calibration set; each
       network's inputs are kept (NNCF's calibration data), and the outputs
       are the reference.
    2. Each network is quantized (:func:`elir_cli.model.int8.quantize`) and
       the whole int8 restorer is measured against the reference.
    3. Below the threshold, NNCF's accuracy control
       (:func:`~elir_cli.model.int8.quantize_with_control`) quantizes the
       networks again one at a time, the costliest in fp32 time first, the
       others at fp32 until their turn: each keeps in float32 the layers that
       bring the whole restorer (min PSNR over the set, per image for the
       ranking) back within the threshold, spending what the earlier ones
       left. A network can always be reverted whole, so the result meets the
       threshold on the calibration set unless NNCF stops early.
    4. The result is timed against PyTorch fp32 (and bf16 where native), on
       the same images, in turn (:func:`_paired_seconds`), and recorded (when ``sha256`` is known, with the
       quantized networks in the weights file's OpenVINO cache).

    Returns the int8 model and its record (not yet written).
    """
    import torch

    from elir_cli.model import int8
    from elir_cli.model.openvino_backend import OpenVinoStage, convert, run_compiled
    from elir_cli.model.runtime import cpu_supports_bf16, prepare_model, resolve_runtime
    from elir_cli.model.stages import STAGES, examples, with_stages

    say = log or (lambda message: None)
    int8.require_nncf()
    started = time.perf_counter()
    device = torch.device("cpu")
    inputs = calibration_set(task, faces)
    say(f"Quantizing to int8 (openvino) for these weights: {len(inputs)} calibration images, once per weights "
        "file...")
    reference = prepare_model(model, resolve_runtime("cpu", "fp32", "torch"))
    wanted, met, spent = _stage_inputs(reference, inputs, device)
    threads = torch.get_num_threads()
    example = examples(reference)
    converted = {name: convert(getattr(reference, name), example[name]) for name in STAGES}
    plain = {name: int8.quantize(converted[name], met[name]) for name in STAGES}

    built: dict[tuple[str, int], OpenVinoStage] = {}  # compiled once, however often the restorer is assembled

    def assemble(chosen: dict[str, object | None], compiled: tuple[str, object] | None = None) -> "ElirModel":
        """The restorer with each network at int8 (its quantized model) or fp32 (None), one maybe NNCF's."""
        def make(name: str, module: torch.nn.Module, ex: tuple[torch.Tensor, ...]) -> object:
            if compiled is not None and compiled[0] == name:  # NNCF's, during accuracy control
                return functools.partial(run_compiled, compiled[1])
            quantized = chosen[name]
            network = quantized if quantized is not None else converted[name]
            key = (name, id(network))
            if key not in built:
                built[key] = OpenVinoStage(name, module, "int8" if quantized is not None else "fp32", example=ex,
                                           cache_dir=None, threads=threads, converted=network)
            return built[key]
        return with_stages(reference, "openvino", "int8", make)  # type: ignore[arg-type]

    def scores(candidate: "ElirModel", items: list[int]) -> list[float]:
        """Capped PSNR of each item (an image's index: its noise is the reference's) against fp32."""
        return [min(METRIC_CAP_DB, psnr_db(wanted[i], _restore_one(candidate, inputs[i], i, device))) for i in items]

    chosen: dict[str, object | None] = {name: plain[name].model for name in STAGES}
    per_image = scores(assemble(chosen), list(range(len(inputs))))
    reverted = 0
    if min(per_image) < THRESHOLD_DB:
        say(f"int8 everywhere is {min(per_image):.1f} dB from fp32 (threshold {THRESHOLD_DB:.0f}); NNCF's accuracy "
            "control keeps the most sensitive layers in fp32...")
        chosen = dict.fromkeys(STAGES)
        per_image = [METRIC_CAP_DB]  # all four networks at fp32
        for name in sorted(STAGES, key=lambda n: -spent[n]):
            def validate(compiled: object, items: list[int], name: str = name) -> tuple[float, list[float]]:
                values = scores(assemble(chosen, (name, compiled)), list(items))
                return min(values), values

            result = int8.quantize_with_control(converted[name], met[name], list(range(len(inputs))), validate,
                                                max_drop=max(0.0, min(per_image) - THRESHOLD_DB), plain=plain[name])
            chosen[name] = result.model
            reverted += result.reverted
            per_image = scores(assemble(chosen), list(range(len(inputs))))
    from elir_cli.model.openvino_backend import to_openvino

    final = to_openvino(reference, "int8", cache_dir=None if sha256 is None else openvino_cache_dir(sha256),
                        threads=threads, quantized=dict(chosen))
    contenders = {"int8": final, "fp32": reference}
    if cpu_supports_bf16():
        contenders["bf16"] = prepare_model(copy.deepcopy(model), resolve_runtime("cpu", "bf16", "torch"))
    timings = _paired_seconds(contenders, inputs, device)
    del contenders
    int8_seconds, fp32_seconds, bf16_seconds = timings["int8"], timings["fp32"], timings.get("bf16")
    quantized = sum(int8.quantizers(v) for v in chosen.values() if v is not None)
    record = CalibrationRecord(
        sha256=sha256 or "", precision="int8", device_kind=INT8_KIND, psnr_db=round(min(per_image), 2),
        threshold_db=THRESHOLD_DB, passed=min(per_image) >= THRESHOLD_DB, images=len(per_image),
        seconds=round(time.perf_counter() - started, 2), task=task, per_image_db=tuple(round(p, 2) for p in per_image),
        seconds_per_image=round(int8_seconds, 4), fp32_seconds_per_image=round(fp32_seconds, 4),
        bf16_seconds_per_image=None if bf16_seconds is None else round(bf16_seconds, 4),
        quantized=quantized, reverted=reverted)
    say(f"Quantized in {record.seconds:.1f} s: int8 vs fp32 {record.psnr_db:.1f} dB (threshold {THRESHOLD_DB:.0f}), "
        f"{fp32_seconds / int8_seconds:.2f}x as fast as fp32"
        + ("" if bf16_seconds is None else f", {bf16_seconds / int8_seconds:.2f}x as fast as bf16")
        + (f"; {reverted} of {quantized + reverted} quantized tensors kept in fp32" if reverted else ""))
    return final, record
