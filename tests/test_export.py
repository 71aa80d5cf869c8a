"""``elir export --format onnx``: a static graph that onnxruntime runs like our model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.cli_helpers import assert_one_line_error, run_elir, tiny_weights
from elir_cli.registry.loading import load_float32_model
from elir_cli.registry.store import sha256_file

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is in the test extra: pip install -e '.[test]'")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    folder = tmp_path_factory.mktemp("export")
    weights = tiny_weights(folder, "denoising")  # K = 3, 256 px
    out = folder / "tiny.onnx"
    result = run_elir("export", "--task", "denoising", "--weights", str(weights), "--format", "onnx", "-o", str(out))
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().strip() == str(out)
    return weights, out, folder / "tiny.json"


def test_the_graph_restores_like_the_model_with_the_same_noise(exported: tuple[Path, Path, Path]) -> None:
    weights, out, card_path = exported
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in session.get_inputs()] == [("image", [1, 3, 256, 256]),
                                                                  ("noise", [1, 16, 32, 32])]
    gen = torch.Generator().manual_seed(42)  # not the export's own check input
    x = torch.rand(1, 3, 256, 256, generator=gen)
    noise = torch.randn(1, 16, 32, 32, generator=gen)
    got = session.run(["restored"], {"image": x.numpy(), "noise": noise.numpy()})[0]
    expected = load_float32_model(weights).restore(x, noise=noise).numpy()  # the K=3 Euler loop in PyTorch
    assert np.abs(got - expected).max() <= 1e-4
    card = json.loads(card_path.read_text())
    assert card["task"] == "denoising" and card["k_steps"] == 3 and card["sigma_s"] == 0.1 and card["opset"] == 17
    assert card["inputs"]["noise"]["shape"] == [1, 16, 32, 32]
    assert card["weights_sha256"] == sha256_file(weights)
    assert card["parity"]["max_abs_diff"] <= 1e-4 and card["bytes"] == out.stat().st_size


@pytest.mark.slow
def test_an_existing_output_is_refused_unless_overwrite(exported: tuple[Path, Path, Path]) -> None:
    weights, out, card_path = exported
    before = out.read_bytes()
    refused = run_elir("export", "--task", "denoising", "--weights", str(weights), "-o", str(out))
    assert "already exists" in assert_one_line_error(refused)
    assert out.read_bytes() == before
    done = run_elir("export", "--task", "denoising", "--weights", str(weights), "-o", str(out), "--steps", "1",
                    "--overwrite")
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(card_path.read_text())["k_steps"] == 1 and out.read_bytes() != before
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "a temporary file was left behind"


def test_without_onnxruntime_the_error_says_what_to_install(tmp_path: Path) -> None:
    blocker = tmp_path / "site"
    (blocker / "onnxruntime").mkdir(parents=True)
    (blocker / "onnxruntime" / "__init__.py").write_text("raise ImportError('blocked for the test', name='onnxruntime')\n")
    import os

    env = {"PYTHONPATH": os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")])}
    result = run_elir("export", "--task", "bfr", "-o", str(tmp_path / "m.onnx"), env=env)
    assert assert_one_line_error(result) == "Error: ONNX export needs onnx and onnxruntime (onnxruntime is not installed)"
    assert 'Hint: pip install "elir-cli[onnx]"' in result.stderr.decode()
    assert not (tmp_path / "m.onnx").exists()
