"""ELIR as a spandrel architecture, through the real spandrel package.

Weights are tiny and random, under a registry whose five tasks keep the real
distinctions: bfr has three middle blocks, bsr its own network, and sr,
denoising and inpainting share theirs (as the released files do). Inputs
are aligned crops of real photos, found by the real detector.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

spandrel = pytest.importorskip("spandrel", reason="the spandrel extra is not installed (pip install 'elir-cli[spandrel]')")

from elir_cli import Restorer
from elir_cli.errors import CheckpointError
from elir_cli.integrations import spandrel as elir_spandrel
from elir_cli.model.checkpoint import HEADER_KEY, header_tensor, read_checkpoint, save_safetensors
from elir_cli.model.config import ModelConfig
from elir_cli.model.elir import ElirModel
from elir_cli.registry import tasks
from tests.helpers.facephotos import load, shared_detector
from tests.helpers.goldens import CKPT_PREFIX_GROUPS, draw_weights, released_keys, write_ckpt
from tests.helpers.hubtools import real_manifest
from tests.helpers.spandrel_zoo import arch_state_dicts

# The tiny networks of each task: bfr keeps its extra middle blocks, bsr is the training-format
# golden's network (so that file is a bsr file here), the three 256 face tasks share one.
TINY_NETWORKS = {
    "bfr": {"hid_channels": 32, "n_mid_blocks": 3},
    "bsr": {"hid_channels": 32, "n_mid_blocks": 1},
    "sr": {"hid_channels": 64, "n_mid_blocks": 1},
    "denoising": {"hid_channels": 64, "n_mid_blocks": 1},
    "inpainting": {"hid_channels": 64, "n_mid_blocks": 1},
}
SHARED_256 = ["sr", "denoising", "inpainting"]
TASKS = list(TINY_NETWORKS)
TOL = 1e-5


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> "spandrel.ArchRegistry":
    """A copy of spandrel's main registry with ELIR installed, and the tiny task registry in use."""
    data = copy.deepcopy(real_manifest())
    for name, task in data["tasks"].items():
        task["model"].update(TINY_NETWORKS[name], rrdb_c_hid=16, n_rrdb=1)
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(data))
    monkeypatch.setenv(tasks.MANIFEST_ENV, str(path))
    reg = spandrel.MAIN_REGISTRY.copy()
    assert [a.architecture.id for a in elir_spandrel.install(reg)] == ["ELIR"]
    return reg


def tiny_state(task: str, seed: int = 0) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    config = tasks.get_task(task).model
    torch.manual_seed(seed)
    return config, ElirModel(config).state_dict()


def ours(tmp_path: Path, task: str) -> Path:
    """Our .safetensors of a tiny random model for ``task`` (the header records the task)."""
    config, state = tiny_state(task)
    return save_safetensors(tmp_path / f"elir_{task}.safetensors", state, config, task=task)


def authors_pth(tmp_path: Path, task: str) -> Path:
    """The authors' released format: one flat state dict, pickled by torch."""
    _, state = tiny_state(task)
    path = tmp_path / f"elir_{task}.pth"
    torch.save(state, path)
    return path


def aligned_crop(size: int, photo: str = "grace_hopper.jpg") -> np.ndarray:
    from elir_cli.faces.alignment import align_face, alignment_matrix

    rgb = load(photo)
    face = shared_detector().detect(rgb)[0]
    return align_face(rgb, alignment_matrix(face.landmarks, size), size)


def as_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]  # (1,3,H,W)


def as_array(t: torch.Tensor) -> np.ndarray:
    return t[0].permute(1, 2, 0).float().numpy()


# -- recognition -----------------------------------------------------------------------------

EXPECTED = {  # task -> descriptor class, purpose, scale, size requirements, tiling
    "bfr": ("ImageModelDescriptor", "FaceSR", 1, spandrel.SizeRequirements(minimum=512, square=True),
            spandrel.ModelTiling.DISCOURAGED),
    "sr": ("ImageModelDescriptor", "FaceSR", 8, spandrel.SizeRequirements(minimum=32, square=True),
           spandrel.ModelTiling.DISCOURAGED),
    "denoising": ("ImageModelDescriptor", "Restoration", 1, spandrel.SizeRequirements(minimum=256, square=True),
                  spandrel.ModelTiling.DISCOURAGED),
    "inpainting": ("MaskedImageModelDescriptor", "Inpainting", 1,
                   spandrel.SizeRequirements(minimum=256, square=True), spandrel.ModelTiling.DISCOURAGED),
    "bsr": ("ImageModelDescriptor", "SR", 4, spandrel.SizeRequirements(multiple_of=8),
            spandrel.ModelTiling.INTERNAL),
}


