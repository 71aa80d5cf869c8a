"""Does a weights file fit a task? The task's settings joined to a read file.

:mod:`elir_cli.model.checkpoint` reads files and builds a network from a
config; the authors' files carry no config, so this module supplies it from
the task registry (K, sigma_s and the task's tensor shapes), and checks a file
against the task before it is stored or used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from elir_cli.errors import UsageError
from elir_cli.model.config import ModelConfig
from .tasks import get_task

if TYPE_CHECKING:
    from elir_cli.model.checkpoint import Checkpoint
    from elir_cli.model.elir import ElirModel


def resolve_config(ckpt: "Checkpoint", task: str | None) -> ModelConfig:
    """The config to build: the file's own, else shapes + the task's sampler settings."""
    from elir_cli.model.checkpoint import config_from_shapes

    if ckpt.config is not None:
        if task is not None and ckpt.task and task != ckpt.task:
            raise UsageError(f"these weights are for task {ckpt.task!r}, not {task!r}",
                             hint=f"use --task {ckpt.task} or other weights")
        return ckpt.config
    if task is None:
        raise UsageError(
            "the authors' checkpoints do not record their task (K and sigma_s)",
            hint="say which task they are for, e.g. task='bfr' (--task bfr)",
        )
    return config_from_shapes(ckpt, get_task(task).model)


def check_task_fit(ckpt: "Checkpoint", task: str, source: str = "checkpoint") -> ModelConfig:
    """Check ``ckpt`` against the task's own shapes; return the config to store it with.

    The model of the task (as the manifest describes it) is built on the meta
    device, so no memory is spent, and every tensor must match it by name and
    shape. A file that records a different task is refused.
    """
    import torch

    from elir_cli.model.checkpoint import check_state_dict
    from elir_cli.model.elir import ElirModel

    if ckpt.task and ckpt.task != task:
        raise UsageError(f"{source} holds weights for task {ckpt.task!r}, not {task!r}",
                         hint=f"use --task {ckpt.task} or other weights")
    task_model = get_task(task).model
    with torch.device("meta"):
        reference = ElirModel(task_model)
    check_state_dict(reference, ckpt.state_dict, source)
    return ckpt.config if ckpt.config is not None else task_model


def build_task_model(ckpt: "Checkpoint", task: str | None = None, source: str = "checkpoint") -> "ElirModel":
    """Build from a read file, taking K and sigma_s from ``task`` when the file lacks them."""
    from elir_cli.model.checkpoint import build_model

    return build_model(ckpt, resolve_config(ckpt, task), task=task, source=source)
