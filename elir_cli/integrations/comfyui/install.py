"""``elir comfyui install``: put the node pack into a ComfyUI folder.

ComfyUI imports each folder in ``custom_nodes`` as a package. We write one,
``custom_nodes/elir-cli``, whose ``__init__.py`` imports the nodes from the
elir-cli installed in ComfyUI's Python (so upgrading elir-cli upgrades the
nodes) and whose ``example_workflows/`` holds our workflows, which ComfyUI
offers as templates. ``models/elir`` is created for weights files. Nothing
outside those two folders is touched; a folder of the same name that we did
not write is never replaced.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from elir_cli.atomicwrite import write_bytes_atomic
from elir_cli.errors import OutputExistsError, UsageError

PACK_NAME = "elir-cli"
MARKER = "# Written by `elir comfyui install`"
WORKFLOWS = "workflows"  # package data: the example workflows, ComfyUI's UI format
SHIM = f'''"""elir-cli's ComfyUI nodes: ELIR Load Model, Restore Faces, Restore Image, Inpaint Face.

The nodes live in the elir-cli package; this folder only imports them.
"""
{MARKER}; run it again after moving ComfyUI. Remove this folder to remove the nodes.

try:
    from elir_cli.integrations.comfyui import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, register
except ImportError as exc:
    raise ImportError(
        "elir-cli is not installed in the Python that runs ComfyUI: install it with that Python "
        f"(python -m pip install elir-cli) and restart ComfyUI ({{exc}})") from exc

register()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
'''


@dataclass(frozen=True)
class Installed:
    """Where the pack went, and what the user must still do."""

    pack: Path
    models: Path | None
    python: Path | None  # ComfyUI's own Python, where one was found beside it
    same_python: bool  # whether elir-cli runs in that Python now (then nothing more to install)


def custom_nodes_of(comfyui: Path) -> Path:
    """The ``custom_nodes`` folder of a ComfyUI folder (or the folder itself, if that is it)."""
    if comfyui.name == "custom_nodes" and comfyui.is_dir():
        return comfyui
    if (comfyui / "custom_nodes").is_dir():
        return comfyui / "custom_nodes"
    if not comfyui.exists():
        raise UsageError(f"{comfyui} does not exist", hint="give the folder where ComfyUI is (it holds main.py "
                         "and custom_nodes)")
    raise UsageError(f"{comfyui} is not a ComfyUI folder: it has no custom_nodes folder",
                     hint="give the folder that holds ComfyUI's main.py and custom_nodes")


def comfyui_python(root: Path) -> Path | None:
    """ComfyUI's Python where it ships or keeps one beside it (portable build, venv), else None."""
    candidates = [root.parent / "python_embeded" / "python.exe",  # the Windows portable build's spelling
                  root / "venv" / "bin" / "python", root / ".venv" / "bin" / "python",
                  root / "venv" / "Scripts" / "python.exe", root / ".venv" / "Scripts" / "python.exe"]
    return next((c for c in candidates if c.exists()), None)


def install(comfyui: str | os.PathLike[str], *, overwrite: bool = False) -> Installed:
    """Write ``custom_nodes/elir-cli`` (and ``models/elir``) into the ComfyUI folder ``comfyui``."""
    nodes_dir = custom_nodes_of(Path(comfyui).expanduser().resolve())
    root = nodes_dir.parent
    pack = nodes_dir / PACK_NAME
    init = pack / "__init__.py"
    if pack.exists() and not (init.is_file() and MARKER in init.read_text(errors="replace")) and not overwrite:
        raise OutputExistsError(f"{pack} exists and was not written by elir comfyui install",
                                hint="move it away, or pass --overwrite to replace its __init__.py")
    write_bytes_atomic(init, SHIM.encode("utf-8"), overwrite=True)
    source = resources.files("elir_cli.integrations.comfyui").joinpath(WORKFLOWS)
    for workflow in sorted(source.iterdir(), key=lambda p: p.name):
        if workflow.name.endswith(".json") and not workflow.name.endswith(".api.json"):  # the UI's format
            write_bytes_atomic(pack / "example_workflows" / workflow.name, workflow.read_bytes(), overwrite=True)
    models = None
    if (root / "models").is_dir():
        models = root / "models" / "elir"
        models.mkdir(exist_ok=True)
    python = comfyui_python(root)
    same = python is not None and Path(sys.executable).resolve() == python.resolve()
    return Installed(pack=pack, models=models, python=python, same_python=same)
