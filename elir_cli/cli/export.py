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
  elir export --format safetensors --task sr --weights elir_sr.pth -o elir_sr.safetensors
                                                    # the task recorded: spandrel and ComfyUI load it
"""


def export(
    task: opt.Task = opt.TaskName("bfr"),
    output: Annotated[str, typer.Option("--output", "-o", help="The file to write: .onnx (its model card goes beside it, .json) or .safetensors.")] = "",
    weights: opt.Weights = None,
    fmt: Annotated[str, typer.Option("--format", help="onnx: the whole restorer as a graph; safetensors: the weights with their task recorded (for spandrel and ComfyUI).")] = "onnx",
    steps: opt.Steps = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output and model card.")] = False,
    quiet: opt.Quiet = False,
) -> None:
    """Export a task's whole restorer (K steps unrolled, noise as an input) as a static ONNX graph,
    checked against onnxruntime (needs: pip install "elir-cli[onnx]"), or its weights as a
    .safetensors that records the task."""
    from elir_cli.errors import UsageError
    from elir_cli.export.onnx import export_task

    if not output:
        raise UsageError("no output file given", hint="add -o model.onnx (or -o model.safetensors)")
    console = stderr_console(quiet=quiet)
    if fmt == "safetensors":
        from elir_cli.export.weights import export_safetensors

        if steps is not None:
            raise UsageError("--steps belongs to the ONNX graph; a weights file keeps the task's K",
                             hint="drop --steps")
        path = export_safetensors(task.value, output, weights=weights, overwrite=overwrite)
        console.print(f"[dim]task {task.value} recorded in the file: spandrel and ComfyUI recognise it[/]")
        typer.echo(str(path))
        return
    result = export_task(task.value, output, weights=weights, fmt=fmt, steps=steps, overwrite=overwrite,
                         log=lambda message: console.print(f"[dim]{message}[/]"))
    card = result.card
    console.print(f"[dim]{card['bytes'] / 1e6:.1f} MB, max |onnxruntime - PyTorch| "
                  f"{card['parity']['max_abs_diff']:.1e}; model card {result.card_path}[/]")
    typer.echo(str(result.path))
