"""int8 for ELIR's networks: NNCF post-training quantization of their OpenVINO models.

``--precision int8`` (``pip install "elir-cli[openvino]"``, which brings
OpenVINO and NNCF). Each of the four networks, converted to OpenVINO as the
openvino backend converts it (:func:`.openvino_backend.convert`), is
quantized by NNCF from the inputs it met while the float32 model restored a
calibration set (:func:`quantize`). Where that changes the restorer's output
too much, NNCF's accuracy control (:func:`quantize_with_control`) keeps the
layers that matter most in float32: it ranks the quantized layers by how much
each one costs the caller's metric, and reverts them one group at a time
until the drop is within the bound. Which inputs, which metric and which
bound are the caller's (``pipeline.calibration``): this module knows nothing
of faces or files.

The quantized networks are saved as OpenVINO IR next to the float32 ones in
the weights file's OpenVINO cache (``<stage>.int8.xml``/``.bin``); the
openvino backend then compiles them like any other precision, with float32
for the layers that stay unquantized (``INFERENCE_PRECISION_HINT=f32``, so a
CPU with native bf16 does not round those layers to bf16 behind our back).

NNCF (and OpenVINO) are imported only here and lazily; without them
:func:`require_nncf` raises a ``UsageError`` with the install hint.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from elir_cli.errors import UsageError

if TYPE_CHECKING:
    import numpy as np

INSTALL_HINT = 'pip install "elir-cli[openvino]"'
IR_SUFFIX = ".int8.xml"

# (compiled network, items) -> (metric over the items, metric of each item); higher is better.
ValidationFn = Callable[[Any, Sequence[Any]], "tuple[float, list[float]]"]


def require_nncf() -> Any:
    """The ``nncf`` module, or a one-line UsageError with the install hint."""
    try:
        import openvino  # noqa: F401  (int8 runs on OpenVINO; NNCF alone is not enough)
        import nncf
    except ImportError:
        raise UsageError("int8 needs OpenVINO and NNCF, which are not installed", hint=INSTALL_HINT) from None
    _quiet_nncf()
    return nncf


def available() -> bool:
    """Whether OpenVINO and NNCF can be imported (without importing them twice)."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("openvino", "nncf"))


def _quiet_nncf() -> None:
    """NNCF logs INFO lines; our callers report progress themselves. (Importing it imports
    torch's C++ extension helper, which warns "No CUDA runtime is found" on every CPU machine.)"""
    logging.getLogger("nncf").setLevel(logging.WARNING)
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


def _progress_on_stderr() -> "contextlib.AbstractContextManager[object]":
    """NNCF draws its progress bars with rich's default console, on stdout: move them to stderr,
    where progress belongs (stdout carries results, such as --json)."""
    return contextlib.redirect_stdout(sys.stderr)


@dataclass(frozen=True)
class Quantized:
    """One network after quantization: the model, and how many of its quantizers were reverted."""

    model: Any  # openvino.Model
    reverted: int = 0  # quantizers removed by accuracy control (their layers compute in float32)


def _dataset(items: Sequence[Any]) -> Any:
    return require_nncf().Dataset(list(items))


def quantize(model: Any, calibration: Sequence[list[np.ndarray]]) -> Quantized:
    """NNCF post-training int8 quantization of ``model`` (an OpenVINO model), from these inputs.

    ``calibration``: the network's inputs as the float32 restorer met them,
    each a list of arrays (one per model input). All of them are used.
    """
    nncf = require_nncf()
    with _progress_on_stderr():
        quantized = nncf.quantize(model, _dataset(calibration), subset_size=len(calibration),
                                  target_device=nncf.TargetDevice.CPU)
    return Quantized(quantized)


def quantize_with_control(model: Any, calibration: Sequence[list[np.ndarray]], items: Sequence[Any],
                          validate: ValidationFn, max_drop: float, *, plain: Quantized) -> Quantized:
    """Quantize like :func:`quantize`, then revert the costliest layers until ``validate`` drops by at most ``max_drop``.

    NNCF's ``quantize_with_accuracy_control``: ``validate(compiled, items)``
    is called with the float32 and the quantized network compiled by NNCF
    (float32 inference for unquantized layers) and returns the metric over
    ``items`` and per item; the drop is absolute. The ranking of layers uses
    the per-item metric on all ``items``. ``plain``: this network quantized
    by :func:`quantize`, to count the reverted quantizers against.
    """
    nncf = require_nncf()
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    restorer = AdvancedAccuracyRestorerParameters(ranking_subset_size=len(items), num_ranking_workers=1)
    with _progress_on_stderr():
        quantized = nncf.quantize_with_accuracy_control(
            model, _dataset(calibration), _dataset(items), validate, max_drop=max_drop,
            drop_type=nncf.DropType.ABSOLUTE, subset_size=len(calibration), target_device=nncf.TargetDevice.CPU,
            advanced_accuracy_restorer_parameters=restorer)
    return Quantized(quantized, reverted=max(0, quantizers(plain.model) - quantizers(quantized)))


def quantizers(model: Any) -> int:
    """How many tensors of ``model`` (an OpenVINO model) are quantized: its FakeQuantize (or
    FakeConvert) operations, one per quantized tensor."""
    return sum(1 for op in model.get_ops() if op.get_type_name() in ("FakeQuantize", "FakeConvert"))


def ir_path(folder: Path, stage: str) -> Path:
    """Where a network's quantized IR lives in a weights file's OpenVINO cache folder."""
    return folder / f"{stage}{IR_SUFFIX}"
