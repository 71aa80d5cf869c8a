"""The four ELIR nodes, in ComfyUI's classic custom-node contract, over :class:`elir_cli.Restorer`.

Each node class has ``INPUT_TYPES`` (a classmethod), ``RETURN_TYPES``,
``RETURN_NAMES``, ``FUNCTION``, ``CATEGORY`` and ``DESCRIPTION``; ComfyUI
creates it with no arguments and calls ``FUNCTION`` with the inputs as
keywords. ``IMAGE`` is a B x H x W x C float tensor in [0, 1] (C = 3, or 4
with alpha, which is dropped); ``MASK`` is B x H x W (or H x W) in [0, 1],
1 where pixels are to be restored (ComfyUI's inpainting meaning). The
``ELIR_MODEL`` passed between nodes is a loaded :class:`elir_cli.Restorer`.

The widgets' bounds, defaults and tooltips come from the settings schema
(:class:`~elir_cli.pipeline.settings.RestoreSettings`), as the CLI's flags
and the server's form fields do; where an option's default is "none" the
widget uses 0 (or an empty text) for it and says so.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable

from elir_cli.errors import ElirError
from elir_cli.pipeline.settings import RestoreSettings, spec_of, value_type
from elir_cli.registry.choices import Precision
from elir_cli.registry.tasks import get_task, task_names

from . import host

if TYPE_CHECKING:
    import numpy as np
    import torch

    from elir_cli.runner.restorer import Restorer

CATEGORY = "ELIR"
MODEL_TYPE = "ELIR_MODEL"
REGISTRY_WEIGHTS = "registry (download once)"
DEVICES = ("auto", "cpu", "cuda", "mps")
MAX_SEED = 0xFFFF_FFFF_FFFF_FFFF  # what torch.Generator.manual_seed takes
FIDELITY_STEP = 0.05


class NodeError(Exception):
    """One line for ComfyUI's error dialog: what went wrong, then the fix."""


def one_line_errors(function: Callable[..., Any]) -> Callable[..., Any]:
    """Our errors as one line with their hint (ComfyUI shows an exception's text)."""

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except ElirError as exc:
            message, hint = exc.render()
            raise NodeError(f"{message} ({hint})" if hint else message) from None

    return run


# -- widgets from the schema ---------------------------------------------------------------------

def widget(name: str, *, none_as: Any = None, **extra: Any) -> tuple[str, dict[str, Any]]:
    """The ComfyUI input of settings option ``name``: its type, default, bounds and help.

    ``none_as``: the widget value that stands for the option's None default
    (0 for a count, "" for text); the tooltip says what it means.
    """
    spec = spec_of(name)
    assert spec is not None, name
    default = RestoreSettings.__dataclass_fields__[name].default
    kind = value_type(RestoreSettings, name)
    options: dict[str, Any] = {"default": default, "tooltip": spec.help}
    if default is None:
        options.update(default=none_as, tooltip=f"{spec.help} {'Empty' if none_as == '' else none_as}: the default.")
    if spec.minimum is not None and kind in (int, float):
        options["min"] = spec.minimum
    if spec.maximum is not None and kind in (int, float):
        options["max"] = spec.maximum
    options.update(extra)
    if spec.text or kind is str:
        return "STRING", options
    if kind is bool:
        return "BOOLEAN", options
    if kind is int:
        return "INT", {"step": 1, **options}
    return "FLOAT", {"step": FIDELITY_STEP if name == "fidelity" else 0.01, **options}


def sampling_inputs() -> dict[str, Any]:
    return {
        "fidelity": widget("fidelity"),
        "seed": widget("seed", none_as=0, min=0, max=MAX_SEED, control_after_generate=True,
                       tooltip="The noise of the flow: the same seed gives the same result."),
        "steps": widget("steps", none_as=0, min=0),
    }


def sampling(fidelity: float, seed: int, steps: int) -> dict[str, Any]:
    return {"fidelity": float(fidelity), "seed": int(seed), "steps": int(steps) or None}


# -- tensors ---------------------------------------------------------------------------------

def image_arrays(image: "torch.Tensor") -> list["np.ndarray"]:
    """A ComfyUI IMAGE (B,H,W,C) as float32 HxWx3 arrays (alpha dropped)."""
    if image.ndim != 4 or image.shape[-1] not in (3, 4):
        raise NodeError(f"expected an IMAGE of shape (batch, height, width, 3 or 4), got {tuple(image.shape)}")
    return [frame[..., :3].detach().float().cpu().numpy() for frame in image]