@pytest.mark.parametrize("task", TASKS)
def test_our_safetensors_load_as_their_task(task: str, registry, tmp_path: Path) -> None:
    path = ours(tmp_path, task)
    descriptor = spandrel.ModelLoader(registry=registry).load_from_file(path)
    kind, purpose, scale, requirements, tiling = EXPECTED[task]
    assert type(descriptor).__name__ == kind
    assert descriptor.architecture.id == "ELIR" and descriptor.purpose == purpose
    assert descriptor.scale == scale and descriptor.size_requirements == requirements
    assert descriptor.tiling == tiling
    assert (descriptor.input_channels, descriptor.output_channels) == (3, 3)
    assert descriptor.supports_bfloat16 and not descriptor.supports_half
    assert task in descriptor.tags
    model = descriptor.model
    assert model.task == task and model.config == tasks.get_task(task).model
    expected = read_checkpoint(path).state_dict
    assert model.state_dict().keys() == expected.keys()  # the header is not a weight
    assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.items())


@pytest.mark.parametrize("task", ["bfr", "bsr"])
def test_authors_pth_with_their_own_network_is_recognised(task: str, registry, tmp_path: Path) -> None:
    descriptor = spandrel.ModelLoader(registry=registry).load_from_file(authors_pth(tmp_path, task))
    assert descriptor.model.task == task and descriptor.scale == tasks.get_task(task).scale


@pytest.mark.parametrize("task", SHARED_256)
def test_authors_pth_of_the_shared_network_names_the_fix(task: str, registry, tmp_path: Path) -> None:
    """sr, denoising and inpainting files hold the same tensors: loading says so and how to convert."""
    pth = authors_pth(tmp_path, task)
    with pytest.raises(CheckpointError) as caught:
        spandrel.ModelLoader(registry=registry).load_from_file(pth)
    message = str(caught.value)
    assert "fit tasks sr, denoising, inpainting" in message and "\n" not in message
    assert "elir export --format safetensors --task sr" in message

    # The fix it names, through the real CLI: the converted file loads as the task given.
    from tests.helpers.cli_helpers import run_elir

    out = tmp_path / f"converted_{task}.safetensors"
    done = run_elir("export", "--format", "safetensors", "--task", task, "--weights", str(pth), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().strip() == str(out)
    descriptor = spandrel.ModelLoader(registry=registry).load_from_file(out)
    assert descriptor.model.task == task and descriptor.purpose == EXPECTED[task][1]
    assert pth.read_bytes() == (tmp_path / f"elir_{task}.pth").read_bytes()  # the input untouched
    if task == "sr":
        from tests.helpers.cli_helpers import assert_one_line_error

        wrong = run_elir("export", "--format", "safetensors", "--task", "sr", "--weights", str(pth), "-o",
                         str(tmp_path / "elir_sr.st"))
        assert "does not end in .safetensors" in assert_one_line_error(wrong)
        again = run_elir("export", "--format", "safetensors", "--task", "sr", "--weights", str(pth), "-o", str(out))
        assert "already exists" in assert_one_line_error(again)


def test_training_checkpoint_is_collapsed_as_our_reader_collapses_it(registry, tmp_path: Path) -> None:
    """The authors' training .ckpt (over-parametrised convs) loads; its network is bsr's here."""
    ckpt = write_ckpt("tiny_k5_overparam", tmp_path / "tiny_k5_overparam.ckpt")
    descriptor = spandrel.ModelLoader(registry=registry).load_from_file(ckpt)
    assert descriptor.model.task == "bsr" and descriptor.scale == 4
    expected = read_checkpoint(ckpt).state_dict
    got = descriptor.model.state_dict()
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in expected)


def released_state(task: str) -> dict[str, torch.Tensor]:
    """The released file's keys and shapes (recorded from the authors' files), as meta tensors."""
    rows, count, _ = released_keys(task)
    assert len(rows) == count
    return {name: torch.empty(shape, device="meta") for name, shape in rows}


