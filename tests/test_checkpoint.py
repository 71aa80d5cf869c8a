"""Loading, checking, converting and refusing weights files."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from tests.helpers import goldens
from elir_cli.registry.loading import load_float32_model  # the file as read, float32 (the public one also prepares it)
from elir_cli.model.checkpoint import read_checkpoint, save_safetensors
from elir_cli.registry.loading import convert_to_safetensors
from elir_cli.errors import CheckpointError, StateDictMismatchError, UnsafeCheckpointError, UsageError
from tests.helpers.tiny import TINY, tiny_model


@pytest.fixture(scope="module")
def tiny_pth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return goldens.write_pth("tiny_k3", tmp_path_factory.mktemp("pth") / "weights.pth")


def test_pth_to_safetensors_round_trip_is_lossless(tiny_pth: Path, tmp_path: Path) -> None:
    # "denoising" shares the released shapes of sr/inpainting; the tiny file takes K, sigma from it.
    original = load_float32_model(tiny_pth, task="denoising")
    out = convert_to_safetensors(tiny_pth, tmp_path / "converted.safetensors", task="denoising")
    converted = load_float32_model(out)  # the safetensors carries its own config and task
    assert converted.config == original.config
    assert converted.task == "denoising"
    for key, value in original.state_dict().items():
        assert torch.equal(value, converted.state_dict()[key]), key
    x = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    a = original.restore(x, generator=torch.Generator().manual_seed(7))
    b = converted.restore(x, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_loaded_model_holds_the_file_tensors_in_float32(tmp_path: Path) -> None:
    # load_float32_model builds on the meta device and assigns the file's tensors: none may stay
    # on meta, and a half-precision file is widened as load_state_dict's copy would.
    state = tiny_model(seed=3).state_dict()
    path = tmp_path / "half.pth"
    torch.save({k: v.half() for k, v in state.items()}, path)
    model = load_float32_model(path, task="denoising")
    loaded = dict(model.named_parameters())
    assert loaded.keys() == state.keys()
    for key, value in loaded.items():
        assert value.device.type == "cpu" and value.dtype == torch.float32, key
        assert torch.equal(value.detach(), state[key].half().float()), key
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(model.restore(x, generator=torch.Generator().manual_seed(0))).all()


def test_format_is_recognised_by_content_not_name(tiny_pth: Path, tmp_path: Path) -> None:
    renamed = tmp_path / "looks_like.safetensors"
    renamed.write_bytes(tiny_pth.read_bytes())
    assert read_checkpoint(renamed).format == "pth"
    ours = save_safetensors(tmp_path / "ours.pth", tiny_model().state_dict(), TINY, task="bfr")
    ckpt = read_checkpoint(ours)
    assert ckpt.format == "safetensors" and ckpt.config == TINY and ckpt.task == "bfr"


def test_authors_file_needs_a_task(tiny_pth: Path) -> None:
    with pytest.raises(UsageError, match="task"):
        load_float32_model(tiny_pth)


def test_safetensors_task_conflict_is_reported(tmp_path: Path) -> None:
    path = save_safetensors(tmp_path / "m.safetensors", tiny_model().state_dict(), TINY, task="bfr")
    with pytest.raises(UsageError, match="'bfr'"):
        load_float32_model(path, task="sr")


@pytest.mark.parametrize("damage", ["missing", "extra", "shape"])
def test_mismatched_file_names_the_tensors(damage: str, tmp_path: Path) -> None:
    state = tiny_model().state_dict()
    if damage == "missing":
        del state["fmir.final_proj.bias"]
        expect = "missing 1: fmir.final_proj.bias"
    elif damage == "extra":
        state["fmir.surprise.weight"] = torch.zeros(3)
        expect = "unexpected 1: fmir.surprise.weight"
    else:
        state["dec.layers.18.bias"] = torch.zeros(4)
        expect = "wrong shape 1: dec.layers.18.bias (4,) != (3,)"
    path = save_safetensors(tmp_path / "bad.safetensors", state, TINY)
    with pytest.raises(StateDictMismatchError) as info:
        load_float32_model(path)
    assert expect in str(info.value)
    assert "\n" not in str(info.value)


class Payload:
    """A pickle that would create a marker file if it were ever unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


