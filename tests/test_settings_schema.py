"""One declaration per option: every front end is derived from RestoreSettings.

The proof the issue asks for: a field added to a copy of the schema shows up,
with its bounds and help, in the CLI (a Typer command), the HTTP form (a
FastAPI route and its OpenAPI schema), the Python API's keywords and the
docs' options table, and its validation runs in the library. Then the real
schema against the real front ends, and the structured errors through the
CLI and the server.
"""

from __future__ import annotations

import inspect
from dataclasses import make_dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import elir_cli
from elir_cli.cli.options import RestoreOptions, restore_options
from elir_cli.errors import UsageError
from elir_cli.pipeline.settings import API, CLI, HTTP, RestoreSettings, flag_of, option, options_table, specs, \
    with_options

ROOT = Path(__file__).resolve().parent.parent

Extended = make_dataclass(
    "Extended", [("sharpen", float, option(0.0, "Sharpen the restored faces by this much.", minimum=0.0,
                                           maximum=2.0, panel="Faces"))],
    bases=(RestoreSettings,), frozen=True)


def _command_app(settings_class: type) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @restore_options(settings_class)
    def show(options: RestoreOptions = RestoreOptions()) -> None:
        typer.echo(f"sharpen={getattr(options.settings, 'sharpen', None)} task={options.settings.task}")

    return app


def test_a_field_added_to_the_schema_reaches_every_front_end() -> None:
    # the library: validated like every option, the error names it
    assert Extended(sharpen=1.5).sharpen == 1.5
    with pytest.raises(UsageError, match="sharpen must be between 0 and 2, got 3") as caught:
        Extended(sharpen=3.0)
    assert (caught.value.option, caught.value.value) == ("sharpen", 3.0)

    # the CLI: a flag with its help and range, handed to the command validated
    runner = CliRunner()
    app = _command_app(Extended)
    help_text = runner.invoke(app, ["--help"], env={"COLUMNS": "200", "TERM": "dumb"}).output
    assert "--sharpen" in help_text and "Sharpen the restored faces" in help_text
    assert "sharpen=1.25 task=sr" in runner.invoke(app, ["--sharpen", "1.25", "--task", "sr"]).output
    refused = runner.invoke(app, ["--sharpen", "3"])
    assert refused.exit_code == 2 and "--sharpen" in refused.output

    # the Python API: a keyword in the signature
    def restore(image: Any, **options: Any) -> Any:
        return options

    assert "sharpen" in inspect.signature(with_options(restore, groups=("image",), cls=Extended)).parameters

    # the docs' table
    assert "| `sharpen` | `--sharpen` | `sharpen` | `0.0` | between 0 and 2 |" in options_table(Extended)


def test_a_field_added_to_the_schema_is_a_form_field_of_the_server() -> None:
    pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")
    pytest.importorskip("multipart", reason="the serve extra (python-multipart) is not installed")
    from fastapi import Depends, FastAPI
    from fastapi.testclient import TestClient

    from elir_cli.serve.config import ServeConfig
    from elir_cli.serve.dependencies import settings_form
    from elir_cli.serve.errors import ApiError
    from elir_cli.serve.service import Service

    app = FastAPI()
    app.state.service = Service(ServeConfig(task="denoising"))

    form_of_extended = settings_form(Extended)

    @app.post("/probe")
    def probe(settings=Depends(form_of_extended)):  # type: ignore[no-untyped-def]  # (no string annotations here)
        return {"sharpen": settings.sharpen, "task": settings.task}

    @app.exception_handler(ApiError)
    async def api_error(request: Any, exc: ApiError) -> Any:
        from fastapi.responses import JSONResponse

        return JSONResponse(exc.body(), status_code=exc.status)

    form = app.openapi()["components"]["schemas"]["Body_probe_probe_post"]["properties"]
    assert form["sharpen"]["maximum"] == 2.0 and form["sharpen"]["description"].startswith("Sharpen")
    client = TestClient(app)
    assert client.post("/probe", data={"sharpen": "0.5"}).json() == {"sharpen": 0.5, "task": "denoising"}
    assert client.post("/probe", data={"sharpen": "2.5"}).status_code == 422
    refused = client.post("/probe", data={"faces": "x"})  # a library rule: the field of the form
    assert refused.status_code == 422 and refused.json()["field"] == "faces"
    assert "--" not in refused.json()["error"]


def test_the_real_front_ends_follow_the_schema() -> None:
    """Each option of RestoreSettings is where its declaration says, with its bounds."""
    from elir_cli.cli.app import app

    runner = CliRunner()
    help_text = runner.invoke(app, ["restore", "--help"], env={"COLUMNS": "200", "TERM": "dumb"}).output
    for f, spec in specs():
        assert (spec.flag_name(f.name) in help_text) == (CLI in spec.fronts), f.name
    for name in ("restore_image", "restore_array", "Restorer"):
        keywords = inspect.signature(getattr(elir_cli, name)).parameters
        for f, spec in specs():
            if API in spec.fronts and spec.group != "output" or name == "Restorer" and API in spec.fronts:
                assert f.name in keywords, (name, f.name)
    pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")
    from elir_cli.serve.app import create_app
    from elir_cli.serve.config import ServeConfig

    form = create_app(ServeConfig()).openapi()["components"]["schemas"]["Body_restore_v1_restore_post"]["properties"]
    for f, spec in specs(front=HTTP):
        field = form[spec.form_name or f.name]
        bound = spec.http_maximum or spec.maximum
        assert bound is None or bound in [field.get("maximum")] + [a.get("maximum") for a in field.get("anyOf", [])]
    assert not {name for name in form if name != "image"} - {spec.form_name or f.name for f, spec in specs(front=HTTP)}


def test_the_docs_options_table_is_generated_from_the_schema() -> None:
    page = (ROOT / "docs" / "reference" / "options.md").read_text()
    assert options_table() in page, "docs/reference/options.md is out of date: run python tools/gen_options_table.py"


def test_cli_errors_name_flags_and_library_errors_name_keywords() -> None:
    with pytest.raises(UsageError) as caught:
        RestoreSettings(task="bsr", face_indices="0")
    error = caught.value
    assert error.message == "task bsr restores whole photos, without face detection, so face_indices would be ignored"
    assert error.render(flag_of)[0].endswith("so --faces would be ignored")
    assert (error.option, error.value) == ("face_indices", (0,))


def test_the_cli_renders_a_library_error_with_its_flag(tmp_path: Path) -> None:
    from tests.helpers.cli_helpers import assert_one_line_error, run_elir

    photo = ROOT / "tests" / "data" / "photos" / "faces" / "astronaut.png"
    done = run_elir("restore", str(photo), "-o", str(tmp_path / "out.png"), "--task", "bsr", "--faces", "0")
    assert done.returncode == 2
    line = assert_one_line_error(done)
    assert "task bsr restores whole photos, without face detection, so --faces would be ignored" in line
    assert not (tmp_path / "out.png").exists()