def test_released_files_are_told_apart_by_shape_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The authors' five files' keys and shapes: bfr and bsr by shape, the rest only by our header."""
    monkeypatch.delenv(tasks.MANIFEST_ENV, raising=False)
    for name, task in tasks.load_manifest().tasks.items():
        state = released_state(name)
        assert elir_spandrel.detect(state)
        if name in SHARED_256:
            with pytest.raises(CheckpointError, match="fit tasks sr, denoising, inpainting"):
                elir_spandrel.task_of(state)
        else:
            assert elir_spandrel.task_of(state) == name
        assert elir_spandrel.task_of({**state, HEADER_KEY: header_tensor(task.model, name)}) == name


def test_detection_is_by_content_not_by_name(registry, tmp_path: Path) -> None:
    misnamed = tmp_path / "RealESRGAN_x4plus.pth"  # an ELIR file under another model's name
    misnamed.write_bytes(authors_pth(tmp_path, "bfr").read_bytes())
    assert spandrel.ModelLoader(registry=registry).load_from_file(misnamed).architecture.id == "ELIR"
    _, state = tiny_state("bfr")
    del state["dec.layers.18.bias"]  # one tensor short: not an ELIR network
    assert not elir_spandrel.detect(state)
    _, state = tiny_state("bfr")
    state["fmir.extra.weight"] = torch.zeros(1)  # one tensor too many
    assert not elir_spandrel.detect(state)
    _, state = tiny_state("bfr")
    state["fmir.final_proj.weight"] = torch.zeros(16, 31, 1, 1)  # a wrong shape
    assert not elir_spandrel.detect(state)
    assert not elir_spandrel.detect({"enc.layers.0.weight": "not a tensor"})
    assert not elir_spandrel.detect({})


# -- no false claims, both ways ------------------------------------------------------------------

def elir_state_dicts() -> list[tuple[str, dict]]:
    """Every form of ELIR weights spandrel can be handed: each released network, ours, training."""
    found = []
    for name, task in tasks.load_manifest().tasks.items():
        state = released_state(name)
        found.append((f"{name} released", state))
        found.append((f"{name} ours", {**state, HEADER_KEY: header_tensor(task.model, name)}))
    training = {group: {k: v for k, v in draw_weights("tiny_k5_overparam").items() if k.startswith(prefix)}
                for prefix, group in CKPT_PREFIX_GROUPS.items()}
    training = {g: {k.split(".", 1)[1]: v for k, v in sub.items()} for g, sub in training.items()}
    found.append(("training ckpt", spandrel.canonicalize_state_dict(training)))
    return found


def test_no_spandrel_architecture_takes_elir_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(tasks.MANIFEST_ENV, raising=False)
    claims = []
    for label, state in elir_state_dicts():
        for support in spandrel.MAIN_REGISTRY.architectures("detection"):
            if support.architecture.id != "ELIR" and support.detect(state):
                claims.append(f"{support.architecture.id} claims {label}")
    assert not claims, claims


def test_elir_takes_no_spandrel_architecture() -> None:
    zoo = arch_state_dicts()
    ids = {support.architecture.id for support in spandrel.MAIN_REGISTRY.architectures()} - {"ELIR"}
    assert {arch for arch, _ in zoo} >= ids  # every architecture spandrel ships is tried
    assert not [arch for arch, state in zoo if elir_spandrel.detect(state)]


def test_elir_files_load_through_the_whole_main_registry_order(registry, tmp_path: Path) -> None:
    """Installed at the end of spandrel's detection order, ELIR is still what loads ELIR files."""
    assert registry.architectures("detection")[-1].architecture.id == "ELIR"
    for task in TASKS:
        assert spandrel.ModelLoader(registry=registry).load_from_file(ours(tmp_path, task)).architecture.id == "ELIR"


def test_install_is_idempotent_and_leaves_other_registries_alone() -> None:
    reg = spandrel.ArchRegistry()
    assert len(elir_spandrel.install(reg)) == 1
    assert elir_spandrel.install(reg) == []  # a second install adds nothing
    assert "ELIR" in reg and len(reg) == 1
    with pytest.raises(spandrel.DuplicateArchitectureError):
        elir_spandrel.install(reg, ignore_duplicates=False)


# -- the call equals our Restorer -----------------------------------------------------------

def restorer_for(path: Path, task: str, **options) -> Restorer:
    return Restorer(task=task, weights=str(path), device="cpu", precision="fp32", **options)


