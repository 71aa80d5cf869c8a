"""What a restoration takes, declared once: :class:`RestoreSettings`.

Each field of :class:`RestoreSettings` is one option, declared with
:func:`option`: its type and default (the field's), its bounds, its help,
its command-line flag and help panel, and which front ends show it
(:data:`CLI`, :data:`HTTP`, :data:`API`). Everything else is derived from
these fields:

- the options of ``elir restore`` and ``elir batch`` (``elir_cli.cli.options``),
- the form fields of ``POST /v1/restore`` and ``POST /v1/jobs``
  (``elir_cli.serve.dependencies``),
- the keyword arguments of ``Restorer``, ``restore_image`` and
  ``restore_array`` (:func:`api_parameters`),
- the options table of the docs (:func:`options_table`),
- and the validation, here, once: bounds and choices from the declarations,
  then the rules that tie options together (:meth:`RestoreSettings.__post_init__`).

Adding an option is adding one field here (and using it where it acts).
Errors carry the option and the value (:class:`~elir_cli.errors.UsageError`);
their messages name options as ``{keyword}`` placeholders that each front
end renders (``--det-threshold`` on the command line, ``det_threshold`` in
the server's 422 and in Python). Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any, Callable, Iterator, Optional, Sequence, Union, get_args, get_origin, get_type_hints

from elir_cli.errors import UsageError
from elir_cli.registry.choices import Backend, ColorFix, Device, Ext, Precision, TaskName
from elir_cli.registry.tasks import get_task

CLI, HTTP, API = "cli", "http", "api"
EVERYWHERE = frozenset({CLI, HTTP, API})
NOT_HTTP = frozenset({CLI, API})
# What an option decides: which models are loaded (a restorer keeps them), how one image is
# restored (may change from call to call), or how the output is written (files only).
MODEL, IMAGE, OUTPUT = "model", "image", "output"
# The help panels of ``elir restore --help``.
MODEL_PANEL, FACES_PANEL, OUTPUT_PANEL = "Model", "Faces", "Output"
MAX_UPSCALE = 16
SPEC = "elir_option"  # the dataclass field metadata key


@dataclass(frozen=True)
class OptionSpec:
    """How one option is shown and checked; the field gives its name, type and default."""

    help: str
    group: str = IMAGE
    minimum: float | None = None
    maximum: float | None = None
    exclusive: bool = False  # the bounds themselves are refused (shown as inclusive)
    choices: type[Enum] | None = None  # the front ends offer these; the settings hold the value (str)
    check_choices: bool = True
    flag: str | None = None  # default: --name-with-dashes
    short: str | None = None
    panel: str = MODEL_PANEL
    fronts: frozenset[str] = EVERYWHERE
    text: bool = False  # the CLI and the form take it as text, parsed by ``parse``
    parse: Callable[[Any], Any] | None = None
    form_name: str | None = None  # the form field (default: the keyword)
    http_help: str | None = None  # where the server's meaning differs (its own default)
    http_maximum: float | None = None  # a tighter bound for requests

    def flag_name(self, name: str) -> str:
        return self.flag or "--" + name.replace("_", "-")


def option(default: Any, help: str, **spec: Any) -> Any:
    """A :class:`RestoreSettings` field: ``default`` and an :class:`OptionSpec` (``help``, ``**spec``)."""
    return field(default=default, metadata={SPEC: OptionSpec(help=help, **spec)})


def parse_face_indices(text: "str | Sequence[int] | None") -> tuple[int, ...] | None:
    """``"0,2"`` (or ``[0, 2]``) -> (0, 2); a clear error for anything else."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    try:
        values = tuple(int(part) for part in (text.split(",") if isinstance(text, str) else text))
    except (TypeError, ValueError):
        raise UsageError(f"{{face_indices}} takes face numbers separated by commas, got {text!r}",
                         option="face_indices", value=text,
                         hint="for example 0,2 (faces are numbered left to right, top to bottom)") from None
    if any(v < 0 for v in values):
        raise UsageError(f"{{face_indices}} numbers start at 0, got {text!r}", option="face_indices", value=text)
    return values