def mask_arrays(mask: "torch.Tensor", count: int, size: tuple[int, int]) -> list["np.ndarray"]:
    """A ComfyUI MASK ((B,)H,W; 1 = restore) as ``count`` boolean HxW arrays of the images' ``size``."""
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3 or mask.shape[0] not in (1, count):
        raise NodeError(f"expected a MASK of shape (batch, height, width) for {count} image(s), "
                        f"got {tuple(mask.shape)}")
    height, width = size
    if tuple(mask.shape[1:]) != (height, width):
        raise NodeError(f"the mask is {mask.shape[2]}x{mask.shape[1]} but the image is {width}x{height} "
                        "(Load Image gives a 64x64 empty mask for images without alpha): draw the mask on "
                        "this image in the mask editor, or load one of the image's size")
    frames = [m.detach().float().cpu().numpy() >= 0.5 for m in mask]
    return frames * count if len(frames) == 1 else frames


def over_batch(frames: list["np.ndarray"], restore: Callable[[int, "np.ndarray"], Any]) -> list[Any]:
    """``restore(i, frame)`` for each frame, with ComfyUI's progress bar and Cancel between frames."""
    progress = host.Progress(len(frames))
    done = []
    for i, rgb in enumerate(frames):
        host.check_interrupted()
        done.append(restore(i, rgb))
        progress.step()
    return done


def stack(arrays: list["np.ndarray"]) -> "torch.Tensor":
    import numpy as np
    import torch

    return torch.from_numpy(np.ascontiguousarray(np.stack(arrays)))  # (B,H,W[,3]) float32


# -- the nodes ---------------------------------------------------------------------------------

class ElirLoadModel:
    """Load an ELIR task's weights (from the registry or ComfyUI's models/elir) once, for the other nodes."""

    DESCRIPTION = ("Loads ELIR for one task: bfr (faces, 512), sr (tiny faces x8), denoising, inpainting "
                   "(faces, 256) or bsr (whole photos x4). Weights: the registry's (downloaded once) or a "
                   "file in ComfyUI/models/elir.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (MODEL_TYPE,)
    RETURN_NAMES = ("elir_model",)
    OUTPUT_TOOLTIPS = ("The loaded model, face detector and precision.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        precision = spec_of("precision")
        return {"required": {
            "task": (list(task_names()), {"default": "bfr", "tooltip": spec_of("task").help}),
            "weights": ([REGISTRY_WEIGHTS, *host.weight_files()],
                        {"default": REGISTRY_WEIGHTS, "tooltip": "The registry's weights for the task, or a "
                         "file in ComfyUI/models/elir (.safetensors, .pth, .ckpt)."}),
            "device": (list(DEVICES), {"default": "auto", "tooltip": "auto: ComfyUI's device."}),
            "precision": ([p.value for p in Precision], {"default": "auto", "tooltip": precision.help}),
        }}

    @one_line_errors
    def load(self, task: str, weights: str, device: str, precision: str) -> tuple["Restorer"]:
        from elir_cli.runner.restorer import Restorer

        restorer = Restorer(task=task, weights=None if weights == REGISTRY_WEIGHTS else host.weight_path(weights),
                            device=host.default_device() if device == "auto" else device, precision=precision)
        return (restorer.prepare(),)


def _task_of(model: "Restorer", node: str, allowed: Callable[[str], bool], instead: str) -> str:
    task = model.settings.task
    if not allowed(task):
        raise NodeError(f"{node} does not take a {task} model: {instead}")
    return task


class ElirRestoreFaces:
    """Detect, align, restore and paste back every face of each image."""

    DESCRIPTION = ("Finds the faces (RetinaFace), aligns each to the FFHQ template, restores it with ELIR and "
                   "pastes it back. The mask output shows where restored faces were pasted.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("image", "face_mask")
    OUTPUT_TOOLTIPS = ("The images with their faces restored.", "1 where a restored face was pasted (soft edges).")
    FUNCTION = "restore"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "elir_model": (MODEL_TYPE, {"tooltip": "From ELIR Load Model: bfr, sr or denoising."}),
            "image": ("IMAGE",),
            **sampling_inputs(),
            "only_center_face": widget("only_center_face"),
            "max_faces": widget("max_faces", none_as=0, min=0),
            "faces": widget("face_indices", none_as=""),
            "min_face_size": widget("min_face_size"),
        }}

    @one_line_errors
    def restore(self, elir_model: "Restorer", image: "torch.Tensor", fidelity: float, seed: int, steps: int,
                only_center_face: bool, max_faces: int, faces: str, min_face_size: float
                ) -> tuple["torch.Tensor", "torch.Tensor"]:
        from elir_cli.faces.paste import pasted_mask

        task = elir_model.settings.task
        _task_of(elir_model, "ELIR Restore Faces", lambda t: get_task(t).kind == "face" and t != "inpainting",
                 "use ELIR Inpaint Face" if task == "inpainting" else "use ELIR Restore Image")
        size = get_task(task).input_size
        options = {**sampling(fidelity, seed, steps), "only_center_face": bool(only_center_face),
                   "max_faces": int(max_faces) or None, "face_indices": faces.strip() or None,
                   "min_face_size": float(min_face_size)}
        def restore_one(_: int, rgb: "np.ndarray") -> tuple["np.ndarray", "np.ndarray"]:
            result = elir_model.restore(rgb, **options)
            return result.array, pasted_mask([f.matrix for f in result.faces], size, result.upscale,
                                             result.array.shape[:2])

        restored, masks = zip(*over_batch(image_arrays(image), restore_one))
        return stack(list(restored)), stack(list(masks))


class ElirRestoreImage:
    """Restore whole images in tiles: bsr (x4), or a face task over the whole image."""

    DESCRIPTION = ("Restores each whole image in overlapping tiles, without face detection: bsr upscales x4; "
                   "denoising (and the other face tasks) work on the image at their scale.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    FUNCTION = "restore"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "elir_model": (MODEL_TYPE, {"tooltip": "From ELIR Load Model: bsr, or denoising for whole images."}),
            "image": ("IMAGE",),
            **sampling_inputs(),
            "upscale": widget("upscale", none_as=0, min=0),
        }}

    @one_line_errors
    def restore(self, elir_model: "Restorer", image: "torch.Tensor", fidelity: float, seed: int, steps: int,
                upscale: int) -> tuple["torch.Tensor"]:
        task = _task_of(elir_model, "ELIR Restore Image", lambda t: t != "inpainting",
                        "use ELIR Inpaint Face with a mask")
        options = {**sampling(fidelity, seed, steps), "upscale": int(upscale) or None}
        if get_task(task).kind == "face":
            options["whole_image"] = True
        return (stack(over_batch(image_arrays(image), lambda _, rgb: elir_model.restore(rgb, **options).array)),)


