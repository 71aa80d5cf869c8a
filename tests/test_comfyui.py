"""The ComfyUI node pack: installed by the real CLI, loaded the way ComfyUI loads custom nodes,
and run on real photos with tiny random models.

ComfyUI is not on PyPI, so the pack is imported as ComfyUI's ``load_custom_node``
imports a folder (0.3.64, nodes.py): a module named after the folder's path,
put into ``sys.modules`` before ``exec_module``, the folder not on
``sys.path``. The three ComfyUI modules the nodes call (progress, interrupt,
model folders) are stand-ins that record what they were asked
(tests/helpers/comfy_host.py); every node also runs without them.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from elir_cli import Restorer
from elir_cli.integrations.comfyui import workflows
from elir_cli.integrations.comfyui.nodes import NodeError
from tests.helpers.cli_helpers import assert_one_line_error, run_elir
from tests.helpers.comfy_host import Host, InterruptProcessingException
from tests.helpers.facephotos import load
from tests.helpers.hubtools import tiny_files

NODES = {"ElirLoadModel": "ELIR Load Model", "ElirRestoreFaces": "ELIR Restore Faces",
         "ElirRestoreImage": "ELIR Restore Image", "ElirInpaintFace": "ELIR Inpaint Face"}
WIDGET_TYPES = {"INT", "FLOAT", "BOOLEAN", "STRING"}


@pytest.fixture
def comfyui(tmp_path: Path) -> Path:
    """An empty ComfyUI folder, as a fresh checkout has it."""
    root = tmp_path / "ComfyUI"
    for folder in ("custom_nodes", "models/upscale_models"):
        (root / folder).mkdir(parents=True)
    (root / "main.py").write_text("# ComfyUI\n")
    return root


def load_custom_node(folder: Path) -> ModuleType:
    """Import a custom-node folder as ComfyUI 0.3.64's ``load_custom_node`` does."""
    name = str(folder).replace(".", "_x_")
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


@pytest.fixture
def pack(comfyui: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The pack, installed with the real CLI and loaded as ComfyUI loads it (spandrel's registry restored after)."""
    spandrel = pytest.importorskip("spandrel", reason="ComfyUI ships spandrel; the spandrel extra is not installed")
    # Loading the pack adds ELIR to spandrel's main registry, as it must inside ComfyUI (whose loader
    # uses ModelLoader()'s default, that very object); the registry is copy-on-write, so putting its
    # three lists back afterwards leaves it as it was for the other tests.
    for name in ("_architectures", "_ordered", "_by_id"):
        monkeypatch.setattr(spandrel.MAIN_REGISTRY, name, getattr(spandrel.MAIN_REGISTRY, name))
    done = run_elir("comfyui", "install", str(comfyui))
    assert done.returncode == 0, done.stderr
    folder = comfyui / "custom_nodes" / "elir-cli"
    assert done.stdout.decode().strip() == str(folder)
    assert str(folder) not in sys.path and str(folder.parent) not in sys.path
    module = load_custom_node(folder)
    yield module
    sys.modules.pop(str(folder).replace(".", "_x_"), None)


@pytest.fixture
def host(comfyui: Path, monkeypatch: pytest.MonkeyPatch) -> Host:
    return Host(comfyui).install(monkeypatch)


def weights_in(comfyui: Path, task: str) -> str:
    """A tiny random model of ``task`` in ComfyUI/models/elir; its name as the Load Model node lists it."""
    folder = comfyui / "models" / "elir"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"elir_{task}.safetensors").write_bytes(tiny_files(task)["safetensors"])
    return f"elir_{task}.safetensors"


def image_batch(*arrays: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack(arrays)).float()  # (B,H,W,3), as Load Image makes it


# -- installing ---------------------------------------------------------------------------------

def test_install_writes_the_pack_and_says_what_is_left(comfyui: Path) -> None:
    done = run_elir("comfyui", "install", str(comfyui))
    assert done.returncode == 0, done.stderr
    pack = comfyui / "custom_nodes" / "elir-cli"
    assert (pack / "__init__.py").is_file() and (comfyui / "models" / "elir").is_dir()
    templates = sorted(p.name for p in (pack / "example_workflows").iterdir())
    assert templates == sorted(f"{e.name}.json" for e in workflows.EXAMPLES)  # the UI format only
    stderr = done.stderr.decode()
    assert "pip install elir-cli" in stderr and "restart ComfyUI" in stderr
    again = run_elir("comfyui", "install", str(comfyui))  # idempotent: our own folder is replaced
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in comfyui.iterdir()) == ["custom_nodes", "main.py", "models"]