@dataclass(frozen=True)
class RestoreSettings:
    """Everything that decides a restoration: the single declaration of the options.

    Field order is the order of ``elir restore --help``. Creating one validates
    it; a bad value raises :class:`~elir_cli.errors.UsageError` with ``.option``
    and ``.value``.
    """

    task: str = option("bfr", "What to restore (see `elir models list`).", group=MODEL, choices=TaskName,
                       check_choices=False, short="-t", http_help="What to restore (GET /v1/models); default: the server's --task.")
    weights: str | None = option(None, "Use this weights file (.safetensors, .pth or .ckpt) instead of the registry.",
                                 group=MODEL, fronts=NOT_HTTP)
    # A request cannot ask for more than 100 steps (a running restoration cannot be stopped).
    steps: int | None = option(None, "Euler steps (default: the task's K).", minimum=1, http_maximum=100)
    fidelity: float = option(1.0, "0 = faithful coarse estimate, 1 = full flow (most detail).",
                             minimum=0.0, maximum=1.0)
    seed: int | None = option(None, "Seed for repeatable results (same seed, same bytes).")
    device: str = option("auto", "Where to run; the device used is reported.", group=MODEL, choices=Device,
                         check_choices=False, fronts=NOT_HTTP)  # also "cuda:1" and the like, from Python
    precision: str = option(
        "auto", "auto (default): bf16 on CPUs with native bf16 (AMX/AVX512-BF16), bf16/fp16 on CUDA, fp32 "
        "elsewhere, once a calibration per weights file shows it restores like fp32 (>= 45 dB); on the CPU, int8 "
        "instead where its calibration passes and it is >= 1.5x faster than fp32 (and faster than bf16); fp32 is "
        "exact to the authors; fp16/bf16 force one where the device supports it; int8 (OpenVINO, pip install "
        "\"elir-cli[openvino]\") quantizes once per weights file, then runs.",
        group=MODEL, choices=Precision, fronts=NOT_HTTP)
    backend: str = option(
        "auto", "Who runs the network: auto (default): torch, or openvino where --precision picks int8; torch; "
        "openvino on the CPU (pip install "
        "\"elir-cli[openvino]\"; converted and compiled once per weights file, precision and input size, "
        "then cached); or onnxruntime, fp32, on ONNX Runtime's best installed provider for --device (CUDA, "
        "DirectML, CoreML, ROCm, OpenVINO, CPU; exported once per weights file).", group=MODEL,
        choices=Backend, fronts=NOT_HTTP)
    batch_size: int | None = option(None, "Faces restored at once; it bounds memory (default: 1 on the CPU, "
                                    "where batching is not faster; 4 on a GPU).", group=MODEL, minimum=1,
                                    fronts=NOT_HTTP)
    compile: bool = option(False, "torch.compile the model: the first face compiles it (minutes on a small "
                           "CPU); may pay on a GPU over a long batch.", group=MODEL, fronts=NOT_HTTP)
    min_faithfulness: float | None = option(
        None, "Restore again, at lower fidelity, any face whose faithfulness to its input is below this many dB; "
        "it keeps the highest fidelity that passes (off by default).", minimum=0.0, maximum=80.0,
        panel=FACES_PANEL)
    color_fix: str = option("none", "Take the colour from the input: wavelet (its low frequencies) or adain (each "
                            "channel's mean and spread); faces before pasting, whole images after tiling.",
                            choices=ColorFix)
    identity_weights: str | None = option(None, "ArcFace weights (resnet18_110.pth) for an identity score per face.",
                                          group=MODEL, fronts=NOT_HTTP, panel=FACES_PANEL)
    upscale: int | None = option(None, "Output scale (default: the task's).", minimum=1, maximum=MAX_UPSCALE,
                                 panel=OUTPUT_PANEL)
    bg_task: str | None = option(None, "Restore the background with this task (bsr); default: resize it.",
                                 group=MODEL, fronts=NOT_HTTP)
    aligned: bool = option(False, "Inputs are already aligned face crops: skip detection.", panel=FACES_PANEL)
    only_center_face: bool = option(False, "Restore only the face nearest the centre.", panel=FACES_PANEL)
    face_indices: tuple[int, ...] | None = option(
        None, "Restore only these faces, e.g. 0,2 (numbered left to right, top to bottom).", flag="--faces",
        form_name="faces", text=True, parse=parse_face_indices, panel=FACES_PANEL)
    max_faces: int | None = option(None, "Restore only the N largest faces.", minimum=1, panel=FACES_PANEL)
    min_face_size: float = option(0.0, "Ignore faces whose eyes are closer than this many pixels.", minimum=0.0,
                                  panel=FACES_PANEL)
    det_threshold: float | None = option(None, "Face detection score threshold.", minimum=0.0, maximum=1.0,
                                         exclusive=True, panel=FACES_PANEL)
    save_faces: str | None = option(None, "Save each face crop before and after restoration into this folder.",
                                    group=OUTPUT, panel=OUTPUT_PANEL, fronts=NOT_HTTP)
    compare: bool = option(False, "Also write a side-by-side before/after image.", group=OUTPUT,
                           panel=OUTPUT_PANEL, fronts=NOT_HTTP)
    suffix: str = option("_restored", "Added to output names.", group=OUTPUT, panel=OUTPUT_PANEL, fronts=NOT_HTTP)
    ext: str = option("auto", "Output format; auto keeps the input's where it can hold the result.",
                      group=OUTPUT, choices=Ext, panel=OUTPUT_PANEL)
    quality: int = option(95, "JPEG/WebP quality.", group=OUTPUT, minimum=1, maximum=100, panel=OUTPUT_PANEL)
    overwrite: bool = option(False, "Replace existing outputs (never the input).", group=OUTPUT,
                             panel=OUTPUT_PANEL, fronts=NOT_HTTP)
    max_pixels: int | None = option(None, "Refuse images larger than this many pixels (default: 178,956,970).",
                                    group=OUTPUT, minimum=1, panel=OUTPUT_PANEL, fronts=NOT_HTTP)
    # Python only.
    detector: str | None = option(None, "Face detector to use (default: the registry's RetinaFace).",
                                  group=MODEL, fronts=frozenset({API}))
    whole_image: bool = option(False, "Restore the whole photo in tiles with a face task, without detection.",
                               fronts=frozenset({API}))

    def __post_init__(self) -> None:
        for f, spec in specs(type(self)):
            value = getattr(self, f.name)
            if isinstance(value, Enum):
                value = value.value
            if spec.parse is not None:
                value = spec.parse(value)
            object.__setattr__(self, f.name, value)
            check_value(f.name, value, spec, whole=value_type(type(self), f.name) is int)
        self._check_together()

    def _check_together(self) -> None:
        """The rules that tie options together (each option's own bounds are checked already)."""
        spec = get_task(self.task)
        if self.bg_task is not None:
            get_task(self.bg_task)
            if self.bg_task not in BG_TASKS:
                raise UsageError(f"{{bg_task}} {self.bg_task!r} is not a background task", option="bg_task",
                                 value=self.bg_task, hint=f"use one of: {', '.join(BG_TASKS)}")
            if spec.kind != "face" or self.aligned or self.whole_image:
                raise UsageError("{bg_task} only applies to face tasks on whole photos", option="bg_task",
                                 value=self.bg_task,
                                 hint="drop {bg_task} (bsr and {aligned} restore the whole image)",
                                 mentions=("aligned",))
        if self.color_fix != "none" and self.task == "inpainting":
            raise UsageError("{color_fix} needs the input's colour everywhere; inpainting's missing pixels have none",
                             option="color_fix", value=self.color_fix, hint="drop {color_fix} for inpainting")
        if self.min_faithfulness is not None and (spec.kind != "face" or self.whole_image):
            raise UsageError(f"{{min_faithfulness}} guards faces; {'{whole_image}' if self.whole_image else self.task} "
                             "restores whole images", option="min_faithfulness", value=self.min_faithfulness,
                             mentions=("whole_image",), hint="drop {min_faithfulness}; the score is still reported")
        if self.aligned and self.whole_image:
            raise UsageError("{aligned} and {whole_image} exclude each other", option="aligned", value=True,
                             mentions=("whole_image",),
                             hint="{aligned}: the photo is one aligned face; {whole_image}: tile the whole photo")
        if self.aligned and spec.kind != "face":
            raise UsageError(f"{{aligned}} is for face tasks; {self.task} restores whole photos", option="aligned",
                             value=True, mentions=("task",))
        choosing = face_choices_given(self)
        if choosing and (self.aligned or self.whole_image or spec.kind != "face"):
            why = ("{aligned} skips" if self.aligned else "{whole_image} skips" if self.whole_image
                   else f"task {self.task} restores whole photos, without")
            listed = ", ".join("{" + name + "}" for name in choosing)
            cause = "aligned" if self.aligned else "whole_image" if self.whole_image else choosing[0]
            raise UsageError(f"{why} face detection, so {listed} would be ignored", option=cause,
                             value=getattr(self, cause), mentions=tuple(choosing) + ("aligned", "whole_image"),
                             hint="drop them" + (", or drop {aligned} to detect and choose faces"
                                                 if self.aligned else ""))

    def replace(self, **changes: Any) -> "RestoreSettings":
        """A copy with ``changes``, validated again."""
        return dataclasses.replace(self, **changes)

    def model_key(self) -> tuple[Any, ...]:
        """The values that decide which models are loaded (:data:`MODEL` options)."""
        return tuple(getattr(self, name) for name in MODEL_FIELDS)


