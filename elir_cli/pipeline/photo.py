"""The restoration pipeline: a whole photo in, the restored photo out.

Face tasks (bfr, sr, denoising, inpainting): detect faces, choose them, align
each to the FFHQ template at the task's size, restore the crops in batches of
``batch_size`` (only one batch of crops exists at a time), and paste each back
as soon as it is restored. The background is resized to the output scale, or
restored by ELIR's ``bsr`` task (``bg_task="bsr"``). A photo with no face is a
normal result: ``faces`` is empty and the photo is passed through (resized or
bsr-restored).

Whole-image work (``bsr``, or any task with ``whole_image=True``) goes through
the tiler. ``aligned=True`` takes the photo as one already aligned face crop.

A restorer is any callable from a (B,3,S,S) float tensor in [0,1] to the same
shape; ``restorer=None`` loads the task's ELIR model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from elir_cli.faces.detection import DEFAULT_THRESHOLD, Face
from elir_cli.errors import ImageError, UsageError
from elir_cli.model.runtime import auto_batch_size
from elir_cli.registry.tasks import Task, get_task

from .settings import RestoreSettings, face_choices_given

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from elir_cli.faces.detection import FaceDetector
    from elir_cli.model.elir import ElirModel

    from .faithfulness import Faithfulness

Restorer = Callable[["torch.Tensor"], "torch.Tensor"]
WHOLE_IMAGE_TILE = 512  # model pixels per tile
WHOLE_IMAGE_OVERLAP = 64


@dataclass(frozen=True, eq=False)
class RestoreResult:
    """The restored photo and what was done to it."""

    array: np.ndarray  # float32 HxWx3 RGB in [0,1]
    faces: list[Face]
    task: str
    upscale: int
    # The whole image's faithfulness to its input (whole-image work; faces carry their own).
    faithfulness: "Faithfulness | None" = None

    def face_scores(self) -> list[dict[str, object]]:
        """Each restored face's faithfulness record: index, faithfulness_db, delta_e, fidelity, identity, guard."""
        return [{"index": f.index, "faithfulness_db": f.faithfulness_db, "delta_e": f.delta_e,
                 "fidelity": f.fidelity, "identity": f.identity, "guard": f.guard} for f in self.faces]

    def image_score(self) -> dict[str, object] | None:
        """The whole image's faithfulness (whole-image work), or None."""
        if self.faithfulness is None:
            return None
        return {"faithfulness_db": self.faithfulness.db, "delta_e": self.faithfulness.delta_e}

    @property
    def image(self) -> "Image.Image":
        """The restored photo as an 8-bit RGB PIL image."""
        from PIL import Image

        from elir_cli.images.read import to_uint8

        return Image.fromarray(to_uint8(self.array), mode="RGB")


