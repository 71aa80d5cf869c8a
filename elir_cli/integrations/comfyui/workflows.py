"""The example workflows, built from the node classes so their widgets never drift from the nodes.

Each workflow is described once (:data:`EXAMPLES`) and written in ComfyUI's
two formats: the UI's (schema version 0.4: ``nodes`` with ``widgets_values``
in widget order, ``links`` as 6-element lists), which a user drags into the
window or opens from the templates menu, and the API's (``{id: {class_type,
inputs}}``), which ``POST /prompt`` takes. ``python -m
elir_cli.integrations.comfyui.workflows`` rewrites the files in
``workflows/``; a test checks they are current.

The core nodes used (Load Image, Save Image, Load Upscale Model, Upscale
Image (using Model)) are described by their inputs and outputs as ComfyUI
0.3.64 declares them; that is all a workflow file records of them.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WORKFLOW_VERSION = 0.4
FOLDER = Path(__file__).with_name("workflows")
# Core nodes: (inputs as (name, type) where linked, widget names, outputs as (name, type)).
CORE = {
    "LoadImage": ([], ["image", "upload"], [("IMAGE", "IMAGE"), ("MASK", "MASK")]),
    "SaveImage": ([("images", "IMAGE")], ["filename_prefix"], []),
    "UpscaleModelLoader": ([], ["model_name"], [("UPSCALE_MODEL", "UPSCALE_MODEL")]),
    "ImageUpscaleWithModel": ([("upscale_model", "UPSCALE_MODEL"), ("image", "IMAGE")], [], [("IMAGE", "IMAGE")]),
}
SEED_CONTROL = "fixed"  # the value of the widget ComfyUI adds after a seed (control_after_generate)


@dataclass
class Node:
    id: int
    type: str
    widgets: dict[str, Any] = field(default_factory=dict)  # by input name
    links: dict[str, tuple[int, int]] = field(default_factory=dict)  # input -> (node id, output index)


@dataclass(frozen=True)
class Example:
    name: str
    title: str
    nodes: tuple[Node, ...]


def _signature(kind: str) -> tuple[list[tuple[str, str]], list[str], list[tuple[str, str]], dict[str, Any]]:
    """(linked inputs, widget names in order, outputs, widget options) of a node type."""
    if kind in CORE:
        inputs, widgets, outputs = CORE[kind]
        return inputs, widgets, outputs, {}
    cls = NODE_CLASS_MAPPINGS[kind]
    declared = cls.INPUT_TYPES()["required"]
    linked, widgets, options = [], [], {}
    for name, spec in declared.items():
        kind_of = spec[0]
        if isinstance(kind_of, list) or kind_of in ("INT", "FLOAT", "BOOLEAN", "STRING"):
            widgets.append(name)
            options[name] = spec[1] if len(spec) > 1 else {}
        else:
            linked.append((name, kind_of))
    names = getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)
    return linked, widgets, list(zip(names, cls.RETURN_TYPES)), options


def widget_values(node: Node) -> list[Any]:
    """The node's ``widgets_values``: every widget in order (its default unless set), seed controls included."""
    _, widgets, _, options = _signature(node.type)
    values = []
    for name in widgets:
        if name in node.widgets:
            values.append(node.widgets[name])
        else:
            values.append(options[name]["default"])
        if options.get(name, {}).get("control_after_generate"):
            values.append(SEED_CONTROL)
    return values


