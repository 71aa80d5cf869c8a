"""--backend openvino: parity with PyTorch, the per-weights cache, the CLI, the install hint.

Converting a network (tracing it from PyTorch) is the slow part (seconds per
network), so the tests share one cache of converted models for the tiny
weights (``ov_cache``): the first test converts, the others compile from the
IR or import the compiled blobs, as a user's second run does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import elir_cli
from tests.helpers.cli_helpers import assert_one_line_error, run_elir, tiny_weights

pytestmark = pytest.mark.openvino
openvino = pytest.importorskip("openvino", reason='the openvino extra is not installed (pip install "elir-cli[openvino]")')

from elir_cli.model.openvino_backend import INSTALL_HINT, stages_of  # noqa: E402
from elir_cli.model.stages import STAGES  # noqa: E402
from elir_cli.model.runtime import cpu_supports_bf16  # noqa: E402
from elir_cli.registry.store import openvino_cache_dir, sha256_file  # noqa: E402

PHOTO = Path(__file__).parent / "data" / "photos"


@pytest.fixture(scope="module")
def ov_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_weights(tmp_path_factory.mktemp("ov-weights"), "denoising", seed=7)


@pytest.fixture(scope="module")
def ov_cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ov-cache")


@pytest.fixture
def ov_cache(ov_cache_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """ELIR_CACHE shared by this module's tests (the conftest gives each test its own)."""
    monkeypatch.setenv("ELIR_CACHE", str(ov_cache_root))
    return ov_cache_root


