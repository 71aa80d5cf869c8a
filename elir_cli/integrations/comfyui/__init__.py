"""ELIR's ComfyUI node pack: ELIR Load Model, Restore Faces, Restore Image, Inpaint Face.

ComfyUI loads a custom-node folder by importing its ``__init__.py`` and
reading ``NODE_CLASS_MAPPINGS`` and ``NODE_DISPLAY_NAME_MAPPINGS`` (the
classic, V1 contract of ComfyUI 0.3.64, unchanged in the 0.38 series).
``elir comfyui install COMFYUI_FOLDER`` writes a two-line folder,
``custom_nodes/elir-cli``, that imports these from the installed elir-cli
(:mod:`.install`) and calls :func:`register`; the nodes themselves live here
(:mod:`.nodes`), beside what they ask of ComfyUI (:mod:`.host`).

Importing this package loads no model and changes nothing in ComfyUI;
:func:`register` adds ComfyUI's ``models/elir`` folder and ELIR to spandrel's
registry (so ComfyUI's own Load Upscale Model node loads bsr files too).
"""

from __future__ import annotations

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS


def register() -> None:
    """What ComfyUI needs beyond the mappings: the ``models/elir`` folder, and ELIR in spandrel."""
    from . import host

    host.register_models_folder()
    try:
        from elir_cli.integrations.spandrel import install
    except ImportError:  # spandrel comes with ComfyUI; without it there is nothing to add to
        return
    install()


__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "register"]