BG_TASKS = ("bsr",)
# The face-choice options: set to anything but their default, they need detection.
FACE_CHOICES = ("face_indices", "max_faces", "only_center_face", "min_face_size", "det_threshold", "detector")


def face_choices_given(settings: RestoreSettings) -> list[str]:
    """The face-choice options set to something other than their default (keywords).

    Without detection (``aligned``, ``whole_image``, or a whole-photo task)
    they would do nothing, so they are refused rather than silently ignored.
    """
    given = {"face_indices": settings.face_indices is not None, "max_faces": settings.max_faces is not None,
             "only_center_face": bool(settings.only_center_face), "min_face_size": settings.min_face_size > 0,
             "det_threshold": settings.det_threshold is not None and settings.det_threshold != _default_threshold(),
             "detector": settings.detector is not None}
    return [name for name in FACE_CHOICES if given[name]]


def _default_threshold() -> float:
    from elir_cli.faces.detection import DEFAULT_THRESHOLD  # with NumPy: only when a threshold is given

    return DEFAULT_THRESHOLD


# -- reading the declarations -------------------------------------------------------

def specs(cls: type = RestoreSettings, front: str | None = None) -> Iterator[tuple[dataclasses.Field, OptionSpec]]:
    """The options of ``cls`` (a :class:`RestoreSettings` or a subclass), in order; only ``front``'s if given."""
    for f in fields(cls):
        spec = f.metadata.get(SPEC)
        if spec is not None and (front is None or front in spec.fronts):
            yield f, spec