def ui_format(example: Example) -> dict[str, Any]:
    """The workflow as the ComfyUI window saves it (schema version 0.4)."""
    links: list[list[Any]] = []
    by_id = {n.id: n for n in example.nodes}
    incoming: dict[tuple[int, str], int] = {}
    outgoing: dict[tuple[int, int], list[int]] = {}
    for node in example.nodes:
        inputs, _, _, _ = _signature(node.type)
        for slot, (name, kind) in enumerate(inputs):
            source, index = node.links[name]
            link_id = len(links) + 1
            links.append([link_id, source, index, node.id, slot, kind])
            incoming[(node.id, name)] = link_id
            outgoing.setdefault((source, index), []).append(link_id)
    nodes = []
    for order, node in enumerate(example.nodes):
        inputs, widgets, outputs, _ = _signature(node.type)
        entry: dict[str, Any] = {
            "id": node.id, "type": node.type, "pos": [40 + 360 * order, 120], "size": [320, 260],
            "flags": {}, "order": order, "mode": 0, "properties": {"Node name for S&R": node.type},
            "inputs": [{"name": name, "type": kind, "link": incoming[(node.id, name)]} for name, kind in inputs],
            "outputs": [{"name": name, "type": kind, "links": outgoing.get((node.id, i)), "slot_index": i}
                        for i, (name, kind) in enumerate(outputs)],
        }
        if node.type in NODE_DISPLAY_NAME_MAPPINGS:
            entry["title"] = NODE_DISPLAY_NAME_MAPPINGS[node.type]
        if widgets:
            entry["widgets_values"] = widget_values(node)
        nodes.append(entry)
    assert len(by_id) == len(example.nodes), "node ids must be unique"
    return {"last_node_id": max(by_id), "last_link_id": len(links), "nodes": nodes, "links": links,
            "groups": [], "config": {}, "extra": {"elir_cli": example.title}, "version": WORKFLOW_VERSION}


def api_format(example: Example) -> dict[str, Any]:
    """The workflow as ``POST /prompt`` takes it: widget values and links by input name."""
    prompt = {}
    for node in example.nodes:
        _, widgets, _, options = _signature(node.type)
        inputs: dict[str, Any] = {name: node.widgets.get(name, options.get(name, {}).get("default"))
                                  for name in widgets if name != "upload"}
        inputs.update({name: [str(src), index] for name, (src, index) in node.links.items()})
        prompt[str(node.id)] = {"class_type": node.type, "inputs": inputs,
                                "_meta": {"title": NODE_DISPLAY_NAME_MAPPINGS.get(node.type, node.type)}}
    return prompt


EXAMPLES = (
    Example("elir_restore_faces", "Restore the faces of a photo (bfr)", (
        Node(1, "LoadImage", {"image": "example.png", "upload": "image"}),
        Node(2, "ElirLoadModel", {"task": "bfr"}),
        Node(3, "ElirRestoreFaces", {"fidelity": 0.8}, {"elir_model": (2, 0), "image": (1, 0)}),
        Node(4, "SaveImage", {"filename_prefix": "elir_faces"}, {"images": (3, 0)}),
    )),
    Example("elir_upscale_photo", "Upscale a whole photo x4 (bsr, tiled)", (
        Node(1, "LoadImage", {"image": "example.png", "upload": "image"}),
        Node(2, "ElirLoadModel", {"task": "bsr"}),
        Node(3, "ElirRestoreImage", {}, {"elir_model": (2, 0), "image": (1, 0)}),
        Node(4, "SaveImage", {"filename_prefix": "elir_x4"}, {"images": (3, 0)}),
    )),
    Example("elir_inpaint_face", "Fill the masked part of a face (inpainting; paint the mask in Load Image)", (
        Node(1, "LoadImage", {"image": "example.png", "upload": "image"}),
        Node(2, "ElirLoadModel", {"task": "inpainting"}),
        Node(3, "ElirInpaintFace", {}, {"elir_model": (2, 0), "image": (1, 0), "mask": (1, 1)}),
        Node(4, "SaveImage", {"filename_prefix": "elir_inpainted"}, {"images": (3, 0)}),
    )),
    Example("elir_bsr_as_upscale_model", "ELIR bsr through ComfyUI's own upscale nodes (spandrel)", (
        Node(1, "LoadImage", {"image": "example.png", "upload": "image"}),
        Node(2, "UpscaleModelLoader", {"model_name": "elir_bsr.safetensors"}),
        Node(3, "ImageUpscaleWithModel", {}, {"upscale_model": (2, 0), "image": (1, 0)}),
        Node(4, "SaveImage", {"filename_prefix": "elir_x4"}, {"images": (3, 0)}),
    )),
)


def rendered() -> dict[str, str]:
    """File name -> text of every workflow file, UI and API formats."""
    files = {}
    for example in EXAMPLES:
        files[f"{example.name}.json"] = json.dumps(ui_format(example), indent=2) + "\n"
        files[f"{example.name}.api.json"] = json.dumps(api_format(example), indent=2) + "\n"
    return files


def main(argv: list[str]) -> int:
    for name, text in rendered().items():
        (FOLDER / name).write_text(text, encoding="utf-8")
        print(FOLDER / name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
