"""elir-cli: restore photos with ELIR (Cohen et al., BMVC 2025).

The public face of the package. Names that need torch are imported lazily, so
``import elir_cli`` (and ``elir --help``) stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    CacheError,
    CheckpointError,
    ChecksumMismatchError,
    DownloadError,
    ElirError,
    ImageError,
    ModelNotAvailableError,
    StateDictMismatchError,
    UnsafeCheckpointError,
    UsageError,
)
from .tasks import ModelConfig, Task, get_task, load_manifest, task_names

if TYPE_CHECKING:
    from .checkpoint import convert_to_safetensors, load_model, read_checkpoint
    from .hub import cached_task_weights, ensure_detector_weights, ensure_task_weights, import_task_weights
    from .model import ElirModel

_LAZY = {
    "load_model": "checkpoint",
    "read_checkpoint": "checkpoint",
    "convert_to_safetensors": "checkpoint",
    "ElirModel": "model",
    "restore_image": "pipeline",
    "ensure_task_weights": "hub",
    "cached_task_weights": "hub",
    "ensure_detector_weights": "hub",
    "import_task_weights": "hub",
    "RestoreResult": "pipeline",
}

__all__ = [
    "__version__",
    "CacheError",
    "CheckpointError",
    "ChecksumMismatchError",
    "DownloadError",
    "ElirError",
    "ElirModel",
    "ImageError",
    "ModelConfig",
    "ModelNotAvailableError",
    "RestoreResult",
    "StateDictMismatchError",
    "Task",
    "UnsafeCheckpointError",
    "UsageError",
    "cached_task_weights",
    "convert_to_safetensors",
    "ensure_detector_weights",
    "ensure_task_weights",
    "get_task",
    "import_task_weights",
    "load_manifest",
    "load_model",
    "read_checkpoint",
    "restore_image",
    "task_names",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'elir_cli' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
