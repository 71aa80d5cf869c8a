"""Options shared by ``elir restore`` and ``elir batch``, defined once.

Nothing here imports torch: the choices come from the task manifest.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer

from ..tasks import task_names

TaskName = Enum("TaskName", {name: name for name in task_names()}, type=str)  # type: ignore[misc]


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Precision(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


class Ext(str, Enum):
    auto = "auto"
    png = "png"
    jpg = "jpg"
    webp = "webp"
    tiff = "tiff"


MODEL = "Model"
FACES = "Faces"
OUTPUT = "Output"

Task = Annotated[TaskName, typer.Option("--task", "-t", help="What to restore (see `elir models list`).",
                                        rich_help_panel=MODEL)]
Weights = Annotated[Optional[str], typer.Option("--weights", help="Use this weights file (.safetensors, .pth or .ckpt) instead of the registry.", rich_help_panel=MODEL)]
Steps = Annotated[Optional[int], typer.Option("--steps", min=1, help="Euler steps (default: the task's K).", rich_help_panel=MODEL)]
Fidelity = Annotated[float, typer.Option("--fidelity", min=0.0, max=1.0, help="0 = faithful coarse estimate, 1 = full flow (most detail).", rich_help_panel=MODEL)]
Seed = Annotated[Optional[int], typer.Option("--seed", help="Seed for repeatable results (same seed, same bytes).", rich_help_panel=MODEL)]
DeviceOpt = Annotated[Device, typer.Option("--device", help="Where to run; the device used is reported.", rich_help_panel=MODEL)]
PrecisionOpt = Annotated[Precision, typer.Option("--precision", help="fp32, or fp16/bf16 where the device supports it.", rich_help_panel=MODEL)]
BatchSize = Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Faces restored at once; it bounds memory (default: 1 on the CPU, where batching is not faster; 4 on a GPU).", rich_help_panel=MODEL)]
Compile = Annotated[bool, typer.Option("--compile", help="torch.compile the model: the first face compiles it (minutes on a small CPU); may pay on a GPU over a long batch.", rich_help_panel=MODEL)]
Upscale = Annotated[Optional[int], typer.Option("--upscale", min=1, max=16, help="Output scale (default: the task's).", rich_help_panel=OUTPUT)]
BgTask = Annotated[Optional[str], typer.Option("--bg-task", help="Restore the background with this task (bsr); default: resize it.", rich_help_panel=MODEL)]
Aligned = Annotated[bool, typer.Option("--aligned", help="Inputs are already aligned face crops: skip detection.", rich_help_panel=FACES)]
OnlyCenter = Annotated[bool, typer.Option("--only-center-face", help="Restore only the face nearest the centre.", rich_help_panel=FACES)]
Faces = Annotated[Optional[str], typer.Option("--faces", help="Restore only these faces, e.g. 0,2 (numbered left to right, top to bottom).", rich_help_panel=FACES)]
MaxFaces = Annotated[Optional[int], typer.Option("--max-faces", min=1, help="Restore only the N largest faces.", rich_help_panel=FACES)]
MinFaceSize = Annotated[float, typer.Option("--min-face-size", min=0.0, help="Ignore faces whose eyes are closer than this many pixels.", rich_help_panel=FACES)]
DetThreshold = Annotated[Optional[float], typer.Option("--det-threshold", min=0.0, max=1.0, help="Face detection score threshold.", rich_help_panel=FACES)]
SaveFaces = Annotated[Optional[str], typer.Option("--save-faces", help="Save each face crop before and after restoration into this folder.", rich_help_panel=OUTPUT)]
Compare = Annotated[bool, typer.Option("--compare", help="Also write a side-by-side before/after image.", rich_help_panel=OUTPUT)]
ExtOpt = Annotated[Ext, typer.Option("--ext", help="Output format; auto keeps the input's where it can hold the result.", rich_help_panel=OUTPUT)]
Quality = Annotated[int, typer.Option("--quality", min=1, max=100, help="JPEG/WebP quality.", rich_help_panel=OUTPUT)]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs (never the input).", rich_help_panel=OUTPUT)]
JsonOut = Annotated[bool, typer.Option("--json", help="Print results as JSON on stdout.", rich_help_panel=OUTPUT)]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors.", rich_help_panel=OUTPUT)]
MaxPixels = Annotated[Optional[int], typer.Option("--max-pixels", min=1, help="Refuse images larger than this many pixels (default: 178,956,970).", rich_help_panel=OUTPUT)]
Debug = Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.", hidden=True)]