def test_install_refuses_what_it_did_not_write(comfyui: Path, tmp_path: Path) -> None:
    foreign = comfyui / "custom_nodes" / "elir-cli"
    foreign.mkdir()
    (foreign / "__init__.py").write_text("# someone else's pack\n")
    done = run_elir("comfyui", "install", str(comfyui))
    assert "was not written by elir comfyui install" in assert_one_line_error(done)
    assert (foreign / "__init__.py").read_text() == "# someone else's pack\n"
    assert run_elir("comfyui", "install", str(comfyui), "--overwrite").returncode == 0
    not_comfyui = tmp_path / "photos"
    not_comfyui.mkdir()
    assert "has no custom_nodes folder" in assert_one_line_error(run_elir("comfyui", "install", str(not_comfyui)))


def test_the_pack_explains_a_missing_elir_cli(comfyui: Path, tmp_path: Path) -> None:
    """ComfyUI's Python without elir-cli: the import fails with the fix (ComfyUI logs it, keeps running)."""
    import subprocess

    assert run_elir("comfyui", "install", str(comfyui)).returncode == 0
    script = ("import importlib.util, sys\n"
              "sys.modules['elir_cli'] = None\n"  # as if elir-cli were not installed
              f"spec = importlib.util.spec_from_file_location('pack', {str(comfyui / 'custom_nodes/elir-cli/__init__.py')!r})\n"
              "module = importlib.util.module_from_spec(spec)\n"
              "try:\n    spec.loader.exec_module(module)\n"
              "except ImportError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert "elir-cli is not installed in the Python that runs ComfyUI" in done.stdout
    assert "pip install elir-cli" in done.stdout


# -- the contract ------------------------------------------------------------------------------------

def test_pack_follows_the_custom_node_contract(pack: ModuleType) -> None:
    import spandrel

    assert pack.NODE_CLASS_MAPPINGS.keys() == NODES.keys()
    assert pack.NODE_DISPLAY_NAME_MAPPINGS == NODES
    assert "ELIR" in spandrel.MAIN_REGISTRY  # register(): ComfyUI's own upscale loader knows ELIR
    for name, cls in pack.NODE_CLASS_MAPPINGS.items():
        declared = cls.INPUT_TYPES()
        assert set(declared) <= {"required", "optional", "hidden"} and declared["required"]
        for input_name, spec in declared["required"].items():
            kind = spec[0]
            assert isinstance(kind, list) or isinstance(kind, str), (name, input_name)
            options = spec[1] if len(spec) > 1 else {}
            if isinstance(kind, list):
                assert options.get("default") in kind, (name, input_name)
            elif kind in WIDGET_TYPES:
                assert "default" in options and options.get("tooltip"), (name, input_name)
                if "min" in options:
                    assert options["min"] <= options["default"] <= options.get("max", float("inf"))
        assert isinstance(cls.RETURN_TYPES, tuple) and all(isinstance(t, str) for t in cls.RETURN_TYPES)
        assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES)
        assert callable(getattr(cls(), cls.FUNCTION)) and cls.CATEGORY == "ELIR" and cls.DESCRIPTION


def test_widgets_take_their_bounds_and_help_from_the_settings_schema(pack: ModuleType) -> None:
    from elir_cli.pipeline.settings import spec_of

    faces = pack.NODE_CLASS_MAPPINGS["ElirRestoreFaces"].INPUT_TYPES()["required"]
    fidelity = faces["fidelity"][1]
    assert faces["fidelity"][0] == "FLOAT" and (fidelity["min"], fidelity["max"]) == (0.0, 1.0)
    assert fidelity["tooltip"] == spec_of("fidelity").help
    assert faces["faces"][0] == "STRING" and spec_of("face_indices").help in faces["faces"][1]["tooltip"]
    assert faces["seed"][1]["control_after_generate"] is True


# -- running the nodes -----------------------------------------------------------------------------------

