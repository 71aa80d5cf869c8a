"""Stand-ins for the three ComfyUI modules the node pack uses, for tests (ComfyUI is not on PyPI).

Each implements only the documented surface our nodes touch, as ComfyUI
0.3.64 declares it: ``comfy.utils.ProgressBar(total)`` with
``update_absolute(value, total)``; ``comfy.model_management`` with
``get_torch_device()``, ``throw_exception_if_processing_interrupted()`` and
``InterruptProcessingException``; ``folder_paths`` with ``models_dir``,
``folder_names_and_paths``, ``get_filename_list`` and ``get_full_path``.
They record what the nodes did (progress values, interrupts) so tests can check it.
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest
import torch


class InterruptProcessingException(Exception):
    """ComfyUI's exception for the Cancel button."""


class Host:
    """The stand-in modules, installed into ``sys.modules`` for one test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.progress: list[tuple[int, int]] = []  # (value, total) as the bar received them
        self.interrupt = False
        host = self

        class ProgressBar:
            def __init__(self, total: int, node_id: object = None) -> None:
                self.total, self.current = total, 0

            def update_absolute(self, value: int, total: int | None = None, preview: object = None) -> None:
                self.total = total or self.total
                self.current = min(value, self.total)
                host.progress.append((self.current, self.total))

            def update(self, value: int) -> None:
                self.update_absolute(self.current + value)

        def throw_exception_if_processing_interrupted() -> None:
            if host.interrupt:
                host.interrupt = False
                raise InterruptProcessingException()

        utils = types.ModuleType("comfy.utils")
        utils.ProgressBar = ProgressBar
        management = types.ModuleType("comfy.model_management")
        management.get_torch_device = lambda: torch.device("cpu")
        management.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
        management.InterruptProcessingException = InterruptProcessingException
        comfy = types.ModuleType("comfy")
        comfy.utils, comfy.model_management = utils, management
        comfy.__path__ = []  # a package, so "comfy.utils" imports
        folder_paths = types.ModuleType("folder_paths")
        folder_paths.models_dir = str(root / "models")
        folder_paths.folder_names_and_paths = {
            "upscale_models": ([str(root / "models" / "upscale_models")], {".pth", ".safetensors", ".ckpt"})}

        def get_filename_list(name: str) -> list[str]:
            paths, extensions = folder_paths.folder_names_and_paths[name]
            found = set()
            for base in paths:
                for dirpath, _, files in os.walk(base):
                    for file in files:
                        if not extensions or os.path.splitext(file)[1].lower() in extensions:
                            found.add(os.path.relpath(os.path.join(dirpath, file), base))
            return sorted(found)

        def get_full_path(name: str, filename: str) -> str | None:
            if name not in folder_paths.folder_names_and_paths:
                return None
            filename = os.path.relpath(os.path.join("/", filename), "/")  # no way out of the folder
            for base in folder_paths.folder_names_and_paths[name][0]:
                candidate = os.path.join(base, filename)
                if os.path.isfile(candidate):
                    return candidate
            return None

        folder_paths.get_filename_list = get_filename_list
        folder_paths.get_full_path = get_full_path
        self.modules = {"comfy": comfy, "comfy.utils": utils, "comfy.model_management": management,
                        "folder_paths": folder_paths}
        self.folder_paths = folder_paths

    def install(self, monkeypatch: pytest.MonkeyPatch) -> "Host":
        for name, module in self.modules.items():
            monkeypatch.setitem(sys.modules, name, module)
        return self
