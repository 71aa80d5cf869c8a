"""A model ready for inference: the public ``elir_cli.load_model``.

Loads the weights (:mod:`elir_cli.registry.loading`), then prepares the model
as the ``elir`` command does (eval, no gradients, channels-last, the CPU
allocator tuned, weights cast once for bf16) at the precision chosen for the
device, calibrated per weights file (:mod:`.calibration`), so that a program
following the README gets the command's speed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import torch

    from elir_cli.model.elir import ElirModel

logger = logging.getLogger("elir_cli")


def load_model(source: "str | os.PathLike[str]", task: str | None = None, device: "str | torch.device" = "cpu",
               precision: str = "auto", *, backend: str = "torch", log: Callable[[str], None] | None = None) -> "ElirModel":
    """Load ELIR from a weights file or a task name, ready for inference.

    ``precision``: ``auto`` (bf16 on CPUs with native bf16, bf16/fp16 on CUDA,
    fp32 elsewhere, each used only once calibration has shown it safe for these
    weights), or ``fp32`` / ``bf16`` / ``fp16`` as given (refused where the
    device lacks it). The precision used is ``model.precision``. ``backend``:
    ``torch``, or ``openvino`` (CPU only, ``pip install "elir-cli[openvino]"``;
    its converted and compiled networks are cached per weights file in the
    store). ``log``
    receives the calibration's one-line messages (default: the ``elir_cli``
    logger).
    """
    from elir_cli.model.runtime import runtime_for
    from elir_cli.registry.loading import load_model as load_float32, weights_path

    from .calibration import choose_precision

    runtime = runtime_for(device, precision, backend)  # a bad precision fails before the weights are read
    path = weights_path(source)
    if task is None and path != Path(source):  # a task name
        task = str(source)
    model = load_float32(path, task=task)
    choice = choose_precision(model, runtime, weights=path, task=task or model.task, log=log or logger.info)
    if choice.note:
        (log or logger.warning)(f"Note: {choice.note}")
    return choice.model
