"""``elir serve``: the HTTP API and the web page (the ``serve`` extra)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import options as opt
from .console import stderr_console

API_KEY_ENV = "ELIR_API_KEY"

SERVE_EPILOG = """\b
Examples:
  elir serve                                    # http://127.0.0.1:8000/ (page), /docs (API)
  elir serve --task bfr --preload --queue 4
  ELIR_API_KEY=secret elir serve --host 0.0.0.0 # reachable from other machines: use a key
  curl -F image=@photo.jpg http://127.0.0.1:8000/v1/restore -o restored.jpg
"""


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on; other than loopback, set an API key.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on.")] = 8000,
    task: opt.Task = opt.TaskName("bfr"),
    weights: opt.Weights = None,
    device: opt.DeviceOpt = opt.Device.auto,
    precision: opt.PrecisionOpt = opt.Precision.auto,
    api_key: Annotated[Optional[str], typer.Option("--api-key", envvar=API_KEY_ENV, show_envvar=True, help="Require this key on every /v1 request (Authorization: Bearer KEY or X-API-Key).")] = None,
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", min=0.001, help="Largest upload, in MiB (413 above).")] = 50,
    queue: Annotated[int, typer.Option("--queue", min=1, help="Requests that may wait for the model (429 when full).")] = 8,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker threads, each owning its own models (1 per device is best).")] = 1,
    timeout: Annotated[float, typer.Option("--timeout", min=0.001, help="Seconds a /v1/restore request may wait and run (503 after).")] = 300,
    job_ttl: Annotated[float, typer.Option("--job-ttl", min=0.001, help="Seconds a finished job's result is kept.")] = 3600,
    jobs_disk_mb: Annotated[float, typer.Option("--jobs-disk-mb", min=0.001, help="Disk the job results may use, in MiB (oldest dropped first).")] = 1024,
    max_pixels: Annotated[int, typer.Option("--max-pixels", min=1, help="Refuse inputs or outputs larger than this many pixels.")] = 50_000_000,
    jobs_dir: Annotated[Optional[Path], typer.Option("--jobs-dir", help="Folder for job results (default: a temporary folder, removed at exit).")] = None,
    preload: Annotated[bool, typer.Option("--preload", help="Load the model before listening (default: on first use).")] = False,
) -> None:
    """Serve the HTTP API (/v1, documented at /docs) and the web page (/)."""
    from elir_cli.errors import UsageError
    from elir_cli.serve import EXTRA_HINT, missing_dependency

    missing = missing_dependency()
    if missing is not None:
        raise UsageError(f"elir serve needs {missing}, which is not installed", hint=EXTRA_HINT)
    from elir_cli.serve.config import ServeConfig, exposure_warning
    from elir_cli.serve.server import serve as run

    config = ServeConfig(host=host, port=port, task=task.value, weights=weights, device=device.value,
                         precision=precision.value, api_key=api_key or None, max_upload_mb=max_upload_mb,
                         queue=queue, workers=workers, timeout=timeout, job_ttl=job_ttl, jobs_disk_mb=jobs_disk_mb,
                         max_pixels=max_pixels, jobs_dir=jobs_dir, preload=preload)
    console = stderr_console(quiet=False)
    if (warning := exposure_warning(config)) is not None:
        console.print(f"[yellow]Warning:[/] {warning}", force=True)
    if weights is not None and not os.path.exists(weights):
        raise UsageError(f"no such weights file: {weights}")
    from rich.markup import escape

    run(config, log=lambda message: console.print(f"[dim]{escape(message)}[/]"),
        started=lambda url: console.print(f"Serving on {url} (API docs: {url}docs); Ctrl-C stops"))
