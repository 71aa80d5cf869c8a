"""Loading ELIR from a weights file or a task name, and converting files.

For a task name the weights are found through :mod:`.hub`; the file is read by
:mod:`elir_cli.model.checkpoint` and built with the task's settings by
:mod:`.fit`. Reading a file never needs to know about downloading it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from .fit import build_task_model
from .tasks import task_names

if TYPE_CHECKING:
    import torch

    from elir_cli.model.elir import ElirModel


def weights_path(source: str | os.PathLike[str]) -> Path:
    """``source`` as a file: a path as given, a task name's registry weights (fetched once),
    or a local model's file (``elir tune``; :mod:`.local`)."""
    path = Path(source)
    if isinstance(source, str) and os.sep not in source:
        if not path.exists() and source in task_names():
            from .hub import ensure_task_weights

            return ensure_task_weights(source)
        if not path.is_file():  # a folder of that name (the tune run's, say) is no weights file
            from .local import local_model_path

            return local_model_path(source) or path
    return path


def source_task(source: str | os.PathLike[str]) -> str | None:
    """The task a weights source names by itself: a task name's, or a local model's; else None."""
    if not isinstance(source, str) or os.sep in source or Path(source).is_file():
        return None
    if source in task_names():
        return source
    from .local import read_local_model

    model = read_local_model(source)
    return model.task if model is not None else None


def load_float32_model(source: str | os.PathLike[str], task: str | None = None,
               device: "str | torch.device" = "cpu") -> "ElirModel":
    """Load ELIR in float32 from a weights file (any supported format) or a task name.

    The model as the file holds it, for converting and inspecting; the public
    ``elir_cli.load_model`` (:mod:`elir_cli.pipeline.inference`) returns it
    ready for inference at a calibrated precision.
    """
    from elir_cli.model.checkpoint import read_checkpoint

    path = weights_path(source)
    task = task or source_task(source)
    ckpt = read_checkpoint(path)
    model = build_task_model(ckpt, task, source=str(path))
    return model.to(device)


def convert_to_safetensors(src: str | os.PathLike[str], dst: str | os.PathLike[str],
                           task: str | None = None) -> Path:
    """Convert any supported file to our safetensors, checked against the model first."""
    from elir_cli.model.checkpoint import read_checkpoint, save_safetensors

    ckpt = read_checkpoint(src)
    model = build_task_model(ckpt, task, source=str(src))
    return save_safetensors(dst, ckpt.state_dict, model.config, task=model.task)