@pytest.mark.parametrize("task", ["bfr", "denoising"])
def test_face_call_equals_restorer_on_an_aligned_crop(task: str, registry, tmp_path: Path) -> None:
    path = ours(tmp_path, task)
    descriptor = spandrel.ModelLoader(registry=registry).load_from_file(path)
    crop = aligned_crop(tasks.get_task(task).input_size)
    got = as_array(descriptor(as_tensor(crop)))
    want = restorer_for(path, task, aligned=True, seed=0).restore(crop).array
    assert got.shape == want.shape == crop.shape
    assert np.abs(got - want).max() <= TOL
    # Fixed seed: a function; another seed, fidelity or step count gives what the Restorer gives for it.
    assert np.array_equal(as_array(descriptor(as_tensor(crop))), got)
    elir_spandrel.configure(descriptor, seed=7, fidelity=0.5, steps=2)
    other = as_array(descriptor(as_tensor(crop)))
    want = restorer_for(path, task, aligned=True, seed=7, fidelity=0.5, steps=2).restore(crop).array
    assert np.abs(other - want).max() <= TOL and np.abs(other - got).max() > 1e-3


def test_sr_call_upscales_a_tiny_face_x8_as_the_restorer_does(registry, tmp_path: Path) -> None:
    path = ours(tmp_path, "sr")
    descriptor = spandrel.ModelLoader(registry=registry).load_from_file(path)
    import cv2

    tiny = cv2.resize(aligned_crop(256), (32, 32), interpolation=cv2.INTER_AREA)
    got = as_array(descriptor(as_tensor(tiny)))
    want = restorer_for(path, "sr", whole_image=True, seed=0).restore(tiny).array
    assert got.shape == want.shape == (256, 256, 3)
    assert np.abs(got - want).max() <= TOL


def test_bsr_call_upscales_a_photo_x4_as_the_restorer_does(registry, tmp_path: Path) -> None:
    path = ours(tmp_path, "bsr")
    descriptor = spandrel.ModelLoader(registry=registry).load_from_file(path)
    photo = load("camera.png")[:72, :96]  # 72x96: multiples of 8, as the descriptor asks
    got = as_array(descriptor(as_tensor(photo)))
    want = restorer_for(path, "bsr", seed=0).restore(photo).array
    assert got.shape == want.shape == (288, 384, 3)
    assert np.abs(got - want).max() <= TOL


def test_inpainting_call_takes_the_mask_as_the_restorer_does(registry, tmp_path: Path) -> None:
    path = ours(tmp_path, "inpainting")
    descriptor = spandrel.ModelLoader(registry=registry).load_from_file(path)
    crop = aligned_crop(256)
    mask = np.zeros((256, 256), dtype=bool)
    mask[100:160, 60:200] = True  # a band over the eyes and nose
    got = as_array(descriptor(as_tensor(crop), torch.from_numpy(mask.astype(np.float32))[None, None]))
    want = restorer_for(path, "inpainting", aligned=True, seed=0).restore(crop, mask=mask).array
    assert np.abs(got - want).max() <= TOL
    unmasked = as_array(descriptor(as_tensor(crop), torch.zeros(1, 1, 256, 256)))
    assert np.abs(unmasked - got).max() > 1e-3  # the mask reaches the network


def test_bf16_call_keeps_the_input_dtype(registry, tmp_path: Path) -> None:
    descriptor = spandrel.ModelLoader(registry=registry).load_from_file(ours(tmp_path, "denoising"))
    crop = aligned_crop(256)
    full = descriptor(as_tensor(crop))
    descriptor.bfloat16()
    half = descriptor(as_tensor(crop).bfloat16())
    assert half.dtype == torch.bfloat16 and half.shape == full.shape
    assert (half.float() - full).abs().mean() < 0.02


def test_configure_checks_values_as_the_cli_does(registry, tmp_path: Path) -> None:
    descriptor = spandrel.ModelLoader(registry=registry).load_from_file(ours(tmp_path, "bfr"))
    with pytest.raises(Exception, match="fidelity"):
        elir_spandrel.configure(descriptor, fidelity=1.5)
    with pytest.raises(Exception, match="steps"):
        elir_spandrel.configure(descriptor, steps=0)
    assert (descriptor.model.fidelity, descriptor.model.steps, descriptor.model.seed) == (1.0, None, 0)