class ElirInpaintFace:
    """Fill the masked pixels of faces with ELIR's inpainting task."""

    DESCRIPTION = ("Inpaints the masked pixels (mask 1) of each face: faces are found and aligned, or the "
                   "image is taken as one aligned face crop.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    FUNCTION = "inpaint"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "elir_model": (MODEL_TYPE, {"tooltip": "From ELIR Load Model with task inpainting."}),
            "image": ("IMAGE",),
            "mask": ("MASK", {"tooltip": "1 where pixels are missing (ComfyUI's mask editor paints 1)."}),
            **sampling_inputs(),
            "aligned": widget("aligned"),
        }}

    @one_line_errors
    def inpaint(self, elir_model: "Restorer", image: "torch.Tensor", mask: "torch.Tensor", fidelity: float,
                seed: int, steps: int, aligned: bool) -> tuple["torch.Tensor"]:
        _task_of(elir_model, "ELIR Inpaint Face", lambda t: t == "inpainting",
                 "load the inpainting task with ELIR Load Model")
        frames = image_arrays(image)
        masks = mask_arrays(mask, len(frames), frames[0].shape[:2])
        options = {**sampling(fidelity, seed, steps), "aligned": bool(aligned)}
        return (stack(over_batch(frames, lambda i, rgb: elir_model.restore(rgb, mask=masks[i], **options).array)),)


NODE_CLASS_MAPPINGS = {
    "ElirLoadModel": ElirLoadModel,
    "ElirRestoreFaces": ElirRestoreFaces,
    "ElirRestoreImage": ElirRestoreImage,
    "ElirInpaintFace": ElirInpaintFace,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "ElirLoadModel": "ELIR Load Model",
    "ElirRestoreFaces": "ELIR Restore Faces",
    "ElirRestoreImage": "ELIR Restore Image",
    "ElirInpaintFace": "ELIR Inpaint Face",
}
