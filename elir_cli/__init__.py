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
    OutputExistsError,
    StateDictMismatchError,
    UnsafeCheckpointError,
    UsageError,
)
from .tasks import ModelConfig, Task, get_task, load_manifest, task_names

if TYPE_CHECKING:
    from .checkpoint import convert_to_safetensors, load_model, read_checkpoint
    from .imageio import DecodedImage, is_image_file, make_output, read_image
    from .imagewrite import encode_image, write_image
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
    "DecodedImage": "imageio",
    "read_image": "imageio",
    "is_image_file": "imageio",
    "make_output": "imageio",
    "encode_image": "imagewrite",
    "write_image": "imagewrite",
}

__all__ = [
    "__version__",
    "CacheError",
    "CheckpointError",
    "DecodedImage",
    "ChecksumMismatchError",
    "DownloadError",
    "ElirError",
    "ElirModel",
    "ImageError",
    "ModelConfig",
    "ModelNotAvailableError",
    "OutputExistsError",
    "RestoreResult",
    "StateDictMismatchError",
    "Task",
    "UnsafeCheckpointError",
    "UsageError",
    "cached_task_weights",
    "convert_to_safetensors",
    "encode_image",
    "get_task",
    "is_image_file",
    "ensure_detector_weights",
    "ensure_task_weights",
    "import_task_weights",
    "load_manifest",
    "load_model",
    "make_output",
    "read_checkpoint",
    "read_image",
    "restore_image",
    "task_names",
    "write_image",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'elir_cli' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
