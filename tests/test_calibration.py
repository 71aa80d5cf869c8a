"""--precision auto: the reduced precision is used only where a calibration shows it safe.

Each test uses weights of its own (a seed no other test uses), so the shared
calibration records of the session (conftest) never answer for it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import elir_cli
from tests.helpers.cli_helpers import assert_one_line_error, run_elir
from elir_cli.model.checkpoint import save_safetensors
from elir_cli.model import int8
from elir_cli.model.runtime import cpu_supports_bf16
from elir_cli.pipeline import calibration
from elir_cli.pipeline.calibration import int8_verdict
from elir_cli.registry.store import CalibrationRecord, calibrations_for, read_calibration, sha256_file
from tests.helpers.tiny import TINY, bf16_fragile_model, tiny_model

needs_bf16 = pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU has no native bf16: auto is fp32 here")


def weights(folder: Path, model: torch.nn.Module, name: str) -> Path:
    return save_safetensors(folder / f"{name}.safetensors", model.state_dict(), TINY, task="denoising")


@needs_bf16
def test_a_model_that_stays_close_in_bf16_runs_in_bf16_and_is_calibrated_once(tmp_path: Path) -> None:
    path = weights(tmp_path, tiny_model(seed=101), "good")
    messages: list[str] = []
    model = elir_cli.load_model(path, device="cpu", log=messages.append)  # precision="auto" by default
    assert model.precision == "bf16"
    assert next(model.parameters()).dtype == torch.bfloat16  # weights cast once
    assert model.is_channels_last and not any(p.requires_grad for p in model.parameters())
    assert any(m.startswith("Calibrating bf16 on cpu") for m in messages), messages
    record = read_calibration(sha256_file(path), "bf16", "cpu")
    assert record is not None and record.passed and record.psnr_db >= calibration.THRESHOLD_DB
    assert record.images == len(calibration.calibration_faces()) + 1 and record.task == "denoising"

    messages.clear()
    again = elir_cli.load_model(path, device="cpu", log=messages.append)
    assert again.precision == "bf16" and messages == []  # the record answers: no second calibration
    exact = elir_cli.load_model(path, device="cpu", precision="fp32", log=messages.append)
    assert exact.precision == "fp32" and next(exact.parameters()).dtype == torch.float32 and messages == []


@needs_bf16
def test_a_model_that_loses_precision_in_bf16_falls_back_to_fp32_with_a_note(tmp_path: Path) -> None:
    path = weights(tmp_path, bf16_fragile_model(seed=102), "fragile")
    messages: list[str] = []
    model = elir_cli.load_model(path, device="cpu", log=messages.append)
    assert model.precision == "fp32" and next(model.parameters()).dtype == torch.float32
    notes = [m for m in messages if m.startswith("Note: float32")]
    assert len(notes) == 1 and "below 45 dB" in notes[0], messages
    record = read_calibration(sha256_file(path), "bf16", "cpu")
    assert record is not None and not record.passed and record.psnr_db < calibration.THRESHOLD_DB
    # the recorded failure is reused, with its note, and without calibrating again
    messages.clear()
    assert elir_cli.load_model(path, device="cpu", log=messages.append).precision == "fp32"
    assert [m for m in messages if m.startswith("Calibrating")] == [] and len(messages) == 1


@needs_bf16
def test_a_calibration_that_cannot_run_falls_back_to_fp32_and_records_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(calibration, "FACES_DIR", tmp_path / "installed-without-the-faces")
    path = weights(tmp_path, tiny_model(seed=103), "nofaces")
    messages: list[str] = []
    model = elir_cli.load_model(path, device="cpu", log=messages.append)
    assert model.precision == "fp32"
    assert messages == [f"Note: float32: the bf16 calibration could not run (no calibration faces in "
                        f"{tmp_path / 'installed-without-the-faces'})"]
    assert calibrations_for(sha256_file(path)) == []  # nothing recorded: the next run tries again


def test_the_calibration_set_is_fixed_and_prepared_per_task() -> None:
    faces = calibration.calibration_faces()
    assert len(faces) == 3 and all(f.shape == (512, 512, 3) for f in faces)
    sr = calibration.calibration_set("sr")
    assert sr.shape == (4, 256, 256, 3) and sr.dtype == "float32"
    assert (sr[0][::8, ::8] == sr[0][7::8, 7::8]).all()  # the x8 down/up input of the sr model
    assert (calibration.calibration_set("inpainting")[0][120:150] == 0).all()  # the masked band
    assert (calibration.calibration_set("denoising") == calibration.calibration_set("denoising")).all()


def test_an_unsupported_precision_names_what_the_device_supports(tmp_path: Path) -> None:
    path = weights(tmp_path, tiny_model(seed=105), "any")
    photo = Path(__file__).parent / "data" / "photos" / "faces" / "camera.png"
    result = run_elir("restore", str(photo), "-o", str(tmp_path / "out.png"), "--weights", str(path),
                      "--task", "denoising", "--device", "cpu", "--precision", "fp16")
    line = assert_one_line_error(result)
    supported = "fp32, bf16" if cpu_supports_bf16() else "fp32"
    assert line == f"Error: fp16 is not supported on this CPU, which supports: {supported}"
    assert not (tmp_path / "out.png").exists()
    with pytest.raises(elir_cli.UsageError, match=f"which supports: {supported}$"):
        elir_cli.load_model(tmp_path / "never-read.safetensors", device="cpu", precision="fp16")


@needs_bf16
@pytest.mark.slow
def test_models_info_shows_the_calibration_and_verify_precision_reruns_it(
        tmp_path: Path, tiny_manifest: Path) -> None:
    src = weights(tmp_path, tiny_model(seed=104), "imported")
    assert run_elir("models", "import", str(src), "--task", "denoising").returncode == 0
    info = run_elir("models", "info", "denoising")
    assert b"none yet" in next(l for l in info.stdout.splitlines() if l.startswith(b"calibration")), info.stdout

    done = run_elir("models", "verify", "--precision", "--device", "cpu")
    assert done.returncode == 0, done.stderr.decode()
    lines = [l for l in done.stdout.decode().splitlines() if l.startswith("calibration")]
    assert lines[0].split("\t")[1:4] == ["denoising", "bf16", "cpu"] and lines[0].endswith("pass"), lines
    assert b"Calibrating bf16 on cpu" in done.stderr
    # with OpenVINO and NNCF (the test extra), int8 is quantized and timed too
    with_int8 = int8.available()
    assert len(lines) == 1 + with_int8, lines
    if with_int8:
        assert lines[1].split("\t")[1:4] == ["denoising", "int8", "cpu-openvino"], lines
        assert lines[1].endswith("x fp32"), lines[1]

    shown = json.loads(run_elir("models", "info", "denoising", "--json").stdout)["calibration"]
    assert [(c["precision"], c["device_kind"]) for c in shown] == \
        [("bf16", "cpu")] + [("int8", "cpu-openvino")] * with_int8
    assert shown[0]["passed"]
    text = run_elir("models", "info", "denoising").stdout
    assert b"bf16 on cpu:" in text
    if with_int8:  # the verdict and its reason, from the measured record
        record = CalibrationRecord.from_dict(shown[1])
        uses, why = int8_verdict(record, "bf16")
        assert f"int8 on cpu-openvino: {why} -> auto {'uses int8' if uses else 'does not use it'}".encode() in text