def inputs(size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    return torch.rand(1, 3, size, size, generator=gen), torch.randn(1, 16, size // 8, size // 8, generator=gen)


def test_openvino_fp32_matches_torch_fp32_and_the_second_load_reuses_the_compiled_cache(
        ov_weights: Path, ov_cache: Path) -> None:
    x, noise = inputs()
    torch_fp32 = elir_cli.load_model(ov_weights, device="cpu", precision="fp32")
    first = elir_cli.load_model(ov_weights, device="cpu", precision="fp32", backend="openvino")
    assert first.backend == "openvino" and first.precision == "fp32"
    got = first.restore(x, noise=noise)
    want = torch_fp32.restore(x, noise=noise)
    diff = (got - want).abs().max().item()
    assert diff <= 1e-5, diff  # measured ~5e-8: OpenVINO f32 is PyTorch's arithmetic up to rounding order
    assert all(stage.loaded_from["ir"] == "converted" for stage in stages_of(first))

    folder = next(openvino_cache_dir(sha256_file(ov_weights)).glob("ov-*"))
    blobs = sorted(p.name for p in folder.glob("*.fp32.*.blob"))
    assert [b.split(".")[0] for b in blobs] == sorted(STAGES) and all(
        (folder / f"{s}.xml").is_file() and (folder / f"{s}.bin").is_file() for s in STAGES)
    stamps = {p: p.stat().st_mtime_ns for p in folder.iterdir()}

    second = elir_cli.load_model(ov_weights, device="cpu", precision="fp32", backend="openvino")
    again = second.restore(x, noise=noise)
    assert torch.equal(again, got)
    # every network came from its compiled blob: nothing traced, nothing compiled, nothing rewritten
    assert [stage.loaded_from for stage in stages_of(second)] == [
        {key: "blob"} for key in (loaded for stage in stages_of(first) for loaded in stage.loaded_from if loaded != "ir")]
    assert {p: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps


def test_another_input_shape_compiles_from_the_cached_ir_without_converting(ov_weights: Path, ov_cache: Path) -> None:
    x, noise = inputs()  # the networks converted and cached (already, when the test above ran)
    elir_cli.load_model(ov_weights, device="cpu", precision="fp32", backend="openvino").restore(x, noise=noise)
    model = elir_cli.load_model(ov_weights, device="cpu", precision="fp32", backend="openvino")
    x, noise = inputs(96)
    reference = elir_cli.load_model(ov_weights, device="cpu", precision="fp32")
    assert (model.restore(x, noise=noise) - reference.restore(x, noise=noise)).abs().max().item() <= 1e-5
    # the converted networks came from the cache's IR; only the new shape was compiled
    assert all("ir" not in stage.loaded_from and "compiled" in stage.loaded_from.values()
               for stage in stages_of(model))


@pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU has no native bf16: the openvino bf16 path is not used")
def test_auto_on_openvino_is_calibrated_against_torch_fp32_and_recorded_apart(ov_weights: Path,
                                                                              ov_cache: Path) -> None:
    messages: list[str] = []
    model = elir_cli.load_model(ov_weights, device="cpu", backend="openvino", log=messages.append)
    assert any(m.startswith("Calibrating bf16 (openvino) on cpu") for m in messages), messages
    assert model.precision == "bf16" and model.backend == "openvino"
    records = sorted((ov_cache / "records" / "calibration").glob(f"{sha256_file(ov_weights)}.bf16.cpu-openvino.json"))
    assert len(records) == 1 and json.loads(records[0].read_text())["passed"]
    x, noise = inputs()
    diff = (model.restore(x, noise=noise) - elir_cli.load_model(ov_weights, device="cpu", precision="fp32")
            .restore(x, noise=noise)).abs().max().item()
    assert 0 < diff < 0.05, diff  # bf16: close to fp32, not equal


def test_cli_restore_with_backend_openvino(ov_weights: Path, ov_cache: Path, tmp_path: Path) -> None:
    from PIL import Image

    src = tmp_path / "crop.png"  # an aligned crop at the task's size: no detector to load
    with Image.open(PHOTO / "faces" / "astronaut.png") as photo:
        photo.convert("RGB").resize((256, 256)).save(src)
    args = ("restore", str(src), "--weights", str(ov_weights), "--task", "denoising", "--seed", "0",
            "--device", "cpu", "--precision", "fp32", "--aligned", "--json")
    env = {"ELIR_CACHE": str(ov_cache)}
    ov_out, torch_out = tmp_path / "ov.png", tmp_path / "torch.png"
    result = run_elir(*args, "-o", str(ov_out), "--backend", "openvino", env=env)
    assert result.returncode == 0, result.stderr.decode()
    assert "openvino" in json.loads(result.stdout)["settings"]["device"] and ov_out.is_file()
    assert run_elir(*args, "-o", str(torch_out), env=env).returncode == 0
    a = np.asarray(Image.open(ov_out), dtype=np.int16)
    b = np.asarray(Image.open(torch_out), dtype=np.int16)
    assert a.shape == b.shape and np.abs(a - b).max() <= 1  # the same image up to 8-bit rounding


def test_cli_refuses_openvino_with_compile_or_on_a_gpu(ov_weights: Path, tmp_path: Path) -> None:
    src = PHOTO / "faces" / "astronaut.png"
    base = ("restore", str(src), "-o", str(tmp_path / "out.png"), "--weights", str(ov_weights), "--task", "denoising",
            "--backend", "openvino")
    assert "--compile is for the torch backend" in assert_one_line_error(run_elir(*base, "--device", "cpu", "--compile"))
    assert "runs on the CPU, not cuda" in assert_one_line_error(run_elir(*base, "--device", "cuda"))
    assert not (tmp_path / "out.png").exists()


def test_missing_openvino_is_a_one_line_error_with_the_install_hint(ov_weights: Path, tmp_path: Path) -> None:
    src = PHOTO / "faces" / "astronaut.png"
    code = ("import sys; sys.modules['openvino'] = None\n"  # import openvino now raises ImportError
            "from elir_cli.cli import main\n"
            f"sys.argv = ['elir', 'restore', {str(src)!r}, '-o', {str(tmp_path / 'out.png')!r}, '--weights', "
            f"{str(ov_weights)!r}, '--task', 'denoising', '--device', 'cpu', '--backend', 'openvino']\n"
            "main()\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120,
                            env={**os.environ, "COLUMNS": "200"})
    assert "needs OpenVINO, which is not installed" in assert_one_line_error(result)
    assert f"Hint: {INSTALL_HINT}" in result.stderr.decode()
    assert not (tmp_path / "out.png").exists()
