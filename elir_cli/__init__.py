"""elir-cli: restore photos with ELIR (Cohen et al., BMVC 2025).

The public face of the package. Names that need torch are imported lazily, so
``import elir_cli`` (and ``elir --help``) stays fast.

The package reads top-down, one subpackage per concern; each says in its
docstring what it owns and which others it may import (``May import:``), and
``tests/test_layering.py`` holds the code to that:

- ``model/``     (0) the network and its file formats, pure torch
- ``registry/``  (1) tasks, manifest, downloads, the store, loading by task
- ``images/``    (1) decoding and encoding stills, metadata, 16-bit PNG
- ``faces/``     (2) detection, alignment, paste
- ``pipeline/``  (3) photo restoration, tiling, files, batches
- ``evaluation/`` (4) the paper's degradations and metrics, ``elir eval``
- ``video/``     (4) videos: streaming decode/restore/encode, face tracking, resume
- ``runner/``    (4b) the public ``Restorer`` (photos and videos) and folder jobs (local or Ray)
- ``cli/``       (5) thin Typer commands over all of it

Features built on the pipeline (video, serving, evaluation, distributed
batches) are layer 4, each its own subpackage. The base modules
``errors``, ``atomicwrite``, ``_lazy`` and ``_version`` may be imported by any layer and
import no subpackage.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports

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
    UploadError,
    UsageError,
)
from .model.config import ModelConfig
from .registry.tasks import Task, get_task, load_manifest, task_names

if TYPE_CHECKING:
    from .images.read import DecodedImage, is_image_file, make_output, read_image
    from .images.write import encode_image, write_image
    from .model.checkpoint import read_checkpoint
    from .model.elir import ElirModel
    from .evaluation.degrade import degrade_folder
    from .evaluation.evaluate import EvalSettings, Evaluator
    from .pipeline.files import PhotoRecord
    from .pipeline.photo import RestoreResult
    from .pipeline.restorer import restore_array, restore_image
    from .pipeline.settings import RestoreSettings
    from .runner.files import FilesJob
    from .runner.folder import FolderJob
    from .runner.restorer import Restorer
    from .registry.hub import cached_task_weights, ensure_detector_weights, ensure_task_weights, import_task_weights
    from .pipeline.inference import load_model
    from .registry.loading import convert_to_safetensors
    from .video.media import VideoError, is_video_file
    from .video.stream import VideoOptions, VideoRecord, restore_video

# Public name -> the module that defines it, imported on first use.
_LAZY = {
    "load_model": "pipeline.inference",
    "convert_to_safetensors": "registry.loading",
    "read_checkpoint": "model.checkpoint",
    "ElirModel": "model.elir",
    "restore_image": "pipeline.restorer",
    "restore_array": "pipeline.restorer",
    "Restorer": "runner.restorer",
    "FolderJob": "runner.folder",
    "FilesJob": "runner.files",
    "RestoreSettings": "pipeline.settings",
    "PhotoRecord": "pipeline.files",
    "RestoreResult": "pipeline.photo",
    "ensure_task_weights": "registry.hub",
    "cached_task_weights": "registry.hub",
    "ensure_detector_weights": "registry.hub",
    "import_task_weights": "registry.hub",
    "DecodedImage": "images.read",
    "read_image": "images.read",
    "is_image_file": "images.read",
    "make_output": "images.read",
    "encode_image": "images.write",
    "write_image": "images.write",
    "degrade_folder": "evaluation.degrade",
    "EvalSettings": "evaluation.evaluate",
    "Evaluator": "evaluation.evaluate",
    "restore_video": "video.stream",
    "VideoOptions": "video.stream",
    "VideoRecord": "video.stream",
    "VideoError": "video.media",
    "is_video_file": "video.media",
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
    "EvalSettings",
    "FilesJob",
    "FolderJob",
    "Evaluator",
    "ImageError",
    "ModelConfig",
    "ModelNotAvailableError",
    "OutputExistsError",
    "PhotoRecord",
    "RestoreResult",
    "RestoreSettings",
    "Restorer",
    "StateDictMismatchError",
    "Task",
    "UnsafeCheckpointError",
    "UploadError",
    "UsageError",
    "VideoError",
    "VideoOptions",
    "VideoRecord",
    "cached_task_weights",
    "convert_to_safetensors",
    "degrade_folder",
    "encode_image",
    "get_task",
    "is_image_file",
    "is_video_file",
    "ensure_detector_weights",
    "ensure_task_weights",
    "import_task_weights",
    "load_manifest",
    "load_model",
    "make_output",
    "read_checkpoint",
    "read_image",
    "restore_array",
    "restore_image",
    "restore_video",
    "task_names",
    "write_image",
]


__getattr__ = lazy_exports(__name__, _LAZY, globals())
