"""``elir export``: a task's restorer as a static ONNX graph, with a model card."""

from __future__ import annotations

from typing import Annotated

import typer

from . import options as opt
from .console import stderr_console

EXPORT_EPILOG = """\b
Examples:
  elir export --task bfr -o elir_bfr.onnx          # graph + elir_bfr.json model card
  elir export --task sr --weights my_sr.safetensors -o sr.onnx --steps 3
"""


def export(
    task: opt.Task = opt.TaskName("bfr"),
    output: Annotated[str, typer.Option("--output", "-o", help="The .onnx file to write (its model card goes beside it, .json).")] = "",
    weights: opt.Weights = None,
    fmt: Annotated[str, typer.Option("--format", help="Export format (onnx).")] = "onnx",
    steps: opt.Steps = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output and model card.")] = False,
    quiet: opt.Quiet = False,
) -> None:
    """Export a task's whole restorer (K steps unrolled, noise as an input) as a static ONNX graph,
    checked against onnxruntime. Needs: pip install "elir-cli[onnx]"."""
    from elir_cli.errors import UsageError
    from elir_cli.export.onnx import export_task

    if not output:
        raise UsageError("no output file given", hint="add -o model.onnx")
    console = stderr_console(quiet=quiet)
    result = export_task(task.value, output, weights=weights, fmt=fmt, steps=steps, overwrite=overwrite,
                         log=lambda message: console.print(f"[dim]{message}[/]"))
    card = result.card
    console.print(f"[dim]{card['bytes'] / 1e6:.1f} MB, max |onnxruntime - PyTorch| "
                  f"{card['parity']['max_abs_diff']:.1e}; model card {result.card_path}[/]")
    typer.echo(str(result.path))
