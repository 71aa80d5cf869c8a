"""The user-facing choices (task, device, precision, output format) as str enums.

The CLI's options and the server's form fields take their values from here,
so the two cannot drift apart. Importing this module costs no torch, PIL or
NumPy: the task names come from the manifest.
"""

from __future__ import annotations

from enum import Enum

from elir_cli.registry.tasks import task_names

TaskName = Enum("TaskName", {name: name for name in task_names()}, type=str)  # type: ignore[misc]


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"
    int8 = "int8"


class Backend(str, Enum):
    auto = "auto"
    torch = "torch"
    openvino = "openvino"
    onnxruntime = "onnxruntime"


class Ext(str, Enum):
    auto = "auto"
    png = "png"
    jpg = "jpg"
    webp = "webp"
    tiff = "tiff"


class ColorFix(str, Enum):
    none = "none"
    wavelet = "wavelet"
    adain = "adain"