def pil_to_array(image: "Image.Image") -> np.ndarray:
    """A PIL image as float32 HxWx3 RGB in [0,1] (converted to RGB first)."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return np.asarray(rgb, dtype=np.float32) / 255.0


class ModelCropRestorer:
    """An ELIR model as a batch restorer, with a generator seeded once (per image restored).

    Noise is drawn image by image, so the results do not depend on the batch
    size. :meth:`again` restores one crop of the last batch once more at
    another fidelity with the same noise: the same flow, stopped elsewhere
    (the faithfulness guard's search).
    """

    def __init__(self, model: "ElirModel", *, seed: int | None = None, steps: int | None = None,
                 fidelity: float = 1.0) -> None:
        import torch

        self.model, self.steps, self.fidelity = model, steps, fidelity
        param = next(model.parameters())
        self.device = param.device
        self.generator = None if seed is None else torch.Generator(device=param.device).manual_seed(int(seed))
        # Inputs stay float32 for a model whose weights were cast to bf16/fp16 (prepare_model).
        self.dtype = torch.float32 if param.dtype in (torch.bfloat16, torch.float16) else param.dtype
        self._noise: "torch.Tensor | None" = None

    def __call__(self, x: "torch.Tensor") -> "torch.Tensor":
        import torch

        from elir_cli.model.elir import LATENT_FACTOR, padded_size

        x = x.to(device=self.device, dtype=self.dtype)
        config = self.model.config
        shape = torch.Size((x.shape[0], config.latent_channels,
                            padded_size(x.shape[2], config.pad_multiple) // LATENT_FACTOR,
                            padded_size(x.shape[3], config.pad_multiple) // LATENT_FACTOR))
        self._noise = self.model.draw_noise(shape, self.generator, self.device, torch.float32)
        return self.model.restore(x, noise=self._noise, steps=self.steps, fidelity=self.fidelity)

    def again(self, x: "torch.Tensor", fidelity: float, index: int) -> "torch.Tensor":
        """Crop ``index`` of the last batch (given as ``x``, (1,3,S,S)) restored at ``fidelity``, same noise."""
        assert self._noise is not None, "again() follows a call"
        x = x.to(device=self.device, dtype=self.dtype)
        return self.model.restore(x, noise=self._noise[index:index + 1], steps=self.steps, fidelity=fidelity)


def model_restorer(model: "ElirModel", *, seed: int | None = None, steps: int | None = None,
                   fidelity: float = 1.0) -> ModelCropRestorer:
    """Wrap an ELIR model as a batch restorer (:class:`ModelCropRestorer`); a fresh seeded generator per call."""
    return ModelCropRestorer(model, seed=seed, steps=steps, fidelity=fidelity)


@dataclass(frozen=True)
class FaceCheck:
    """What happens to each restored crop before it is pasted: colour fix, score, guard."""

    task: str
    fidelity: float = 1.0
    min_faithfulness: float | None = None
    color_fix: str = "none"
    identity: "Callable[[np.ndarray, np.ndarray], float] | None" = None

    @classmethod
    def of(cls, settings: RestoreSettings, identity: "Callable[[np.ndarray, np.ndarray], float] | None" = None
           ) -> "FaceCheck":
        return cls(task=settings.task, fidelity=settings.fidelity, min_faithfulness=settings.min_faithfulness,
                   color_fix=settings.color_fix, identity=identity)


def restore_photo(rgb: np.ndarray, settings: RestoreSettings, *, restorer: Restorer,
                  device: "str | torch.device", batch_size: int, detector: "FaceDetector | None" = None,
                  bg_restorer: Restorer | None = None, mask: np.ndarray | None = None,
                  faces: Sequence[Face] | None = None,
                  identity: "Callable[[np.ndarray, np.ndarray], float] | None" = None) -> RestoreResult:
    """Restore a float32 HxWx3 RGB photo in [0,1] as ``settings`` say, with crops restored by ``restorer``.

    The loaded parts come from the caller (a :class:`~elir_cli.pipeline.restorer.PhotoRestorer`):
    ``restorer`` for the task's crops (or tiles), ``bg_restorer`` for the
    background when ``settings.bg_task`` is set, ``detector`` for face tasks
    that detect. ``mask``: HxW, True where pixels are missing (inpainting
    only). ``faces``: restore these faces (their landmarks place the crops)
    instead of detecting and choosing; for callers that find faces their own
    way (video tracks faces and smooths their landmarks). ``identity``: a
    similarity of two face crops (ArcFace), for the faces' identity scores.

    Every restored face is scored against its input crop, colour-fixed and
    guarded as ``settings`` say (:mod:`.faithfulness`); a whole image is
    scored and colour-fixed as a whole.
    """
    spec = get_task(settings.task)
    rgb = _check_photo(rgb)
    scale = spec.scale if settings.upscale is None else settings.upscale
    if batch_size < 1:
        raise UsageError(f"{{batch_size}} must be at least 1, got {batch_size}", option="batch_size", value=batch_size)
    if faces is not None and (settings.aligned or settings.whole_image or spec.kind == "image"
                              or face_choices_given(settings)):
        raise UsageError("faces=... gives the faces to restore; it excludes detection and face-choice options")
    if mask is not None:
        mask = _check_mask(np.asarray(mask), spec, rgb)
    check = FaceCheck.of(settings, identity)
    if check.min_faithfulness is not None and not hasattr(restorer, "again") and not _takes_fidelity(restorer):
        raise UsageError("{min_faithfulness} restores faces again at lower fidelity, and this restorer takes no "
                         "fidelity", option="min_faithfulness", value=check.min_faithfulness,
                         hint="give a restorer that accepts fidelity=..., or drop {min_faithfulness}")
    if spec.kind == "image" or settings.whole_image:
        photo = rgb if mask is None else np.where(mask[:, :, None], np.float32(0.0), rgb)
        out = _tiled(photo, restorer, spec, scale, batch_size, device)
        out, score = _finish_image(photo, out, check, mask)
        return RestoreResult(array=out, faces=[], task=settings.task, upscale=scale, faithfulness=score)
    if settings.aligned:
        out, face = _restore_aligned(rgb, restorer, spec, scale, mask, device, check)
        return RestoreResult(array=out, faces=[face], task=settings.task, upscale=scale)
    if faces is None:
        if detector is None:
            raise ValueError("restore_photo: a face task that detects needs a detector")
        threshold = DEFAULT_THRESHOLD if settings.det_threshold is None else settings.det_threshold
        found = detector.detect(rgb, threshold=threshold)
        height, width = rgb.shape[:2]
        chosen = _select(found, (width, height), settings.min_face_size, settings.only_center_face,
                         settings.max_faces, settings.face_indices)
    else:
        chosen = list(faces)
    if settings.bg_task is None:
        from elir_cli.faces.paste import resize_background

        background = resize_background(rgb, scale)
    else:
        if bg_restorer is None:
            raise ValueError("restore_photo: bg_task needs a bg_restorer")
        background = _tiled(rgb, bg_restorer, get_task(settings.bg_task), scale, batch_size, device)
    pasted = paste_restored_faces(rgb, background, chosen, restorer, spec, scale, batch_size, mask, device, check)
    return RestoreResult(array=background, faces=pasted, task=settings.task, upscale=scale)


def _check_mask(mask: np.ndarray, spec: Task, rgb: np.ndarray) -> np.ndarray:
    if spec.name != "inpainting":
        raise UsageError(f"a mask is only used by the inpainting task, not {spec.name}", option="task",
                         value=spec.name)
    if mask.shape != rgb.shape[:2]:
        raise UsageError(f"the mask is {mask.shape[1]}x{mask.shape[0]} but the photo is "
                         f"{rgb.shape[1]}x{rgb.shape[0]}", hint="give a mask of the photo's size")
    return mask.astype(bool)


def restore_faces_uint8(rgb8: np.ndarray, faces: Sequence[Face], *, task: str, restorer: Restorer,
                        batch_size: int | None = None, device: "str | torch.device" = "cpu",
                        check: FaceCheck | None = None) -> tuple[np.ndarray, list[Face]]:
    """A copy of the 8-bit photo ``rgb8`` with ``faces`` restored and pasted back at its size.

    The crops, masks and blend of :func:`restore_array` given the same
    ``faces`` (within one 8-bit step), but the photo is never converted
    whole: only the windows the crops read become floats, and only the
    faces' paste boxes are written. This is the per-frame path of video,
    where whole-frame float conversions and accumulators cost more than the
    paste. Face tasks at scale 1 only (no upscale, no background model).
    ``check``: the colour fix, score and guard of each crop (default: scored only).
    """
    spec = get_task(task)
    if spec.kind != "face" or spec.scale != 1:
        raise UsageError(f"restore_faces_uint8 takes face tasks at scale 1, not {task}")
    if not isinstance(rgb8, np.ndarray) or rgb8.dtype != np.uint8 or rgb8.ndim != 3 or rgb8.shape[2] != 3:
        raise ImageError(f"expected a uint8 HxWx3 RGB array, got {getattr(rgb8, 'dtype', type(rgb8).__name__)} "
                         f"{getattr(rgb8, 'shape', '')}")
    out = rgb8.copy()
    pasted = paste_restored_faces(rgb8, out, faces, restorer, spec, 1, batch_size or auto_batch_size(device), None,
                                  device, check)
    return out, pasted


def paste_restored_faces(rgb: np.ndarray, background: np.ndarray, faces: Sequence[Face], restorer: Restorer,
                         spec: Task, scale: int, batch_size: int, mask: np.ndarray | None,
                         device: "str | torch.device", check: FaceCheck | None = None) -> list[Face]:
    """Align, restore in batches, check and paste ``faces`` onto ``background`` (in place).

    ``rgb`` (crops are read from it) and ``background`` are float32 in [0,1],
    or both uint8 (:func:`restore_faces_uint8`). ``check``: the colour fix,
    score and guard of each crop (default: scored only). Returns the faces
    with their matrices and scores.
    """
    from elir_cli.faces.alignment import alignment_matrix, crop_missing
    from elir_cli.faces.paste import Canvas, Uint8Canvas, crop_to_output, paste_box, union_box

    size = spec.input_size
    out_hw = background.shape[:2]
    faces = [replace(f, matrix=alignment_matrix(f.landmarks, size)) for f in faces]
    to_out = [crop_to_output(f.matrix, scale) for f in faces]
    boxes = [paste_box(m, size, out_hw) for m in to_out]
    canvas = Uint8Canvas(background, boxes) if background.dtype == np.uint8 else Canvas(background, union_box(boxes))
    check = check or FaceCheck(task=spec.name)
    for start in range(0, len(faces), batch_size):
        batch = faces[start:start + batch_size]
        crops = np.stack([_model_input(rgb, f.matrix, spec, mask) for f in batch])  # (B,S,S,3)
        restored = _run(restorer, crops, device)  # (B,S,S,3)
        for i, face in enumerate(batch):
            missing = None if mask is None else crop_missing(mask, face.matrix, size)
            final, faces[start + i] = _finish_crop(face, crops[i], restored[i], i, restorer, device, check, missing)
            canvas.paste(final, to_out[start + i])
    canvas.result()
    return faces


def _takes_fidelity(restorer: Restorer) -> bool:
    import inspect

    try:
        parameters = inspect.signature(restorer).parameters
    except (TypeError, ValueError):
        return False
    return "fidelity" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def _finish_crop(face: Face, crop_in: np.ndarray, crop_out: np.ndarray, index: int, restorer: Restorer,
                 device: "str | torch.device", check: FaceCheck, missing: np.ndarray | None
                 ) -> tuple[np.ndarray, Face]:
    """One restored crop colour-fixed, scored and (below the guard's minimum) restored again lower."""
    import logging

    from .faithfulness import GUARD_FAILED, color_fix, measure, search_fidelity

    def finish(out: np.ndarray):
        out = color_fix(out, crop_in, check.color_fix)
        return out, measure(check.task, crop_in, out, mask=missing, identity=check.identity)

    def attempt(fidelity: float):
        return finish(_run_again(restorer, crop_in, index, fidelity, device))

    first = finish(crop_out)
    fidelity, (final, score), status = check.fidelity, first, None
    if check.min_faithfulness is not None:
        guarded = search_fidelity(attempt, check.fidelity, check.min_faithfulness, first)
        fidelity, final, score, status = guarded.fidelity, guarded.restored, guarded.faithfulness, guarded.status
        if status == GUARD_FAILED:
            logging.getLogger("elir_cli").warning(
                f"face {face.index} stays below {check.min_faithfulness:g} dB even at fidelity 0 "
                f"({score.db:g} dB): kept at fidelity 0")
    return final, replace(face, faithfulness_db=score.db, delta_e=score.delta_e, fidelity=fidelity,
                          identity=score.identity, guard=status)


def _run_again(restorer: Restorer, crop: np.ndarray, index: int, fidelity: float,
               device: "str | torch.device") -> np.ndarray:
    """Crop ``index`` of the last batch restored again at ``fidelity`` (the same noise where the restorer keeps it)."""
    again = getattr(restorer, "again", None)
    if again is not None:
        return _run(lambda x: again(x, fidelity, index), crop[None], device)[0]
    return _run(lambda x: restorer(x, fidelity=fidelity), crop[None], device)[0]  # type: ignore[call-arg]


def _finish_image(photo: np.ndarray, out: np.ndarray, check: FaceCheck, mask: np.ndarray | None
                  ) -> tuple[np.ndarray, "Faithfulness"]:
    """A whole restored image colour-fixed against the input (resized to it) and scored."""
    import cv2

    from .faithfulness import color_fix, measure

    if check.color_fix != "none":
        reference = photo if photo.shape == out.shape else np.clip(
            cv2.resize(photo, (out.shape[1], out.shape[0]), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)
        out = color_fix(out, reference, check.color_fix)
    return out, measure(check.task, photo, out, mask=mask)


# -- steps --------------------------------------------------------------------

def _check_photo(rgb: np.ndarray) -> np.ndarray:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageError(f"expected an HxWx3 RGB array, got {getattr(rgb, 'shape', type(rgb).__name__)}")
    if min(rgb.shape[:2]) < 1:
        raise ImageError(f"the photo is empty ({rgb.shape[1]}x{rgb.shape[0]})")
    rgb = rgb.astype(np.float32, copy=False)
    if not np.isfinite(rgb).all():
        raise ImageError("the photo has NaN or infinite values")
    return np.clip(rgb, 0.0, 1.0)


def _select(found: list[Face], size: tuple[int, int], min_face_size: float, only_center_face: bool,
            max_faces: int | None, face_indices: Sequence[int] | None) -> list[Face]:
    from elir_cli.faces.detection import select_faces

    return select_faces(found, image_size=size, min_face_size=min_face_size,
                        only_center_face=only_center_face, max_faces=max_faces, face_indices=face_indices)


def _tiled(rgb: np.ndarray, restorer: Restorer, spec: Task, scale: int, batch_size: int,
           device: "str | torch.device") -> np.ndarray:
    from .tiling import restore_tiled

    upsample = "nearest-exact" if spec.name == "sr" else "bicubic"
    return restore_tiled(rgb, restorer, model_scale=spec.scale, out_scale=scale, tile=WHOLE_IMAGE_TILE,
                         overlap=WHOLE_IMAGE_OVERLAP, batch_size=batch_size, device=device, upsample=upsample)


def _model_input(rgb: np.ndarray, matrix: np.ndarray, spec: Task, mask: np.ndarray | None) -> np.ndarray:
    """One aligned crop, prepared as the task's model was trained."""
    from elir_cli.faces.alignment import align_face, masked_input, sr_input

    crop = align_face(rgb, matrix, spec.input_size)
    if spec.name == "sr":
        crop = sr_input(crop, spec.scale)
    if mask is not None:
        crop = masked_input(crop, mask, matrix)
    return crop


def _run(restorer: Restorer, crops: np.ndarray, device: "str | torch.device") -> np.ndarray:
    """(B,S,S,3) float32 -> restorer -> (B,S,S,3) float32 in [0,1]."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).to(device)  # (B,3,S,S)
    with torch.inference_mode():
        y = restorer(x)
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != tuple(x.shape):
        raise ValueError(f"the restorer must return a tensor of shape {tuple(x.shape)}, "
                         f"got {getattr(y, 'shape', type(y).__name__)}")
    return y.detach().float().clamp(0.0, 1.0).permute(0, 2, 3, 1).cpu().numpy()  # (B,S,S,3)


def _restore_aligned(rgb: np.ndarray, restorer: Restorer, spec: Task, scale: int, mask: np.ndarray | None,
                     device: "str | torch.device", check: FaceCheck) -> tuple[np.ndarray, Face]:
    """The photo is one aligned face: resize to the task size, restore, resize to the output."""
    import cv2

    from elir_cli.faces.alignment import apply_affine, crop_missing, face_template, invert_affine

    height, width = rgb.shape[:2]
    size = spec.input_size
    matrix = np.array([[size / width, 0.0, 0.5 * size / width - 0.5],
                       [0.0, size / height, 0.5 * size / height - 0.5]])
    crop = _model_input(rgb, matrix, spec, mask)
    restored = _run(restorer, crop[None], device)[0]
    landmarks = apply_affine(invert_affine(matrix), face_template(size))
    face = Face(index=0, box=(0.0, 0.0, float(width), float(height)), score=1.0, landmarks=landmarks,
                matrix=matrix)
    missing = None if mask is None else crop_missing(mask, matrix, size)
    restored, face = _finish_crop(face, crop, restored, 0, restorer, device, check, missing)
    out_w, out_h = width * scale, height * scale
    interp = cv2.INTER_AREA if out_w < size else cv2.INTER_CUBIC
    out = np.clip(cv2.resize(restored, (out_w, out_h), interpolation=interp), 0.0, 1.0)
    return out, face

