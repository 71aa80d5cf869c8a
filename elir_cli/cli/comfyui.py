"""``elir comfyui``: put ELIR's node pack into a ComfyUI folder (thin over the integration's installer)."""

from __future__ import annotations

from typing import Annotated

import typer

from .typer_app import ElirTyper

app = ElirTyper(
    name="comfyui",
    help="ComfyUI nodes: ELIR Load Model, Restore Faces, Restore Image, Inpaint Face. "
         "Install them with: elir comfyui install /path/to/ComfyUI",
    no_args_is_help=True,
    rich_markup_mode=None,
)

INSTALL_EPILOG = """\b
Examples:
  elir comfyui install ~/ComfyUI                 # writes custom_nodes/elir-cli and models/elir
  ~/ComfyUI/venv/bin/python -m pip install elir-cli   # elir-cli in the Python that runs ComfyUI
"""


@app.command(epilog=INSTALL_EPILOG)
def install(
    comfyui: Annotated[str, typer.Argument(help="The ComfyUI folder (it holds main.py and custom_nodes).",
                                           metavar="COMFYUI_FOLDER")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a custom_nodes/elir-cli that "
                                            "elir comfyui install did not write.")] = False,
) -> None:
    """Write custom_nodes/elir-cli (the nodes, imported from this elir-cli; its example workflows)
    and models/elir (for weights files) into a ComfyUI folder; then restart ComfyUI."""
    from elir_cli.integrations.comfyui.install import install as install_pack

    from .console import stderr_console

    done = install_pack(comfyui, overwrite=overwrite)
    console = stderr_console(quiet=False)
    if done.models is not None:
        console.print(f"Weights files (.safetensors, .pth, .ckpt) go in {done.models}; ELIR Load Model lists them.")
    if done.same_python:
        console.print("elir-cli is installed in ComfyUI's Python: restart ComfyUI to load the nodes.")
    elif done.python is not None:
        console.print(f"ComfyUI imports elir-cli from its own Python; if it is not there yet, run:\n"
                      f"  {done.python} -m pip install elir-cli\nthen restart ComfyUI.")
    else:
        console.print("ComfyUI imports elir-cli from its own Python; if it is not there yet, install it with "
                      "that Python (python -m pip install elir-cli), then restart ComfyUI.")
    typer.echo(str(done.pack))
