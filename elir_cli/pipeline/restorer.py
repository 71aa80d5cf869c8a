"""One loaded restorer: :class:`PhotoRestorer`, and the conveniences over it.

A :class:`PhotoRestorer` loads the model, the detector and the background
model once (through :func:`~elir_cli.pipeline.inference.load_model`, the one
loading path) and restores image after image: arrays, PIL images, paths,
bytes and files. Every image gets a fresh generator seeded with ``seed``, so
an image's result does not depend on which images came before it (a resumed
batch gives the same bytes as an uninterrupted one).

The CLI, the server, Ray workers, eval and video all restore through it;
``elir_cli.Restorer`` adds videos and folders on top (:mod:`elir_cli.runner`).
:func:`restore_image` and :func:`restore_array` are one-call conveniences:
they build a restorer for one image.
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from elir_cli.errors import ElirError, OutputExistsError, UsageError, first_line
from elir_cli.registry.store import sha256_file
from elir_cli.registry.tasks import get_task

from .files import COMPARE_SUFFIX, FACES_DIR_AFTER, FACES_DIR_BEFORE, OutputName, PhotoRecord, side_by_side
from .photo import RestoreResult, Restorer as CropRestorer, model_restorer, pil_to_array, restore_photo
from .settings import IMAGE, MODEL, MODEL_FIELDS, OUTPUT, RestoreSettings, with_options

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from elir_cli.faces.detection import FaceDetector
    from elir_cli.images.read import DecodedImage
    from elir_cli.model.elir import ElirModel
    from elir_cli.model.runtime import Runtime

class PhotoRestorer:
    """Restores photos with one loaded model, detector and runtime.

    ``settings``: the options (:class:`RestoreSettings`); or give them as
    keywords (``PhotoRestorer(task="bfr", seed=1)``). ``restorer`` and
    ``bg_restorer`` plug in crop restorers (any callable from a (B,3,S,S)
    float tensor in [0,1] to the same) instead of loading ELIR; ``detector``
    a :class:`~elir_cli.faces.detection.FaceDetector` already built.
    ``weights_files``: weights already fetched (what :meth:`fetch_weights`
    returned elsewhere, e.g. on the machine that plans a distributed batch).
    """

    def __init__(self, settings: RestoreSettings | None = None, *, log: Callable[[str], None] | None = None,
                 weights_files: Mapping[str, Path] | None = None, restorer: CropRestorer | None = None,
                 bg_restorer: CropRestorer | None = None, detector: "FaceDetector | None" = None,
                 **options: Any) -> None:
        if settings is not None and options:
            raise TypeError("give the settings or options as keywords, not both")
        self.settings = settings if settings is not None else RestoreSettings(**options)
        self._log = log or (lambda message: None)
        self._model: ElirModel | None = None
        self._bg_model: ElirModel | None = None
        self._plug_in, self._bg_plug_in = restorer, bg_restorer
        self._detector = detector
        self._identity: Any = None
        self.weights_path: Path | None = None
        self._weights_sha256: str | None = None
        self._files: dict[str, Path] = dict(weights_files or {})  # weights source -> local file

    # Resolved on first use, so that a run with nothing to do (every output
    # already there) never imports torch.
    @cached_property
    def runtime(self) -> "Runtime":
        from elir_cli.model.runtime import runtime_for

        return runtime_for(self.settings.device, self.settings.precision, self.settings.backend)

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
        if self._plug_in is None:
            self.weights_path = self._weights_file(self.settings.weights or self.settings.task, self.settings.task)
        if self.settings.bg_task and self._bg_plug_in is None:
            self._weights_file(self.settings.bg_task, self.settings.bg_task)
        return dict(self._files)

    def prepare(self) -> "PhotoRestorer":
        """Load the model, the detector and the background model now, so that a
        missing download fails once, before any file, not once per file."""
        self.fetch_weights()
        if self._plug_in is None:
            _ = self.model
        if self.settings.bg_task and self._bg_plug_in is None:
            _ = self.bg_model
        if self.detects:
            _ = self.detector
        _ = self.identity  # a missing identity model fails here, before any photo
        return self

    def start(self, loads: bool, *, announce: "Callable[[PhotoRestorer, bool], None] | None" = None) -> None:
        """Begin a run: with ``loads``, find the weights (before torch is imported: unavailable
        weights fail at once), ``announce(self, loads)``, then load the models; without, only announce."""
        if loads:
            self.fetch_weights()
        if announce is not None:
            announce(self, loads)
        if loads:
            self.prepare()

    @property
    def detects(self) -> bool:
        """Whether restoring a photo detects faces (a face task, not aligned, not tiled whole)."""
        s = self.settings
        return get_task(s.task).kind == "face" and not s.aligned and not s.whole_image

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
            elif not path.is_file() and os.sep not in source:  # a local model's name (elir tune)
                from elir_cli.registry.local import local_model_path

                path = local_model_path(source) or path
            self._files[source] = path
        return self._files[source]

    def _load(self, source: str, task: str) -> tuple["ElirModel", Path]:
        from .inference import load_model

        path = self._weights_file(source, task)
        model = load_model(path, task=task, runtime=self.runtime, compile=self.settings.compile, log=self._log,
                           on_sha256=self._note_sha256 if source == (self.settings.weights or self.settings.task)
                           else None)
        return model, path

    def _note_sha256(self, sha256: str) -> None:
        self._weights_sha256 = sha256

    @property
    def bg_model(self) -> "ElirModel":
        if self._bg_model is None:
            assert self.settings.bg_task is not None
            self._bg_model, _ = self._load(self.settings.bg_task, self.settings.bg_task)
        return self._bg_model

    @property
    def detector(self) -> "FaceDetector":
        if self._detector is None:
            from elir_cli.faces.detection import DEFAULT_DETECTOR, cached_detector

            self._detector = cached_detector(self.settings.detector or DEFAULT_DETECTOR, self.runtime.device)
        return self._detector

    def sharing(self, settings: RestoreSettings | None = None, **options: Any) -> "PhotoRestorer":
        """A restorer for other per-image options that uses this one's models and detector, loading them first.

        For callers that keep models loaded and restore each image with its own
        seed, steps, fidelity, face choice and output format (the server).
        ``settings`` (or ``options``, changes to these settings) must agree
        with this restorer's on the options that decide the models.
        """
        settings = settings if settings is not None else self.settings.replace(**options)
        differ = [name for name in MODEL_FIELDS if getattr(settings, name) != getattr(self.settings, name)]
        if differ:
            raise ValueError(f"sharing: settings differ in {', '.join(differ)}, which decide the models")
        self.prepare()
        other = type(self)(settings, log=self._log, restorer=self._plug_in, bg_restorer=self._bg_plug_in,
                           detector=self._detector)
        other.__dict__["runtime"] = self.runtime
        other._model, other._bg_model, other._identity = self._model, self._bg_model, self._identity
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
        if self.runtime.backend == "onnxruntime":
            return self.runtime.describe()
        # the model's own backend: --backend auto runs int8 on OpenVINO where calibration picked it
        backend = ", openvino" if getattr(self._model, "backend", "torch") == "openvino" else ""
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
            "fidelity": s.fidelity, "min_faithfulness": s.min_faithfulness, "color_fix": s.color_fix,
            "upscale": s.upscale, "bg_task": s.bg_task,
            "device": self.device_description(),
            "batch_size": self.batch_size if self._runtime_resolved else s.batch_size, "compile": s.compile,
        }

    # -- restoring ---------------------------------------------------------------
    def restore(self, image: Any, *, mask: "Image.Image | np.ndarray | None" = None, **options: Any
                ) -> RestoreResult:
        """Restore one photo: a PIL image, an HxWx3 array (float in [0,1] or uint8), a path or the file's bytes.

        ``options``: per-image options (``seed``, ``steps``, ``fidelity``,
        ``upscale``, face choice, ...) that differ from this restorer's for
        this call. ``mask``: True (or white) where pixels are missing
        (inpainting). The result's ``.image`` is a PIL image, ``.array``
        the float array, ``.faces`` the restored faces.
        """
        target = self.sharing(**options) if options else self
        return target.restore_array(_to_rgb(image), mask=_to_mask(mask))

    def restore_array(self, rgb: np.ndarray, *, mask: np.ndarray | None = None,
                      faces: "Sequence[Any] | None" = None, restorer: CropRestorer | None = None) -> RestoreResult:
        """Restore a float32 HxWx3 RGB photo in [0,1] (``faces``: restore these, without detecting;
        ``restorer``: this crop restorer for this call instead of the loaded one)."""
        s = self.settings
        crops = restorer or self._crop_restorer()
        bg = None
        if s.bg_task:
            bg = self._bg_plug_in or model_restorer(self.bg_model, seed=s.seed)
        return restore_photo(rgb, s, restorer=crops, device=self.runtime.device, batch_size=self.batch_size,
                             detector=self.detector if self.detects and faces is None else None, bg_restorer=bg,
                             mask=mask, faces=faces, identity=self.identity)

    @property
    def identity(self) -> "Callable[[np.ndarray, np.ndarray], float] | None":
        """The ArcFace similarity of two face crops, where ``identity_weights`` is given (loaded once)."""
        if self.settings.identity_weights is None:
            return None
        if self._identity is None:
            from elir_cli.faces.identity import IdentityMetric

            self._identity = IdentityMetric(Path(self.settings.identity_weights), self.runtime.device)
        return self._identity.similarity

    def _crop_restorer(self) -> CropRestorer:
        """The plug-in crop restorer, or the loaded model with a generator seeded anew (one per image)."""
        s = self.settings
        return self._plug_in or model_restorer(self.model, seed=s.seed, steps=s.steps, fidelity=s.fidelity)

    def restore_decoded(self, image: "DecodedImage", *, faces_dir: Path | None = None) -> RestoreResult:
        crops = self._crop_restorer()
        if faces_dir is not None:
            crops = _saving_crops(crops, faces_dir)
        return self.restore_array(image.rgb, restorer=crops)

    def restore_file(self, src: "Path | str | None", dst: "OutputName | Path | str | None", *,
                     data: bytes | None = None, display_name: str | None = None, faces_key: str | None = None,
                     put: Callable[[str, bytes], str] | None = None) -> tuple[PhotoRecord, bytes | None]:
        """Restore ``src`` (or ``data``) into ``dst`` (or return the bytes when ``dst`` is None).

        ``dst``: an :class:`OutputName`, or a path written as given. ``put``,
        with ``dst`` None: the output goes to storage that is not a local
        folder; it is encoded as for a file (format, suffix, notes on losses)
        and ``put(suffix, bytes)`` stores it and returns where (the record's
        output). Never raises an :class:`ElirError`: it is recorded as a failure.
        """
        from elir_cli.images.read import DEFAULT_MAX_PIXELS, make_output, read_image
        from elir_cli.images.write import SUFFIX_FORMATS, choose_format, encode_image, format_losses, output_suffix, write_image

        if src is not None:
            src = Path(src)
        if dst is not None and not isinstance(dst, OutputName):
            dst = OutputName(Path(dst), exact=True)
        s = self.settings
        record = PhotoRecord(input=display_name or str(src))
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
            record.face_scores, record.faithfulness = result.face_scores(), result.image_score()
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


def _to_rgb(image: Any) -> np.ndarray:
    """A photo as float32 HxWx3 RGB in [0,1], from what :meth:`PhotoRestorer.restore` takes."""
    if isinstance(image, np.ndarray):
        return image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image
    if isinstance(image, (bytes, bytearray, memoryview, str, os.PathLike)):
        from elir_cli.images.read import read_image

        source: Any = io.BytesIO(bytes(image)) if isinstance(image, (bytes, bytearray, memoryview)) else image
        if not isinstance(source, io.BytesIO):
            source = Path(source)
        return read_image(source).rgb
    if hasattr(image, "convert") and hasattr(image, "mode"):
        return pil_to_array(image)
    raise UsageError(f"cannot restore a {type(image).__name__}",
                     hint="give a PIL image, an HxWx3 array, a file path or the file's bytes")


def _to_mask(mask: Any) -> np.ndarray | None:
    if mask is None:
        return None
    if hasattr(mask, "convert"):
        return np.asarray(mask.convert("L")) >= 128
    return np.asarray(mask).astype(bool)


def _saving_crops(restorer: CropRestorer, folder: Path) -> CropRestorer:
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


# -- one-call conveniences ------------------------------------------------------------

def _one_image_restorer(restorer: CropRestorer | None, bg_restorer: CropRestorer | None,
                        detector: "FaceDetector | str | None", options: dict[str, Any]) -> PhotoRestorer:
    built = None
    if detector is not None and not isinstance(detector, str):
        built = detector
    elif detector is not None:
        options["detector"] = detector
    return PhotoRestorer(RestoreSettings(**options), restorer=restorer, bg_restorer=bg_restorer, detector=built)


def restore_array(rgb: np.ndarray, *, restorer: CropRestorer | None = None, bg_restorer: CropRestorer | None = None,
                  detector: "FaceDetector | str | None" = None, mask: np.ndarray | None = None,
                  faces: "Sequence[Any] | None" = None, **options: Any) -> RestoreResult:
    """Restore a float32 HxWx3 RGB photo in [0,1] in one call (a :class:`PhotoRestorer` for one image).

    The keyword options are those of :class:`~elir_cli.pipeline.settings.RestoreSettings`
    (``task``, ``weights``, ``device``, ``steps``, ``fidelity``, ``seed``, ``upscale``,
    face choice, ...). ``restorer`` / ``bg_restorer``: crop restorers to use
    instead of loading ELIR; ``detector``: a built detector (or its name);
    ``mask``: HxW, True where pixels are missing (inpainting); ``faces``:
    restore these faces instead of detecting (video passes tracked faces).
    For many images, build a ``Restorer`` once instead.
    """
    photo = _one_image_restorer(restorer, bg_restorer, detector, options)
    return photo.restore_array(rgb, mask=_to_mask(mask), faces=faces)


def restore_image(image: "Image.Image", *, restorer: CropRestorer | None = None,
                  bg_restorer: CropRestorer | None = None, detector: "FaceDetector | str | None" = None,
                  mask: "Image.Image | np.ndarray | None" = None, **options: Any) -> RestoreResult:
    """Restore a PIL photo in one call; the options are :func:`restore_array`'s."""
    photo = _one_image_restorer(restorer, bg_restorer, detector, options)
    return photo.restore_array(pil_to_array(image), mask=_to_mask(mask))


with_options(restore_array, groups=(MODEL, IMAGE))
with_options(restore_image, groups=(MODEL, IMAGE))
with_options(PhotoRestorer.__init__, groups=(MODEL, IMAGE, OUTPUT))
