"""The ONNX Runtime backend: ELIR's four networks run by ONNX Runtime's best installed provider.

``--backend onnxruntime`` (``pip install "elir-cli[onnx]"``, or the package of
another provider: ``onnxruntime-gpu`` for CUDA and TensorRT,
``onnxruntime-directml`` for AMD and Intel GPUs on Windows,
``onnxruntime-rocm``/``-migraphx`` for AMD on Linux, ``onnxruntime-openvino``;
the macOS wheel has CoreML). Each network (encoder, coarse estimator, vector
field, decoder) is exported once from the float32 PyTorch module to ONNX with
dynamic batch, height and width, cached per weights file, and run by an
``InferenceSession``. The Euler loop, the noise, ``steps``, ``fidelity`` and
the progress callback stay ElirModel's own (:meth:`ElirModel.forward`), as on
the OpenVINO backend: the graphs carry no sampling decision, so every
fidelity and step count works without another export.

The provider: ``--device cpu`` takes ONNX Runtime's CPU provider, ``--device
cuda`` its CUDA provider (a one-line error names the package when it is not
installed), ``--device auto`` the first installed of :data:`AUTO_ORDER`.
TensorRT is never picked by itself (its engines take minutes to build per
shape). fp32 only, for now: a reduced precision would need its own
calibration record per provider.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from elir_cli.atomicwrite import write_bytes_atomic
from elir_cli.errors import ElirError, UsageError

from .cpu_conv import plain_convs
from .stages import check_float32_cpu, with_stages
from .stages import stages_of as _stages_of

if TYPE_CHECKING:
    from .elir import ElirModel

INSTALL_HINT = 'pip install "elir-cli[onnx]"'
OPSET = 17
# Our name -> (ONNX Runtime's provider, the pip package that brings it).
PROVIDERS = {
    "tensorrt": ("TensorrtExecutionProvider", "onnxruntime-gpu"),
    "cuda": ("CUDAExecutionProvider", "onnxruntime-gpu"),
    "rocm": ("ROCMExecutionProvider", "onnxruntime-rocm"),
    "migraphx": ("MIGraphXExecutionProvider", "onnxruntime-migraphx"),
    "directml": ("DmlExecutionProvider", "onnxruntime-directml"),
    "coreml": ("CoreMLExecutionProvider", "onnxruntime (its macOS wheel)"),
    "openvino": ("OpenVINOExecutionProvider", "onnxruntime-openvino"),
    "cpu": ("CPUExecutionProvider", "onnxruntime"),
}
AUTO_ORDER = ("cuda", "rocm", "migraphx", "directml", "coreml", "openvino", "cpu")
CPU_PROVIDER = PROVIDERS["cpu"][0]


def require_onnxruntime() -> Any:
    """The ``onnxruntime`` module, or a one-line UsageError with the install hint."""
    try:
        import onnxruntime
    except ImportError:
        raise UsageError("the onnxruntime backend needs ONNX Runtime, which is not installed",
                         hint=INSTALL_HINT) from None
    return onnxruntime


def choose_provider(device: str) -> str:
    """ONNX Runtime's provider for ``device`` (``auto``, ``cpu``, ``cuda``, or one of :data:`PROVIDERS`)."""
    available = set(require_onnxruntime().get_available_providers())
    if device == "auto":
        return next(PROVIDERS[name][0] for name in AUTO_ORDER if PROVIDERS[name][0] in available or name == "cpu")
    if device not in PROVIDERS:
        raise UsageError(f"the onnxruntime backend has no provider for {device!r}",
                         hint=f"use --device auto, cpu or cuda (providers: {', '.join(PROVIDERS)})")
    provider, package = PROVIDERS[device]
    if provider not in available:
        raise UsageError(f"ONNX Runtime's {provider} is not installed (installed: {', '.join(sorted(available))})",
                         hint=f"pip install {package}, or use --device auto")
    return provider


class OrtStage(nn.Module):
    """One of ELIR's networks run by ONNX Runtime; called like the PyTorch module it replaces.

    ``loaded_from``: ``"cache"`` (the graph read from the store) or
    ``"exported"`` (exported from PyTorch now).
    """

    def __init__(self, name: str, module: nn.Module, provider: str, *, example: tuple[torch.Tensor, ...],
                 cache_dir: Path | None) -> None:
        super().__init__()
        self.name, self.provider = name, provider
        self.__dict__["_torch_module"] = module  # not a submodule: no second copy in the state dict
        # An empty float32 CPU parameter: callers read a model's device and input dtype from it.
        self.anchor = nn.Parameter(torch.empty(0), requires_grad=False)
        path = None if cache_dir is None else cache_dir / f"{name}.onnx"
        if path is not None and path.is_file():
            data, self.loaded_from = path.read_bytes(), "cache"
        else:
            data, self.loaded_from = export_stage(module, example), "exported"
            if path is not None:
                try:
                    write_bytes_atomic(path, data, overwrite=True)
                except (ElirError, OSError):  # a read-only store: export again next time
                    pass
        ort = require_onnxruntime()
        providers = [provider] if provider == CPU_PROVIDER else [provider, CPU_PROVIDER]
        self.session = ort.InferenceSession(data, providers=providers)
        self.inputs = [i.name for i in self.session.get_inputs()]

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        feed = {name: t.detach().to("cpu", torch.float32).contiguous().numpy() for name, t in zip(self.inputs, inputs)}
        return torch.from_numpy(self.session.run(None, feed)[0])


def export_stage(module: nn.Module, example: tuple[torch.Tensor, ...]) -> bytes:
    """``module`` (float32) as an ONNX graph with dynamic batch, height and width (the TorchScript exporter)."""
    names = [f"input{i}" for i in range(len(example))]
    dynamic = {name: {0: "batch", 2: "height", 3: "width"} for name, t in zip(names, example) if t.ndim == 4}
    dynamic["output"] = {0: "batch", 2: "height", 3: "width"}
    buffer = io.BytesIO()
    with torch.no_grad(), plain_convs(), warnings.catch_warnings():  # ATen convs only: what the exporter knows
        warnings.simplefilter("ignore")
        torch.onnx.export(module, example, buffer, dynamo=False, input_names=names, output_names=["output"],
                          dynamic_axes=dynamic, opset_version=OPSET, do_constant_folding=True)
    return buffer.getvalue()


def to_onnxruntime(model: "ElirModel", provider: str, *, cache_dir: Path | None = None) -> "ElirModel":
    """An ElirModel whose four networks run on ONNX Runtime's ``provider`` (float32).

    ``model`` must hold float32 weights on the CPU; it is not changed.
    ``cache_dir``: the folder for this weights file's graphs (None: exported
    at every load).
    """
    check_float32_cpu(model, "to_onnxruntime")
    folder = None if cache_dir is None else cache_dir / f"ort-opset{OPSET}-torch{torch.__version__.split('+')[0]}"
    return with_stages(model, "onnxruntime", "fp32", lambda name, module, example: OrtStage(
        name, module, provider, example=example, cache_dir=folder))


def stages_of(model: "ElirModel") -> list[OrtStage]:
    """The ONNX Runtime stages of a model from :func:`to_onnxruntime` ([] for another)."""
    return _stages_of(model, OrtStage)
