"""Options shared by ``elir restore`` and ``elir batch``, defined once.

Each option is an ``Annotated`` type below; :class:`RestoreOptions` lists the
ones both commands take, and :func:`restore_options` adds them to a command.
Adding an option to both commands means adding one field. Nothing here imports
torch: the choices come from the task manifest.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, fields, replace
from enum import Enum
from typing import Annotated, Any, Callable, Optional, get_type_hints

import typer

from elir_cli.registry.choices import Backend, Device, Ext, Precision, TaskName  # noqa: F401 (the commands use opt.X)


class Engine(str, Enum):
    local = "local"
    ray = "ray"


MODEL = "Model"
FACES = "Faces"
OUTPUT = "Output"
DISTRIBUTED = "Distributed (--engine ray)"

Task = Annotated[TaskName, typer.Option("--task", "-t", help="What to restore (see `elir models list`).",
                                        rich_help_panel=MODEL)]
Weights = Annotated[Optional[str], typer.Option("--weights", help="Use this weights file (.safetensors, .pth or .ckpt) instead of the registry.", rich_help_panel=MODEL)]
Steps = Annotated[Optional[int], typer.Option("--steps", min=1, help="Euler steps (default: the task's K).", rich_help_panel=MODEL)]
Fidelity = Annotated[float, typer.Option("--fidelity", min=0.0, max=1.0, help="0 = faithful coarse estimate, 1 = full flow (most detail).", rich_help_panel=MODEL)]
Seed = Annotated[Optional[int], typer.Option("--seed", help="Seed for repeatable results (same seed, same bytes).", rich_help_panel=MODEL)]
DeviceOpt = Annotated[Device, typer.Option("--device", help="Where to run; the device used is reported.", rich_help_panel=MODEL)]
PrecisionOpt = Annotated[Precision, typer.Option("--precision", help="auto (default): bf16 on CPUs with native bf16 (AMX/AVX512-BF16), bf16/fp16 on CUDA, fp32 elsewhere, once a calibration per weights file shows it restores like fp32 (>= 45 dB); fp32 is exact to the authors; fp16/bf16 force one where the device supports it.", rich_help_panel=MODEL)]
BackendOpt = Annotated[Backend, typer.Option("--backend", help="Who runs the network: torch (default), or openvino on the CPU (pip install \"elir-cli[openvino]\"; converted and compiled once per weights file, precision and input size, then cached).", rich_help_panel=MODEL)]
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
EngineOpt = Annotated[Engine, typer.Option("--engine", help="local: this process; ray: a pool of model workers on Ray Data (pip install \"elir-cli[ray]\").", rich_help_panel=DISTRIBUTED)]
RayAddress = Annotated[Optional[str], typer.Option("--ray-address", help="Ray cluster to run on: auto, HOST:PORT or ray://HOST:PORT (default: start a local Ray instance).", rich_help_panel=DISTRIBUTED)]
NumModelWorkers = Annotated[Optional[int], typer.Option("--num-model-workers", min=1, help="Model workers (one loaded model each; default: as many as the CPUs or GPUs allow).", rich_help_panel=DISTRIBUTED)]
CpusPerWorker = Annotated[float, typer.Option("--cpus-per-worker", min=0.01, help="CPUs each model worker reserves (and its torch threads).", rich_help_panel=DISTRIBUTED)]
GpusPerWorker = Annotated[float, typer.Option("--gpus-per-worker", min=0.0, help="GPUs each model worker reserves (fractions share a GPU).", rich_help_panel=DISTRIBUTED)]
Suffix = Annotated[str, typer.Option("--suffix", help="Added to output names.", rich_help_panel=OUTPUT)]


@dataclass(frozen=True)
class RestoreOptions:
    """The options ``restore`` and ``batch`` share, in their ``--help`` order.

    A command's own options go between ``max_pixels`` and ``as_json``
    (:data:`OWN_OPTIONS_BEFORE`).
    """

    task: Task = TaskName.bfr  # type: ignore[attr-defined]
    weights: Weights = None
    steps: Steps = None
    fidelity: Fidelity = 1.0
    seed: Seed = None
    device: DeviceOpt = Device.auto
    precision: PrecisionOpt = Precision.auto
    backend: BackendOpt = Backend.torch
    batch_size: BatchSize = None
    compile: Compile = False
    upscale: Upscale = None
    bg_task: BgTask = None
    aligned: Aligned = False
    only_center_face: OnlyCenter = False
    faces: Faces = None
    max_faces: MaxFaces = None
    min_face_size: MinFaceSize = 0.0
    det_threshold: DetThreshold = None
    save_faces: SaveFaces = None
    compare: Compare = False
    suffix: Suffix = "_restored"
    ext: ExtOpt = Ext.auto
    quality: Quality = 95
    overwrite: Overwrite = False
    max_pixels: MaxPixels = None
    as_json: JsonOut = False
    quiet: Quiet = False
    debug: Debug = False

    def settings(self):  # type: ignore[no-untyped-def]
        """These options as the library's :class:`~elir_cli.pipeline.files.RestoreSettings`."""
        from elir_cli.pipeline.files import RestoreSettings, parse_face_indices

        values = {f.name: getattr(self, f.name) for f in fields(RestoreSettings)
                  if f.name in self.__dataclass_fields__}
        values["face_indices"] = parse_face_indices(self.faces)
        for key in ("task", "device", "precision", "backend", "ext"):
            values[key] = values[key].value
        return RestoreSettings(**values)


OWN_OPTIONS_BEFORE = "as_json"


def restore_options(**defaults: Any) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command the :class:`RestoreOptions` parameters (with these ``defaults`` changed).

    The command declares ``options: RestoreOptions`` after its arguments; its
    parameters after that one are its own options. Typer sees one flat
    signature; the command receives the shared values as one ``options``.
    """
    unknown = set(defaults) - set(RestoreOptions.__dataclass_fields__)
    if unknown:
        raise ValueError(f"restore_options: unknown defaults {sorted(unknown)}")
    hints = get_type_hints(RestoreOptions, include_extras=True)
    base = replace(RestoreOptions(), **defaults)
    shared = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=hints[f.name],
                                default=getattr(base, f.name)) for f in fields(RestoreOptions)]
    split = next(i for i, p in enumerate(shared) if p.name == OWN_OPTIONS_BEFORE)

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        params = list(inspect.signature(command, eval_str=True).parameters.values())
        at = next(i for i, p in enumerate(params) if p.name == "options")
        head = params[:at]
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params[at + 1:]]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> None:
            options = RestoreOptions(**{p.name: kwargs.pop(p.name) for p in shared})
            command(**kwargs, options=options)

        signature = inspect.Signature(head + shared[:split] + own + shared[split:])
        wrapper.__signature__ = signature  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
        return wrapper

    return decorate
