"""Restoring image files: settings, one reusable restorer, output names, records.

The library behind ``elir restore`` and ``elir batch``. A :class:`FileRestorer`
loads the model, the detector and the background model once and restores file
after file; every file gets a fresh generator seeded with ``seed``, so a file's
result does not depend on which files came before it (a resumed batch gives
the same bytes as an uninterrupted one).
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from elir_cli.errors import ElirError, OutputExistsError, UsageError, first_line
from elir_cli.registry.tasks import get_task

if TYPE_CHECKING:
    import torch

    from elir_cli.images.read import DecodedImage
    from elir_cli.model.elir import ElirModel
    from .photo import RestoreResult
    from elir_cli.model.runtime import Runtime

HASH_CHUNK = 1 << 20
# The settings that decide which models a FileRestorer loads (FileRestorer.sharing).
MODEL_FIELDS = ("task", "weights", "device", "precision", "backend", "compile", "bg_task", "detector", "batch_size")
COMPARE_SUFFIX = "_compare"
FACES_DIR_BEFORE = "before"
FACES_DIR_AFTER = "after"


@dataclass(frozen=True)
class RestoreSettings:
    """Everything that decides a restoration, as given on the command line."""

    task: str = "bfr"
    weights: str | None = None
    device: str = "auto"
    precision: str = "auto"
    backend: str = "torch"  # or "openvino" (runtime.BACKENDS)
    steps: int | None = None
    fidelity: float = 1.0
    seed: int | None = None
    batch_size: int | None = None  # None: runtime.auto_batch_size for the device
    compile: bool = False  # torch.compile the networks (runtime.compile_model)
    upscale: int | None = None
    bg_task: str | None = None
    aligned: bool = False
    only_center_face: bool = False
    face_indices: tuple[int, ...] | None = None
    max_faces: int | None = None
    min_face_size: float = 0.0
    det_threshold: float | None = None
    detector: str | None = None
    ext: str = "auto"
    quality: int = 95
    suffix: str = "_restored"
    overwrite: bool = False
    save_faces: str | None = None
    compare: bool = False
    max_pixels: int | None = None

    def __post_init__(self) -> None:
        get_task(self.task)
        if self.steps is not None and self.steps <= 0:
            raise UsageError(f"--steps must be positive, got {self.steps}")
        if not 0.0 <= self.fidelity <= 1.0:
            raise UsageError(f"--fidelity must be between 0 and 1, got {self.fidelity}")
        if self.batch_size is not None and self.batch_size <= 0:
            raise UsageError(f"--batch-size must be positive, got {self.batch_size}")
        if self.upscale is not None and self.upscale <= 0:
            raise UsageError(f"--upscale must be positive, got {self.upscale}")
        if not 1 <= self.quality <= 100:
            raise UsageError(f"--quality must be between 1 and 100, got {self.quality}")
        from .photo import BG_TASKS, FACE_CHOICE_FLAGS, face_choices_given

        spec = get_task(self.task)
        if self.bg_task is not None:
            if self.bg_task not in BG_TASKS:
                raise UsageError(f"--bg-task {self.bg_task!r} is not a background task",
                                 hint=f"use one of: {', '.join(BG_TASKS)}")
            if spec.kind != "face" or self.aligned:
                raise UsageError("--bg-task only applies to face tasks on whole photos",
                                 hint="drop --bg-task (bsr and --aligned restore the whole image)")
        if self.aligned and spec.kind != "face":
            raise UsageError(f"--aligned is for face tasks; {self.task} restores whole photos")
        choosing = [FACE_CHOICE_FLAGS[name] for name in face_choices_given(
            face_indices=self.face_indices, max_faces=self.max_faces, only_center_face=self.only_center_face,
            min_face_size=self.min_face_size, det_threshold=self.det_threshold, detector=self.detector)]
        if choosing and (self.aligned or spec.kind != "face"):
            why = "--aligned skips" if self.aligned else f"task {self.task} restores whole photos, without"
            raise UsageError(f"{why} face detection, so {', '.join(choosing)} would be ignored",
                             hint="drop them" + (", or drop --aligned to detect and choose faces" if self.aligned else ""))
        if self.det_threshold is not None and not 0.0 < self.det_threshold < 1.0:
            raise UsageError(f"--det-threshold must be between 0 and 1 (exclusive), got {self.det_threshold}")


@dataclass
class FileRecord:
    """What happened to one input file (for --json and --report)."""

    input: str
    output: str | None = None
    status: str = "pending"  # restored | skipped | failed
    error: str | None = None
    hint: str | None = None
    faces: int | None = None
    face_boxes: list[list[float]] = field(default_factory=list)
    seconds: float | None = None
    warnings: list[str] = field(default_factory=list)
    size: list[int] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def parse_face_indices(text: str | None) -> tuple[int, ...] | None:
    """``"0,2"`` -> (0, 2); a clear error for anything else."""
    if text is None or not text.strip():
        return None
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"--faces takes face numbers separated by commas, got {text!r}",
                         hint="for example --faces 0,2 (faces are numbered left to right, top to bottom)") from None
    if any(v < 0 for v in values):
        raise UsageError(f"--faces numbers start at 0, got {text!r}")
    return values


class FileRestorer:
    """Restores decoded images and files with one loaded model, detector and runtime."""

    def __init__(self, settings: RestoreSettings, *, log: Callable[[str], None] | None = None,
                 weights_files: Mapping[str, Path] | None = None) -> None:
        """``weights_files``: weights already fetched (what :meth:`fetch_weights` returned
        elsewhere, e.g. on the machine that plans a distributed batch), used as they are."""
        self.settings = settings
        self._log = log or (lambda message: None)
        self._model: ElirModel | None = None
        self._bg_model: ElirModel | None = None
        self._detector = None
        self.weights_path: Path | None = None
        self._weights_sha256: str | None = None
        self._files: dict[str, Path] = dict(weights_files or {})  # weights source -> local file

    # Resolved on first use, so that a run with nothing to do (every output
    # already there) never imports torch.
    @cached_property
    def runtime(self) -> "Runtime":
        from elir_cli.model.runtime import resolve_runtime

        return resolve_runtime(self.settings.device, self.settings.precision, self.settings.backend)

    @cached_property
    def batch_size(self) -> int:
        from elir_cli.model.runtime import auto_batch_size

        return self.settings.batch_size or auto_batch_size(self.runtime.device)

    @property
    def weights_sha256(self) -> str | None:
        """SHA-256 of the loaded weights file, hashed on first request (only reports need it)."""
        if self._weights_sha256 is None and self.weights_path is not None:
            self._weights_sha256 = sha256_file(self.weights_path)
        return self._weights_sha256

    def kept_output(self, dst: "OutputName | None") -> Path | None:
        """The existing output of ``dst`` that this run keeps (None: it writes ``dst``)."""
        return None if dst is None or self.settings.overwrite else dst.existing()

    def needs_model(self, dst: "OutputName | None") -> bool:
        """Whether restoring into ``dst`` would run the model (False: the output exists and is kept)."""
        return self.kept_output(dst) is None

    # -- loading, once ---------------------------------------------------------
    def fetch_weights(self) -> dict[str, Path]:
        """Find (downloading if needed) the weights of the task and the background task.

        Needs no torch, so weights that cannot be had fail at once instead
        of after seconds of imports; :meth:`prepare` does it too. Returns
        the local files by source, for ``weights_files`` of another restorer.
        """
        self.weights_path = self._weights_file(self.settings.weights or self.settings.task, self.settings.task)
        if self.settings.bg_task:
            self._weights_file(self.settings.bg_task, self.settings.bg_task)
        return dict(self._files)

    def prepare(self) -> None:
        """Load the model, the detector and the background model now, so that a
        missing download fails once, before any file, not once per file."""
        self.fetch_weights()
        _ = self.model
        if self.settings.bg_task:
            _ = self.bg_model
        if get_task(self.settings.task).kind == "face" and not self.settings.aligned:
            _ = self.detector

    @property
    def model(self) -> "ElirModel":
        if self._model is None:
            self._model, self.weights_path = self._load(self.settings.weights or self.settings.task,
                                                        self.settings.task)
        return self._model

    def _weights_file(self, source: str, task: str) -> Path:
        """``source`` as a file: a path as given, or the task's registry weights (fetched once)."""
        if source not in self._files:
            path = Path(source)
            if not path.exists() and os.sep not in source and source == task:
                from elir_cli.registry.hub import ensure_task_weights

                path = ensure_task_weights(task)
            self._files[source] = path
        return self._files[source]

    def _load(self, source: str, task: str) -> tuple["ElirModel", Path]:
        from elir_cli.model.runtime import compile_model
        from elir_cli.registry.loading import load_model

        from elir_cli.registry.store import recorded_sha256

        from .calibration import choose_precision

        if self.settings.compile and self.runtime.backend != "torch":
            raise UsageError("--compile is for the torch backend; the openvino backend compiles its own way",
                             hint="drop --compile, or use --backend torch")
        path = self._weights_file(source, task)
        model = load_model(path, task=task)
        if model.task and model.task != task:
            raise UsageError(f"the weights {path} are for task {model.task!r}, not {task!r}")
        sha256 = None
        # Only calibration and the OpenVINO cache need it now.
        if (self.runtime.auto and self.runtime.compute_dtype is not None) or self.runtime.backend != "torch":
            sha256 = recorded_sha256(path, task)
            if source == (self.settings.weights or self.settings.task):
                self._weights_sha256 = sha256
        choice = choose_precision(model, self.runtime, weights=path, sha256=sha256, task=task, log=self._log)
        if choice.note:
            self._log(f"Note: {choice.note}")
        model = choice.model
        return (compile_model(model) if self.settings.compile else model), path

    @property
    def bg_model(self) -> "ElirModel":
        if self._bg_model is None:
            assert self.settings.bg_task is not None
            self._bg_model, _ = self._load(self.settings.bg_task, self.settings.bg_task)
        return self._bg_model

    @property
    def detector(self):  # type: ignore[no-untyped-def]
        if self._detector is None:
            from elir_cli.faces.detection import DEFAULT_DETECTOR, FaceDetector

            self._detector = FaceDetector(self.settings.detector or DEFAULT_DETECTOR, device=self.runtime.device)
        return self._detector

    def sharing(self, settings: RestoreSettings) -> "FileRestorer":
        """A restorer for ``settings`` that uses this one's models and detector, loading them first.

        For callers that keep models loaded and restore each image with its own
        seed, steps, fidelity, face choice and output format (the server).
        ``settings`` must agree with this restorer's on :data:`MODEL_FIELDS`.
        """
        differ = [name for name in MODEL_FIELDS if getattr(settings, name) != getattr(self.settings, name)]
        if differ:
            raise ValueError(f"sharing: settings differ in {', '.join(differ)}, which decide the models")
        self.prepare()
        other = FileRestorer(settings, log=self._log)
        other.__dict__["runtime"] = self.runtime
        other._model, other._bg_model, other._detector = self._model, self._bg_model, self._detector
        other.weights_path, other._files = self.weights_path, self._files
        return other

    def faster_precision_hint(self) -> str | None:
        """A tip when the CPU could run bf16 (AMX/AVX512-BF16) but fp32 was chosen."""
        from elir_cli.model.runtime import cpu_supports_bf16

        if self.runtime.device.type == "cpu" and self.runtime.compute_dtype is None and not self.runtime.auto \
                and cpu_supports_bf16():
            return "this CPU runs bf16 natively: --precision auto (the default) is about 2-3x faster when calibration allows"
        return None

    def device_description(self) -> str:
        """The device and the precision the model runs at (after calibration, once loaded)."""
        if not self._runtime_resolved:  # nothing ran (every output existed): do not import torch to say so
            return f"{self.settings.device} ({self.settings.precision}), nothing loaded"
        if self._model is None:
            return self.runtime.describe()
        backend = ", openvino" if self.runtime.backend == "openvino" else ""
        return f"{self.runtime.device.type} ({self._model.precision}{', auto' if self.runtime.auto else ''}{backend})"

    @property
    def _runtime_resolved(self) -> bool:
        return "runtime" in self.__dict__  # the cached_property has run (torch is imported)

    def describe(self) -> dict[str, Any]:
        """The settings that decide the output bytes, for reports (without importing torch
        when nothing was loaded: the batch size is then the one asked for, or None)."""
        s = self.settings
        return {
            "task": s.task, "weights": str(self.weights_path) if self.weights_path else None,
            "weights_sha256": self.weights_sha256, "seed": s.seed,
            "steps": s.steps if s.steps is not None else (
                self._model.config.k_steps if self._model is not None else get_task(s.task).model.k_steps),
            "fidelity": s.fidelity, "upscale": s.upscale, "bg_task": s.bg_task,
            "device": self.device_description(),
            "batch_size": self.batch_size if self._runtime_resolved else s.batch_size, "compile": s.compile,
        }

    # -- restoring ---------------------------------------------------------------
    def restore_decoded(self, image: "DecodedImage", *, faces_dir: Path | None = None) -> "RestoreResult":
        from .photo import model_restorer, restore_array

        s = self.settings
        restorer = model_restorer(self.model, seed=s.seed, steps=s.steps, fidelity=s.fidelity)
        if faces_dir is not None:
            restorer = _saving_crops(restorer, faces_dir)
        bg_restorer = None
        if s.bg_task:
            bg_restorer = model_restorer(self.bg_model, seed=s.seed)
        spec = get_task(s.task)
        needs_detector = spec.kind == "face" and not s.aligned
        options: dict[str, Any] = {}
        if s.det_threshold is not None:
            options["det_threshold"] = s.det_threshold
        return restore_array(
            image.rgb, task=s.task, restorer=restorer, device=self.runtime.device,
            batch_size=self.batch_size, upscale=s.upscale, bg_task=s.bg_task, bg_restorer=bg_restorer,
            aligned=s.aligned, min_face_size=s.min_face_size, only_center_face=s.only_center_face,
            max_faces=s.max_faces, face_indices=s.face_indices,
            detector=self.detector if needs_detector else None, steps=s.steps, fidelity=s.fidelity,
            seed=s.seed, **options,
        )

    def restore_file(self, src: Path | None, dst: "OutputName | None", *, data: bytes | None = None,
                     display_name: str | None = None, faces_key: str | None = None,
                     put: Callable[[str, bytes], str] | None = None) -> tuple[FileRecord, bytes | None]:
        """Restore ``src`` (or ``data``) into ``dst`` (or return the bytes when ``dst`` is None).

        ``put``, with ``dst`` None: the output goes to storage that is not a local
        folder; it is encoded as for a file (format, suffix, notes on losses) and
        ``put(suffix, bytes)`` stores it and returns where (the record's output).
        Never raises an :class:`ElirError`: it is recorded as a failure.
        """
        from elir_cli.images.read import DEFAULT_MAX_PIXELS, make_output, read_image
        from elir_cli.images.write import SUFFIX_FORMATS, choose_format, encode_image, format_losses, output_suffix, write_image

        s = self.settings
        record = FileRecord(input=display_name or str(src))
        started = time.perf_counter()
        try:
            if (existing := self.kept_output(dst)) is not None:
                raise OutputExistsError(f"output {existing} already exists",
                                        hint="pass --overwrite to replace it, or choose another name")
            source: Any = src
            if data is not None:  # errors name the data as the caller does (a URL, <stdin>)
                source = io.BytesIO(data)
                source.name = display_name or "image data"
            image = read_image(source, max_pixels=s.max_pixels or DEFAULT_MAX_PIXELS)
            record.warnings.extend(image.warnings)
            faces_dir = None
            if s.save_faces:
                # keyed by the output's name (unique within a run); a batch passes the mirrored path
                key = faces_key or ((dst.path.stem if dst.exact else dst.path.name) if dst is not None else "stdin")
                faces_dir = Path(s.save_faces) / key
            result = self.restore_decoded(image, faces_dir=faces_dir)
            output = make_output(image, result.array)
            record.faces = len(result.faces)
            record.face_boxes = [[round(float(v), 1) for v in f.box] for f in result.faces]
            record.size = list(output.size)
            payload = None
            if dst is None and put is not None:
                fmt = choose_format(output, s.ext)
                record.warnings.extend(format_losses(output, fmt))
                record.output = put(output_suffix(fmt), encode_image(output, fmt, quality=s.quality))
            elif dst is None:
                payload = encode_image(output, s.ext, quality=s.quality)
            else:
                target = dst.path if dst.exact else dst.path.with_name(
                    dst.path.name + output_suffix(choose_format(output, s.ext)))
                record.warnings.extend(format_losses(output, SUFFIX_FORMATS.get(target.suffix.lower())
                                                     or choose_format(output, s.ext)))
                written = write_image(output, target, ext=s.ext, quality=s.quality, overwrite=s.overwrite,
                                      source_path=src)
                record.output = str(written)
                if s.compare:
                    # without alpha: the input's alpha cannot be stretched over two panels
                    compare = replace(make_output(image, side_by_side(image.rgb, result.array)), alpha=None)
                    write_image(compare, written.with_name(written.stem + COMPARE_SUFFIX + written.suffix),
                                ext=s.ext, quality=s.quality, overwrite=s.overwrite, source_path=src)
            record.status = "restored"
        except ElirError as exc:
            record.status = "failed"
            record.error = exc.message
            record.hint = exc.hint
            payload = None
        except (MemoryError, RuntimeError, ValueError, OSError) as exc:  # one file never stops the rest
            if os.environ.get("ELIR_DEBUG") == "1":
                raise
            first = first_line(exc)
            record.status = "failed"
            record.error = f"{record.input}: {type(exc).__name__}: {first}"
            record.hint = ("out of memory: try a smaller --upscale or --batch-size" if _is_oom(exc)
                           else "rerun with --debug for the traceback and report it")
            payload = None
        record.seconds = round(time.perf_counter() - started, 3)
        return record, payload


