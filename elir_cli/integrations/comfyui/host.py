"""What the node pack asks of ComfyUI, where ComfyUI is there; plain fallbacks where it is not.

ComfyUI provides ``comfy.utils`` (the progress bar), ``comfy.model_management``
(the device, the interrupt flag) and ``folder_paths`` (the models folders) to
the custom nodes it loads; they are not on PyPI. Each is imported on use, so
the nodes also run from plain Python (tests, scripts): no progress shown, no
interrupt to honour, weights given as paths. Nothing here swallows ComfyUI's
interrupt exception.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any

MODELS_FOLDER = "elir"  # ComfyUI/models/elir: ELIR weights the Load Model node lists
WEIGHT_EXTENSIONS = {".safetensors", ".pth", ".ckpt"}


def _module(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def inside_comfyui() -> bool:
    """Whether ComfyUI's own modules are importable (the nodes run inside ComfyUI)."""
    return _module("folder_paths") is not None and _module("comfy.utils") is not None


class Progress:
    """ComfyUI's progress bar over ``total`` steps where present; a counter otherwise."""

    def __init__(self, total: int) -> None:
        self.total, self.done = max(1, int(total)), 0
        utils = _module("comfy.utils")
        self._bar: Any = utils.ProgressBar(self.total) if utils is not None else None

    def step(self) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.update_absolute(self.done, self.total)


def check_interrupted() -> None:
    """Raise ComfyUI's interrupt exception when the user pressed Cancel (nothing outside ComfyUI)."""
    management = _module("comfy.model_management")
    if management is not None:
        management.throw_exception_if_processing_interrupted()


def default_device() -> str:
    """ComfyUI's compute device where it names one we run on (cuda, mps, cpu); else our ``auto``."""
    management = _module("comfy.model_management")
    if management is None:
        return "auto"
    device = management.get_torch_device()
    return str(device) if getattr(device, "type", None) in ("cuda", "mps", "cpu") else "auto"


def register_models_folder() -> Path | None:
    """Add ``models/elir`` to ComfyUI's model folders (once); its path, or None outside ComfyUI."""
    folder_paths = _module("folder_paths")
    if folder_paths is None:
        return None
    path = Path(folder_paths.models_dir) / MODELS_FOLDER
    known = folder_paths.folder_names_and_paths.get(MODELS_FOLDER)
    if known is None or str(path) not in known[0]:
        folder_paths.folder_names_and_paths[MODELS_FOLDER] = (
            [str(path), *(known[0] if known else [])], set(WEIGHT_EXTENSIONS))
    return path


def weight_files() -> list[str]:
    """The weights files ComfyUI lists in ``models/elir`` (none outside ComfyUI)."""
    folder_paths = _module("folder_paths")
    if folder_paths is None or MODELS_FOLDER not in folder_paths.folder_names_and_paths:
        return []
    return list(folder_paths.get_filename_list(MODELS_FOLDER))


def weight_path(name: str) -> str:
    """A listed file's full path inside ComfyUI; outside it, ``name`` is a path."""
    folder_paths = _module("folder_paths")
    if folder_paths is not None and MODELS_FOLDER in folder_paths.folder_names_and_paths:
        found = folder_paths.get_full_path(MODELS_FOLDER, name)
        if found:
            return str(found)
    return os.fspath(name)
