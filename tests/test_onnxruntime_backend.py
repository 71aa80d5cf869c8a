"""The onnxruntime backend: ELIR's networks on ONNX Runtime, the sampler ours, against PyTorch fp32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="the onnx extra (pip install 'elir-cli[onnx]')")

from elir_cli import Restorer  # noqa: E402
from elir_cli.errors import UsageError  # noqa: E402
from elir_cli.model.onnxruntime_backend import PROVIDERS, choose_provider, stages_of  # noqa: E402
from tests.helpers.cli_helpers import assert_one_line_error, run_elir, tiny_weights  # noqa: E402
from tests.helpers.facephotos import load  # noqa: E402

TOL = 1e-4  # the bar: ONNX Runtime's CPU provider within 1e-4 of our fp32 model


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_weights(tmp_path_factory.mktemp("ort"), "denoising")


@pytest.mark.parametrize("options", [{}, {"fidelity": 0.5, "steps": 2}, {"fidelity": 0.0}])
def test_cpu_provider_matches_pytorch_fp32_at_any_fidelity_and_steps(weights: Path, options: dict) -> None:
    photo = load("grace_hopper.jpg")[100:228, 150:278]  # 128 x 128 around the face
    common = dict(task="denoising", weights=str(weights), seed=1, aligned=True, **options)
    reference = Restorer(device="cpu", precision="fp32", **common).restore(photo).array
    ort = Restorer(device="cpu", backend="onnxruntime", **common)
    got = ort.restore(photo).array
    assert np.abs(got - reference).max() <= TOL
    assert ort.device_description() == "onnxruntime CPUExecutionProvider (fp32)"
    other_seed = Restorer(device="cpu", backend="onnxruntime", **{**common, "seed": 2}).restore(photo).array
    assert np.abs(other_seed - got).max() > 1e-3  # the noise is an input, not baked in


def test_graphs_are_exported_once_per_weights_file(weights: Path) -> None:
    first = Restorer(task="denoising", weights=str(weights), device="cpu", backend="onnxruntime", aligned=True)
    first.prepare()
    second = Restorer(task="denoising", weights=str(weights), device="cpu", backend="onnxruntime", aligned=True)
    second.prepare()
    assert {s.loaded_from for s in stages_of(first.model)} <= {"exported", "cache"}
    assert {s.loaded_from for s in stages_of(second.model)} == {"cache"}


def test_auto_picks_an_installed_provider_and_a_missing_one_names_its_package() -> None:
    import onnxruntime

    installed = set(onnxruntime.get_available_providers())
    assert choose_provider("auto") in installed
    if PROVIDERS["cuda"][0] not in installed:
        with pytest.raises(UsageError, match="CUDAExecutionProvider is not installed") as caught:
            choose_provider("cuda")
        assert "pip install onnxruntime-gpu" in caught.value.hint


def test_cli_errors_are_one_line(weights: Path, tmp_path: Path) -> None:
    photo = Path(__file__).parent / "data" / "photos" / "faces" / "grace_hopper.jpg"
    done = run_elir("restore", str(photo), "--task", "denoising", "--weights", str(weights), "--backend",
                    "onnxruntime", "--precision", "bf16", "-o", str(tmp_path / "out.png"))
    assert "the onnxruntime backend runs fp32, not bf16" in assert_one_line_error(done)
    import onnxruntime

    if PROVIDERS["cuda"][0] not in onnxruntime.get_available_providers():
        done = run_elir("restore", str(photo), "--task", "denoising", "--weights", str(weights), "--backend",
                        "onnxruntime", "--device", "cuda", "-o", str(tmp_path / "out.png"))
        line = assert_one_line_error(done)
        assert "CUDAExecutionProvider is not installed" in line and "onnxruntime-gpu" in done.stderr.decode()
    assert not (tmp_path / "out.png").exists()