def test_restore_faces_on_a_batch_of_real_photos(host: Host, pack: ModuleType, comfyui: Path,
                                                 tiny_manifest: Path) -> None:
    nodes = pack.NODE_CLASS_MAPPINGS
    assert nodes["ElirLoadModel"].INPUT_TYPES()["required"]["weights"][0][1:] == []  # nothing there yet
    name = weights_in(comfyui, "bfr")
    assert name in nodes["ElirLoadModel"].INPUT_TYPES()["required"]["weights"][0]  # ComfyUI lists models/elir
    (model,) = nodes["ElirLoadModel"]().load(task="bfr", weights=name, device="auto", precision="fp32")
    photo = load("astronaut.png")
    batch = image_batch(photo, photo[:, ::-1].copy())
    restored, mask = nodes["ElirRestoreFaces"]().restore(
        elir_model=model, image=batch, fidelity=0.8, seed=3, steps=0, only_center_face=False, max_faces=0,
        faces="", min_face_size=0.0)
    assert restored.shape == batch.shape and restored.dtype == torch.float32
    assert mask.shape == batch.shape[:3] and 0.0 <= float(mask.min()) and float(mask.max()) == pytest.approx(1.0)
    assert host.progress == [(1, 2), (2, 2)]
    # the node is thin: the same as the library's Restorer with the same options
    direct = Restorer(task="bfr", weights=str(comfyui / "models" / "elir" / name), device="cpu",
                      precision="fp32", seed=3, fidelity=0.8).restore(photo)
    assert np.abs(restored[0].numpy() - direct.array).max() < 1e-6
    # the face changed where the mask says, the rest of the photo did not
    face = mask[0].numpy() > 0.99
    outside = mask[0].numpy() == 0.0
    diff = np.abs(restored[0].numpy() - photo).max(axis=2)
    assert diff[face].mean() > 0.02 and diff[outside].max() < 1e-6
    x0, y0, x1, y1 = direct.faces[0].box
    assert face[int((y0 + y1) / 2), int((x0 + x1) / 2)]


def test_interrupt_stops_between_images_and_is_not_swallowed(host: Host, pack: ModuleType, comfyui: Path,
                                                              tiny_manifest: Path) -> None:
    nodes = pack.NODE_CLASS_MAPPINGS
    (model,) = nodes["ElirLoadModel"]().load(task="bsr", weights=weights_in(comfyui, "bsr"), device="cpu",
                                            precision="fp32")
    host.interrupt = True
    with pytest.raises(InterruptProcessingException):
        nodes["ElirRestoreImage"]().restore(elir_model=model, image=image_batch(load("camera.png")[:40, :48]),
                                            fidelity=1.0, seed=0, steps=0, upscale=0)
    assert host.progress == []


def test_restore_image_upscales_x4_with_alpha_dropped(pack: ModuleType, tiny_manifest: Path, comfyui: Path) -> None:
    """No ComfyUI modules at all: weights given as a path, no progress bar; RGBA input."""
    nodes = pack.NODE_CLASS_MAPPINGS
    path = comfyui / "models" / "elir" / weights_in(comfyui, "bsr")
    (model,) = nodes["ElirLoadModel"]().load(task="bsr", weights=str(path), device="auto", precision="fp32")
    photo = load("camera.png")[:40, :48]
    rgba = torch.from_numpy(np.concatenate([photo, np.ones_like(photo[..., :1])], axis=2))[None]
    (out,) = nodes["ElirRestoreImage"]().restore(elir_model=model, image=rgba, fidelity=1.0, seed=1, steps=1,
                                                 upscale=0)
    assert out.shape == (1, 160, 192, 3)
    direct = Restorer(task="bsr", weights=str(path), device="cpu", precision="fp32", seed=1, steps=1).restore(photo)
    assert np.abs(out[0].numpy() - direct.array).max() < 1e-6


