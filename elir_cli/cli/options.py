"""Options shared by ``elir restore`` and ``elir batch``, derived from the settings schema.

The restoration options are declared once, as the fields of
:class:`~elir_cli.pipeline.settings.RestoreSettings`; :func:`restore_options`
turns those shown on the command line into Typer options (flag, type,
default, bounds, help, panel) and hands the command the validated settings.
The options here are the command line's own: output on the terminal and
the distributed engine. Nothing here imports torch: the choices come from
the task manifest.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from enum import Enum
from typing import Annotated, Any, Callable, Optional

import typer

from elir_cli.pipeline.settings import CLI, MODEL_PANEL, OptionSpec, RestoreSettings, front_type, spec_of, specs
from elir_cli.registry.choices import Device, Precision, TaskName

__all__ = ["Device", "Precision", "TaskName"]  # the choices other commands' options default to


class Engine(str, Enum):
    local = "local"
    ray = "ray"


MODEL = MODEL_PANEL
OUTPUT = "Output"
DISTRIBUTED = "Distributed (--engine ray)"

JsonOut = Annotated[bool, typer.Option("--json", help="Print results as JSON on stdout.", rich_help_panel=OUTPUT)]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors.", rich_help_panel=OUTPUT)]
Debug = Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.", hidden=True)]
EngineOpt = Annotated[Engine, typer.Option("--engine", help="local: this process; ray: a pool of model workers on Ray Data (pip install \"elir-cli[ray]\").", rich_help_panel=DISTRIBUTED)]
RayAddress = Annotated[Optional[str], typer.Option("--ray-address", help="Ray cluster to run on: auto, HOST:PORT or ray://HOST:PORT (default: start a local Ray instance).", rich_help_panel=DISTRIBUTED)]
NumModelWorkers = Annotated[Optional[int], typer.Option("--num-model-workers", min=1, help="Model workers (one loaded model each; default: as many as the CPUs or GPUs allow).", rich_help_panel=DISTRIBUTED)]
CpusPerWorker = Annotated[float, typer.Option("--cpus-per-worker", min=0.01, help="CPUs each model worker reserves (and its torch threads).", rich_help_panel=DISTRIBUTED)]
GpusPerWorker = Annotated[float, typer.Option("--gpus-per-worker", min=0.0, help="GPUs each model worker reserves (fractions share a GPU).", rich_help_panel=DISTRIBUTED)]


@dataclass(frozen=True)
class RestoreOptions:
    """What ``restore`` and ``batch`` share: the validated settings and how to show results."""

    settings: RestoreSettings = field(default_factory=RestoreSettings)
    as_json: bool = False
    quiet: bool = False
    debug: bool = False


# The command line's own options, after a command's own ones, in ``--help`` order.
SHOWING: list[tuple[str, Any, Any]] = [("as_json", JsonOut, False), ("quiet", Quiet, False), ("debug", Debug, False)]


def typer_annotation(cls: type, name: str, spec: OptionSpec) -> Any:
    """The ``Annotated`` type of one settings field as a Typer option."""
    kind = front_type(cls, name, spec)
    bounds = {key: value for key, value in (("min", spec.minimum), ("max", spec.maximum)) if value is not None}
    declarations = [spec.flag_name(name)] + ([spec.short] if spec.short else [])
    return Annotated[kind, typer.Option(*declarations, help=spec.help, rich_help_panel=spec.panel, **bounds)]


def typer_default(value: Any, spec: OptionSpec) -> Any:
    return spec.choices(value) if spec.choices is not None and value is not None else value


def shared_parameters(cls: type = RestoreSettings, **defaults: Any) -> list[inspect.Parameter]:
    """The Typer parameters of every settings field shown on the command line (``defaults`` changed)."""
    unknown = set(defaults) - {f.name for f, _ in specs(cls, CLI)}
    if unknown:
        raise ValueError(f"restore_options: unknown defaults {sorted(unknown)}")
    return [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=typer_annotation(cls, f.name, spec),
                              default=typer_default(defaults.get(f.name, f.default), spec))
            for f, spec in specs(cls, CLI)]


def settings_from(cls: type, values: dict[str, Any]) -> Any:
    """The command line's values as validated settings (enums as their values)."""
    return cls(**{name: value.value if isinstance(value, Enum) else value for name, value in values.items()})


def restore_options(settings_class: type = RestoreSettings, **defaults: Any
                    ) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command the settings' options and the output options (with these ``defaults`` changed).

    The command declares ``options: RestoreOptions`` after its arguments; its
    parameters after that one are its own options. Typer sees one flat
    signature; the command receives the validated settings and the output
    options as one ``options``.
    """
    shared = shared_parameters(settings_class, **defaults)
    showing = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
               for name, annotation, default in SHOWING]

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        params = list(inspect.signature(command, eval_str=True).parameters.values())
        at = next(i for i, p in enumerate(params) if p.name == "options")
        head = params[:at]
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params[at + 1:]]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> None:
            settings = settings_from(settings_class, {p.name: kwargs.pop(p.name) for p in shared})
            shown = {p.name: kwargs.pop(p.name) for p in showing}
            command(**kwargs, options=RestoreOptions(settings=settings, **shown))

        signature = inspect.Signature(head + shared + own + showing)
        setattr(wrapper, "__signature__", signature)
        wrapper.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
        return wrapper

    return decorate


def settings_option(name: str) -> Any:
    """The Typer option of settings field ``name``, for commands that take it alone (eval, serve, export)."""
    spec = spec_of(name)
    assert spec is not None, name
    return typer_annotation(RestoreSettings, name, spec)


Task = settings_option("task")
Weights = settings_option("weights")
Steps = settings_option("steps")
Fidelity = settings_option("fidelity")
DeviceOpt = settings_option("device")
PrecisionOpt = settings_option("precision")
Overwrite = settings_option("overwrite")