def spec_of(name: str, cls: type = RestoreSettings) -> OptionSpec | None:
    return next((spec for f, spec in specs(cls) if f.name == name), None)


def flag_of(name: str, cls: type = RestoreSettings) -> str:
    """The command-line flag of option ``name`` (``det_threshold`` -> ``--det-threshold``)."""
    spec = spec_of(name, cls)
    return spec.flag_name(name) if spec is not None else "--" + name.replace("_", "-")


def form_name_of(name: str, cls: type = RestoreSettings) -> str:
    """The form field of option ``name`` (``face_indices`` -> ``faces``)."""
    spec = spec_of(name, cls)
    return (spec.form_name or name) if spec is not None else name


def value_type(cls: type, name: str) -> Any:
    """The field's type without ``None`` (``int | None`` -> ``int``)."""
    hint = get_type_hints(cls)[name]
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else hint
    return hint


def front_type(cls: type, name: str, spec: OptionSpec) -> Any:
    """The type a front end (a Typer option, a form field) reads the option as: its choices' enum,
    ``str`` for options given as text, else the field's type; ``Optional`` where the field may be None."""
    kind: Any = spec.choices or (str if spec.text else value_type(cls, name))
    return Optional[kind] if is_optional(cls, name) else kind


def is_optional(cls: type, name: str) -> bool:
    hint = get_type_hints(cls)[name]
    return get_origin(hint) in (Union, types.UnionType) and type(None) in get_args(hint)