def _is_oom(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or "out of memory" in text or "insufficient memory" in text


def side_by_side(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Input (resized with nearest neighbour to the output size) left, output right."""
    height, width = after.shape[:2]
    ys = (np.arange(height) * before.shape[0] // height).clip(0, before.shape[0] - 1)
    xs = (np.arange(width) * before.shape[1] // width).clip(0, before.shape[1] - 1)
    return np.concatenate([before[ys][:, xs], after], axis=1)


def _saving_crops(restorer: Callable[["torch.Tensor"], "torch.Tensor"], folder: Path
                  ) -> Callable[["torch.Tensor"], "torch.Tensor"]:
    """Wrap a crop restorer so every crop is saved before and after restoration."""
    from elir_cli.images.read import DecodedImage
    from elir_cli.images.write import write_image

    counter = [0]

    def save(batch: "torch.Tensor", which: str, start: int) -> None:
        arrays = batch.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
        for i, crop in enumerate(arrays):
            write_image(DecodedImage(rgb=np.ascontiguousarray(crop, dtype=np.float32)),
                        folder / which / f"face_{start + i:03d}.png", overwrite=True)

    def restore(batch: "torch.Tensor") -> "torch.Tensor":
        start = counter[0]
        save(batch, FACES_DIR_BEFORE, start)
        out = restorer(batch)
        save(out, FACES_DIR_AFTER, start)
        counter[0] += batch.shape[0]
        return out

    return restore


@dataclass(frozen=True)
class OutputName:
    """An output path; unless ``exact``, the format's suffix is appended once it is known."""

    path: Path
    exact: bool = False

    def existing(self) -> Path | None:
        """The output already written for this name, if any (for skipping and resuming)."""
        if self.exact:
            return self.path if self.path.exists() else None
        from elir_cli.images.write import SUFFIX_FORMATS

        for suffix in SUFFIX_FORMATS:
            candidate = self.path.with_name(self.path.name + suffix)
            if candidate.exists():
                return candidate
        return None


def output_name_for(src: Path, *, out: str | None, suffix: str, many: bool) -> OutputName:
    """Where ``elir restore`` writes ``src``: next to it with ``suffix``, into folder ``out``
    (several inputs, an existing folder, or a name ending in a slash), or to the file ``out``."""
    stem = src.stem + suffix
    if out is None:
        return OutputName(src.with_name(stem))
    folder = Path(out)
    if many or folder.is_dir() or out.endswith(("/", os.sep)):
        return OutputName(folder / stem)
    return OutputName(folder, exact=True)


def check_destinations(pairs: Sequence[tuple[Path, "OutputName"]]) -> None:
    """Refuse, before any work, outputs that collide with each other or with any input."""
    inputs = {src.resolve() for src, _ in pairs}
    seen: dict[Path, Path] = {}
    for src, name in pairs:
        key = name.path.resolve()
        if key in seen:
            raise UsageError(f"{seen[key]} and {src} would both be written to {name.path}.*",
                             hint="restore them into different folders, or rename one")
        seen[key] = src
        if name.exact and key in inputs:
            raise UsageError(f"output {name.path} is one of the inputs; refusing to replace it",
                             hint="choose another output name or folder")
        if not name.exact:
            from elir_cli.images.write import SUFFIX_FORMATS

            clash = [p for p in inputs if p.parent == key.parent and p.stem == key.name
                     and p.suffix.lower() in SUFFIX_FORMATS]
            if clash:
                raise UsageError(f"the output for {src} could replace the input {clash[0]}",
                                 hint="use another --suffix or output folder")


def expand_inputs(patterns: Sequence[str]) -> list[Path]:
    """Files, folders' direct image files and globs, in the given order, without repeats."""
    import glob

    seen: set[Path] = set()
    files: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise UsageError(f"no files match {pattern!r}", hint="check the pattern (quote it to let elir expand it)")
        for match in matches:
            path = Path(match)
            if not path.exists():
                raise UsageError(f"no such file: {path}", hint="check the name (quote globs to let elir expand them)")
            if path.is_dir():
                raise UsageError(f"{path} is a folder", hint=f"use: elir batch {path} -o OUT")
            key = path.resolve()
            if key not in seen:
                seen.add(key)
                files.append(path)
    return files
