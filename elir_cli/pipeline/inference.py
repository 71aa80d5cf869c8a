"""A model ready for inference: the public ``elir_cli.load_model``.

Loads the weights (:mod:`elir_cli.registry.loading`), then prepares the model
as the ``elir`` command does (eval, no gradients, channels-last, the CPU
allocator tuned, weights cast once for bf16) at the precision chosen for the
device, calibrated per weights file (:mod:`.calibration`), so that a program
following the README gets the command's speed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import TYPE_CHECKING, Callable

from elir_cli.errors import UsageError

if TYPE_CHECKING:
    import torch

    from elir_cli.model.runtime import Runtime

    from elir_cli.model.elir import ElirModel

logger = logging.getLogger("elir_cli")


def load_model(source: "str | os.PathLike[str]", task: str | None = None, device: "str | torch.device" = "cpu",
               precision: str = "auto", *, backend: str = "auto", log: Callable[[str], None] | None = None,
               runtime: "Runtime | None" = None, compile: bool = False,
               on_sha256: Callable[[str], None] | None = None) -> "ElirModel":
    """Load ELIR from a weights file or a task name, ready for inference.

    ``precision``: ``auto`` (bf16 on CPUs with native bf16, bf16/fp16 on CUDA,
    fp32 elsewhere, each used only once calibration has shown it safe for these
    weights; on the CPU, int8 where its calibration record says it is within
    45 dB of fp32 and pays), or ``fp32`` / ``bf16`` / ``fp16`` / ``int8`` as
    given (refused where the device lacks it; int8 is quantized on its first
    use, about a minute at 512). The precision used is ``model.precision``.
    ``backend``: ``auto`` (PyTorch, or OpenVINO for int8), ``torch``,
    ``openvino`` (CPU only, ``pip install "elir-cli[openvino]"``; its
    converted and compiled networks are cached per weights file in the
    store) or ``onnxruntime``. ``log`` receives the calibration's one-line messages (default: the
    ``elir_cli`` logger). ``runtime``: a resolved device and precision instead
    of ``device``/``precision``/``backend``; ``compile``: ``torch.compile`` the
    networks; ``on_sha256`` receives the weights' SHA-256 when it is read.

    This is the one loading path: the restorers (``Restorer``, the server,
    Ray workers, video) load through it too.
    """
    from elir_cli.model.runtime import compile_model, runtime_for
    from elir_cli.registry.loading import load_float32_model, source_task, weights_path
    from elir_cli.registry.store import recorded_sha256

    from .calibration import choose_precision

    if runtime is None:
        runtime = runtime_for(device, precision, backend)  # a bad precision fails before the weights are read
    if compile and runtime.int8_candidate:  # torch.compile is for PyTorch: auto stays on it
        runtime = dataclasses.replace(runtime, int8_candidate=False)
    if compile and runtime.backend != "torch":
        raise UsageError("{compile} is for the torch backend; the openvino backend compiles its own way",
                         option="compile", value=True, mentions=("backend",),
                         hint="drop {compile}, or use {backend} torch")
    path = weights_path(source)
    if task is None:  # a task name, or a local model's name
        task = source_task(source)
    model = load_float32_model(path, task=task)
    if task is not None and model.task and model.task != task:
        raise UsageError(f"the weights {path} are for task {model.task!r}, not {task!r}", option="weights",
                         value=str(path), mentions=("task",))
    sha256 = None
    # Only calibration and the OpenVINO cache need it now.
    if (runtime.auto and runtime.compute_dtype is not None) or runtime.backend != "torch" or runtime.int8_candidate:
        sha256 = recorded_sha256(path, task or model.task)
        if on_sha256 is not None:
            on_sha256(sha256)
    say = log or logger.info
    choice = choose_precision(model, runtime, weights=path, sha256=sha256, task=task or model.task, log=say)
    if choice.note:
        (log or logger.warning)(f"Note: {choice.note}")
    return compile_model(choice.model) if compile else choice.model