def check_value(name: str, value: Any, spec: OptionSpec, *, whole: bool = False) -> None:
    """One option's own rules: its choices, its bounds, and a whole number where the type is ``int``."""
    if value is None:
        return
    if whole and (isinstance(value, bool) or not isinstance(value, int)):
        raise UsageError(f"{{{name}}} must be a whole number, got {value!r}", option=name, value=value)
    if spec.choices is not None and spec.check_choices:
        allowed = [member.value for member in spec.choices]
        if value not in allowed:
            raise UsageError(f"{{{name}}} {value!r} is not one of: {', '.join(allowed)}", option=name, value=value)
    if spec.minimum is None and spec.maximum is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{{{name}}} must be a number, got {value!r}", option=name, value=value)
    low, high = spec.minimum, spec.maximum
    too_low = low is not None and (value < low or (spec.exclusive and value == low))
    too_high = high is not None and (value > high or (spec.exclusive and value == high))
    if too_low or too_high:
        raise UsageError(f"{{{name}}} must be {_bounds(spec)}, got {value}", option=name, value=value)


def _bounds(spec: OptionSpec) -> str:
    low, high = _number(spec.minimum), _number(spec.maximum)
    if spec.minimum is not None and spec.maximum is not None:
        return f"between {low} and {high}" + (" (exclusive)" if spec.exclusive else "")
    if spec.minimum is not None:
        return f"more than {low}" if spec.exclusive else f"at least {low}"
    return f"less than {high}" if spec.exclusive else f"at most {high}"


def _number(value: float | None) -> str:
    return f"{value:g}" if value is not None else ""


# The options whose values decide which models a restorer loads (it keeps them loaded).
MODEL_FIELDS = tuple(f.name for f, spec in specs() if spec.group == MODEL)


def api_parameters(cls: type = RestoreSettings, groups: Sequence[str] = (MODEL, IMAGE, OUTPUT)
                   ) -> list[inspect.Parameter]:
    """The Python API's keyword arguments for the options of ``groups`` (for a ``__signature__``)."""
    hints = get_type_hints(cls)
    return [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=hints[f.name])
            for f, spec in specs(cls, API) if spec.group in groups]


def with_options(function: Callable[..., Any], *, groups: Sequence[str], cls: type = RestoreSettings
                 ) -> Callable[..., Any]:
    """Give ``function`` (which takes ``**options``) a signature listing the options of ``groups``."""
    signature = inspect.signature(function)
    own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    taken = {p.name for p in own}  # a parameter of its own (``detector``: also a built one) wins
    setattr(function, "__signature__", signature.replace(
        parameters=own + [p for p in api_parameters(cls, groups) if p.name not in taken]))
    return function


def options_table(cls: type = RestoreSettings) -> str:
    """The docs' table of options (Markdown): keyword, flag, form field, default, values, meaning."""
    rows = ["| Python keyword | CLI | HTTP form | default | values | what it does |", "| --- | --- | --- | --- | --- | --- |"]
    for f, spec in specs(cls):
        cli = f"`{spec.flag_name(f.name)}`" + (f", `{spec.short}`" if spec.short else "") if CLI in spec.fronts else ""
        form = f"`{spec.form_name or f.name}`" if HTTP in spec.fronts else ""
        default = "" if f.default is None else f"`{f.default}`"
        rows.append(f"| `{f.name}` | {cli} | {form} | {default} | {_values_text(cls, f.name, spec)} | "
                    f"{spec.help.replace('|', '/')} |")
    return "\n".join(rows) + "\n"


def _values_text(cls: type, name: str, spec: OptionSpec) -> str:
    """What an option takes, for the docs: its choices, its bounds, or its type."""
    if spec.choices is not None:
        return " \\| ".join(member.value for member in spec.choices)
    if spec.text:
        return "numbers, e.g. 0,2"
    if spec.minimum is not None or spec.maximum is not None:
        return _bounds(spec)
    kind = value_type(cls, name)
    return kind.__name__ if isinstance(kind, type) else ""