def test_pickled_code_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "elir_bfr.pth"
    torch.save({"fmir.first_proj.weight": torch.zeros(1), "x": Payload(marker)}, evil)
    with pytest.raises(UnsafeCheckpointError, match="refused"):
        load_float32_model(evil, task="bfr")
    assert not marker.exists()
    # the legacy (non-zip) pickle format too
    legacy = tmp_path / "legacy.pth"
    with open(legacy, "wb") as fh:
        pickle.dump(Payload(marker), fh, protocol=2)
    with pytest.raises(CheckpointError):
        read_checkpoint(legacy)
    assert not marker.exists()


def test_non_tensor_values_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "odd.pth"
    torch.save({"fmir.first_proj.weight": torch.zeros(1), "note": "hello"}, path)
    with pytest.raises(CheckpointError, match="not tensors: note"):
        read_checkpoint(path)


@pytest.mark.parametrize("content", [b"", b"hello world, not weights", b"\x80\x02truncated"])
def test_garbage_files_fail_with_one_line(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "garbage.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert "\n" not in str(info.value)


def test_truncated_pth_fails_cleanly(tiny_pth: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.pth"
    cut.write_bytes(tiny_pth.read_bytes()[: 1_000_000])
    with pytest.raises(CheckpointError):
        read_checkpoint(cut)


def test_missing_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_float32_model(tmp_path / "nope.safetensors")


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    save_safetensors(tmp_path / "m.safetensors", tiny_model().state_dict(), TINY)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_the_same_weights_give_the_same_bytes(tmp_path: Path) -> None:
    """safetensors writes its metadata in hash-map order; ours sorts it, so the sha256 is stable."""
    import json

    state = tiny_model(0).state_dict()
    extra = {f"key{i}": str(i) for i in range(6)}
    files = [save_safetensors(tmp_path / f"w{i}.safetensors", state, TINY, task="denoising",
                              extra_metadata=extra).read_bytes() for i in range(4)]
    assert all(f == files[0] for f in files)
    length = int.from_bytes(files[0][:8], "little")
    header = json.loads(files[0][8:8 + length])
    assert list(header["__metadata__"]) == sorted(header["__metadata__"])
    assert read_checkpoint(tmp_path / "w0.safetensors").task == "denoising"  # still a valid file


def test_the_header_tensor_keeps_the_task_where_only_tensors_travel(tmp_path: Path) -> None:
    """A file re-saved by a tool that keeps only tensors (no metadata) still says its task and config."""
    from safetensors.torch import load_file, save_file

    from elir_cli.model.checkpoint import HEADER_KEY

    config = TINY
    path = save_safetensors(tmp_path / "m.safetensors", tiny_model().state_dict(), config, task="sr")
    tensors = load_file(str(path))
    assert tensors[HEADER_KEY].dtype == torch.uint8
    bare = tmp_path / "bare.safetensors"
    save_file(tensors, str(bare))  # no metadata at all
    ckpt = read_checkpoint(bare)
    assert ckpt.task == "sr" and ckpt.config == config and HEADER_KEY not in ckpt.state_dict
    pth = tmp_path / "saved.pth"
    torch.save(tensors, pth)  # a plain torch.save of the same state dict
    ckpt = read_checkpoint(pth)
    assert ckpt.task == "sr" and ckpt.config == config and HEADER_KEY not in ckpt.state_dict
    tensors[HEADER_KEY] = torch.tensor(list(b'{"format": "elir-cli"'), dtype=torch.uint8)  # cut short
    torch.save(tensors, pth)
    with pytest.raises(CheckpointError, match="damaged elir-cli header"):
        read_checkpoint(pth)


@pytest.mark.skipif(os.name != "posix", reason="file modes and the umask are POSIX")
def test_saved_weights_get_the_mode_of_any_new_file(tmp_path: Path) -> None:
    """Readable by whoever may read new files here (the umask), not 0600 like a temporary file."""
    umask = os.umask(0o022)
    try:
        path = save_safetensors(tmp_path / "m.safetensors", tiny_model().state_dict(), TINY, task="sr")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644