def test_inpaint_face_takes_comfyui_masks(host: Host, pack: ModuleType, comfyui: Path, tiny_manifest: Path) -> None:
    from elir_cli.faces.alignment import align_face, alignment_matrix
    from tests.helpers.facephotos import shared_detector

    nodes = pack.NODE_CLASS_MAPPINGS
    name = weights_in(comfyui, "inpainting")
    (model,) = nodes["ElirLoadModel"]().load(task="inpainting", weights=name, device="cpu", precision="fp32")
    rgb = load("grace_hopper.jpg")
    face = shared_detector().detect(rgb)[0]
    crop = align_face(rgb, alignment_matrix(face.landmarks, 256), 256)
    mask = torch.zeros(1, 256, 256)
    mask[0, 100:160, 60:200] = 1.0  # 1 = paint here, as the mask editor paints
    (out,) = nodes["ElirInpaintFace"]().inpaint(elir_model=model, image=image_batch(crop), mask=mask, fidelity=1.0,
                                                seed=0, steps=0, aligned=True)
    direct = Restorer(task="inpainting", weights=str(comfyui / "models" / "elir" / name), device="cpu",
                      precision="fp32", seed=0, aligned=True).restore(crop, mask=mask[0].numpy() > 0.5)
    assert np.abs(out[0].numpy() - direct.array).max() < 1e-6
    with pytest.raises(NodeError, match="the mask is 64x64 but the image is 256x256.*mask editor"):
        nodes["ElirInpaintFace"]().inpaint(elir_model=model, image=image_batch(crop), mask=torch.zeros(1, 64, 64),
                                           fidelity=1.0, seed=0, steps=0, aligned=True)


def test_wrong_models_and_values_are_one_line_errors(pack: ModuleType, comfyui: Path, tiny_manifest: Path) -> None:
    nodes = pack.NODE_CLASS_MAPPINGS
    (bsr,) = nodes["ElirLoadModel"]().load(task="bsr", weights=str(comfyui / "models/elir" / weights_in(comfyui, "bsr")),
                                          device="cpu", precision="fp32")
    photo = image_batch(load("astronaut.png")[:64, :64])
    with pytest.raises(NodeError, match="ELIR Restore Faces does not take a bsr model: use ELIR Restore Image"):
        nodes["ElirRestoreFaces"]().restore(elir_model=bsr, image=photo, fidelity=1.0, seed=0, steps=0,
                                            only_center_face=False, max_faces=0, faces="", min_face_size=0.0)
    with pytest.raises(NodeError, match="ELIR Inpaint Face does not take a bsr model"):
        nodes["ElirInpaintFace"]().inpaint(elir_model=bsr, image=photo, mask=torch.zeros(1, 64, 64), fidelity=1.0,
                                           seed=0, steps=0, aligned=False)
    (bfr,) = nodes["ElirLoadModel"]().load(task="bfr", weights=str(comfyui / "models/elir" / weights_in(comfyui, "bfr")),
                                          device="cpu", precision="fp32")
    with pytest.raises(NodeError) as caught:
        nodes["ElirRestoreFaces"]().restore(elir_model=bfr, image=photo, fidelity=1.0, seed=0, steps=0,
                                            only_center_face=False, max_faces=0, faces="first", min_face_size=0.0)
    assert "face_indices takes face numbers" in str(caught.value) and "for example 0,2" in str(caught.value)
    with pytest.raises(NodeError, match="missing.safetensors"):
        nodes["ElirLoadModel"]().load(task="bfr", weights="missing.safetensors", device="cpu", precision="fp32")


# -- the example workflows ----------------------------------------------------------------------------

def test_workflow_files_are_current() -> None:
    on_disk = {p.name: p.read_text() for p in workflows.FOLDER.glob("*.json")}
    assert on_disk == workflows.rendered(), "run: python -m elir_cli.integrations.comfyui.workflows"


@pytest.mark.parametrize("example", workflows.EXAMPLES, ids=lambda e: e.name)
def test_ui_workflow_is_wired_consistently(example: workflows.Example, pack: ModuleType) -> None:
    ui = json.loads((workflows.FOLDER / f"{example.name}.json").read_text())
    assert ui["version"] == 0.4 and ui["last_link_id"] == len(ui["links"])
    nodes = {n["id"]: n for n in ui["nodes"]}
    for link_id, src, src_slot, dst, dst_slot, kind in ui["links"]:
        assert nodes[src]["outputs"][src_slot]["type"] == kind and link_id in nodes[src]["outputs"][src_slot]["links"]
        assert nodes[dst]["inputs"][dst_slot] == {"name": nodes[dst]["inputs"][dst_slot]["name"], "type": kind,
                                                  "link": link_id}
    for node in ui["nodes"]:
        cls = pack.NODE_CLASS_MAPPINGS.get(node["type"])
        if cls is None:
            continue
        widgets = [(n, s) for n, s in cls.INPUT_TYPES()["required"].items()
                   if isinstance(s[0], list) or s[0] in WIDGET_TYPES]
        controls = sum(1 for _, s in widgets if len(s) > 1 and s[1].get("control_after_generate"))
        assert len(node["widgets_values"]) == len(widgets) + controls


