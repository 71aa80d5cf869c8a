"""The root ``elir`` Typer app and its single error boundary.

Every :class:`~elir_cli.errors.ElirError` becomes an ``Error: ...`` line (and a
``Hint: ...`` line) on stderr with the error's exit code; ``--debug`` shows the
traceback instead. Nothing here imports torch.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from elir_cli._version import __version__
from elir_cli.errors import ElirError
from elir_cli.model.runtime import request_huge_pages
from . import comfyui, models
from .typer_app import ElirTyper

app = ElirTyper(
    name="elir",
    help="Restore photos with ELIR: faces, super-resolution, denoising, inpainting.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # plain help: typer's rich help costs ~0.2 s of imports at every --help
)

DEBUG_ENV = "ELIR_DEBUG"

app.add_typer(models.app, name="models")
app.add_typer(comfyui.app, name="comfyui")


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"elir-cli {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    # bool, not Optional[bool]: typer coerces a None default through pydantic (~85 ms of start-up)
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Show the version and exit."),
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    """Restore photos with ELIR (Cohen et al., BMVC 2025).

    Examples:

      elir restore photo.jpg --task bfr

      elir models list
    """
    if debug:
        os.environ[DEBUG_ENV] = "1"


def _register_commands() -> None:
    from .evaluate import DEGRADE_EPILOG, EVAL_EPILOG, degrade, evaluate
    from .doctor import DOCTOR_EPILOG, doctor
    from .export import EXPORT_EPILOG, export
    from .restore import BATCH_EPILOG, RESTORE_EPILOG, batch, restore
    from .serve import SERVE_EPILOG, serve
    from .tune import TUNE_EPILOG, tune

    app.command(epilog=RESTORE_EPILOG)(restore)
    app.command(epilog=BATCH_EPILOG)(batch)
    app.command(epilog=DEGRADE_EPILOG)(degrade)
    app.command(name="eval", epilog=EVAL_EPILOG)(evaluate)
    app.command(epilog=SERVE_EPILOG)(serve)
    app.command(epilog=EXPORT_EPILOG)(export)
    app.command(epilog=DOCTOR_EPILOG)(doctor)
    app.command(epilog=TUNE_EPILOG)(tune)


_register_commands()


def report_error(exc: ElirError) -> int:
    from rich.console import Console
    from rich.markup import escape

    from elir_cli.pipeline.settings import flag_of

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    message, hint = exc.render(flag_of)  # options named as flags: --det-threshold
    console.print(f"[bold red]Error:[/] {escape(message)}")
    if hint:
        console.print(f"[yellow]Hint:[/] {escape(hint)}")
    return exc.exit_code


def main() -> None:
    """Console-script entry point: run the app behind the error boundary."""
    request_huge_pages()  # before any command imports torch (see runtime.request_huge_pages)
    debug = "--debug" in sys.argv[1:] or os.environ.get(DEBUG_ENV) == "1"
    try:
        # With standalone_mode=False click returns (not raises) the code of typer.Exit(code).
        code = app(standalone_mode=False)
    except ElirError as exc:
        if debug:
            raise
        sys.exit(report_error(exc))
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted.\n")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # click usage errors and the like
        if _is_click_error(exc, "ClickException"):
            getattr(exc, "show")()
            sys.exit(getattr(exc, "exit_code"))
        if _is_click_error(exc, "Abort"):
            sys.stderr.write("Aborted.\n")
            sys.exit(130)
        raise
    sys.exit(code if isinstance(code, int) else 0)


def _is_click_error(exc: BaseException, name: str) -> bool:
    """True if ``exc`` is click's ``name`` exception, from click or from typer's vendored copy.

    Recent typer releases ship their own copy of click (``typer._click``), whose exception
    classes are not those of the ``click`` package.
    """
    return any(cls.__name__ == name and cls.__module__.endswith("_click.exceptions")
               or cls.__name__ == name and cls.__module__ == "click.exceptions"
               for cls in type(exc).__mro__)
