"""ELIR's four networks run by another runtime: what both backends (OpenVINO, ONNX Runtime) share.

A backend replaces the encoder, coarse estimator, vector field and decoder of
a float32 :class:`~.elir.ElirModel` with modules that call its runtime, and
keeps ElirModel's own Euler loop, noise, steps and fidelity. This module
gives the example inputs each network is traced with (:func:`examples`) and
builds the model that holds the replaced networks (:func:`with_stages`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from .cpu_conv import plain_convs

if TYPE_CHECKING:
    from .elir import ElirModel

STAGES = ("enc", "mmse", "fmir", "dec")
EXAMPLE_SIDE = 32  # image pixels of the example input the networks are traced with (small is quick)


def check_float32_cpu(model: "ElirModel", who: str) -> None:
    """Raise ValueError unless ``model`` holds float32 weights on the CPU (what tracing needs)."""
    weight = next(model.parameters())
    if weight.dtype != torch.float32 or weight.device.type != "cpu":
        raise ValueError(f"{who} needs the float32 model on the CPU, got {weight.dtype} on {weight.device.type}")


def examples(model: "ElirModel") -> dict[str, tuple[torch.Tensor, ...]]:
    """An input of each network, at the smallest image side the network takes (a multiple of 32)."""
    side = model.config.pad_multiple * -(-EXAMPLE_SIDE // model.config.pad_multiple)
    with torch.no_grad(), plain_convs():
        x = torch.rand(1, 3, side, side)
        z = model.enc(x).float()
    return {"enc": (x,), "mmse": (z,), "fmir": (z, torch.tensor([0.5])), "dec": (z,)}


def with_stages(model: "ElirModel", backend: str, precision: str,
                make: Callable[[str, nn.Module, tuple[torch.Tensor, ...]], nn.Module]) -> "ElirModel":
    """A new ElirModel whose networks are ``make(name, torch_module, example)``; ``model`` is not changed."""
    from .elir import ElirModel

    model = model.eval()
    inputs = examples(model)
    shell = ElirModel.__new__(ElirModel)
    nn.Module.__init__(shell)
    shell.config, shell.task = model.config, model.task
    shell.compute_dtype = None  # no autocast: the runtime computes at its own precision
    shell.backend, shell.backend_precision = backend, precision
    for name in STAGES:
        setattr(shell, name, make(name, getattr(model, name), inputs[name]))
    return shell.eval()


def stages_of(model: "ElirModel", kind: type) -> list:
    """The networks of ``model`` that are ``kind`` modules ([] for a PyTorch model)."""
    return [stage for stage in (getattr(model, name, None) for name in STAGES) if isinstance(stage, kind)]