def run_api_prompt(prompt: dict, pack: ModuleType, builtins: dict) -> dict:
    """Run an API-format prompt: our nodes for real, ComfyUI's core nodes from ``builtins``."""
    results: dict[str, tuple] = {}

    def value(node_id: str) -> tuple:
        if node_id not in results:
            node = prompt[node_id]
            inputs = {k: (value(v[0])[v[1]] if isinstance(v, list) else v) for k, v in node["inputs"].items()}
            cls = pack.NODE_CLASS_MAPPINGS.get(node["class_type"])
            if cls is not None:
                results[node_id] = getattr(cls(), cls.FUNCTION)(**inputs)
            else:
                results[node_id] = builtins[node["class_type"]](**inputs)
        return results[node_id]

    for node_id in prompt:
        value(node_id)
    return results


def test_api_workflows_run_on_a_real_photo(host: Host, pack: ModuleType, comfyui: Path, tiny_manifest: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Each example, run as ComfyUI runs the API format; core nodes do what ComfyUI's do (spandrel included)."""
    import spandrel

    photo = load("astronaut.png")[96:352, 128:384]  # 256 x 256 around the face
    mask = np.zeros((1, 256, 256), np.float32)
    mask[0, 100:140, 80:180] = 1.0
    saved: dict[str, torch.Tensor] = {}
    for task in ("bfr", "bsr", "inpainting"):
        weights_in(comfyui, task)
    (comfyui / "models" / "upscale_models" / "elir_bsr.safetensors").write_bytes(tiny_files("bsr")["safetensors"])

    def upscale_model_loader(model_name: str) -> tuple:  # ComfyUI's: load_torch_file, then spandrel
        from safetensors.torch import load_file

        state = load_file(host.folder_paths.get_full_path("upscale_models", model_name))
        descriptor = spandrel.ModelLoader().load_from_state_dict(state).eval()
        assert isinstance(descriptor, spandrel.ImageModelDescriptor), "Upscale model must be a single-image model."
        return (descriptor,)

    def image_upscale_with_model(upscale_model, image: torch.Tensor) -> tuple:  # untiled: the image is small
        return (upscale_model(image.movedim(-1, -3)).movedim(-3, -1).clamp(0, 1),)

    shown = {"image": photo}  # what Load Image gives the workflow being run
    builtins = {"LoadImage": lambda image: (torch.from_numpy(shown["image"])[None], torch.from_numpy(mask)),
                "SaveImage": lambda images, filename_prefix: saved.__setitem__(filename_prefix, images) or (),
                "UpscaleModelLoader": upscale_model_loader, "ImageUpscaleWithModel": image_upscale_with_model}
    for example in workflows.EXAMPLES:
        scale = 4 if "x4" in example.title or "bsr" in example.name else 1
        side = 256 // scale  # the x4 workflows get a 64 x 64 photo: the same 256 x 256 out, a sixteenth of the work
        shown["image"] = np.ascontiguousarray(photo[96:96 + side, 96:96 + side]) if scale > 1 else photo
        prompt = json.loads((workflows.FOLDER / f"{example.name}.api.json").read_text())
        for node in prompt.values():  # point the workflows at the test's weights and CPU
            if node["class_type"] == "ElirLoadModel":
                node["inputs"].update(weights=f"elir_{node['inputs']['task']}.safetensors", precision="fp32")
        if example.name == "elir_inpaint_face":
            next(n for n in prompt.values() if n["class_type"] == "ElirInpaintFace")["inputs"]["aligned"] = True
        saved.clear()
        run_api_prompt(prompt, pack, builtins)
        (out,) = saved.values()
        assert out.shape == (1, 256, 256, 3), example.name
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
