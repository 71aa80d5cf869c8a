"""The library behind restore/batch: naming, collisions, validation, failure isolation."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from elir_cli.pipeline.batch import plan_batch, run_batch
from elir_cli.errors import UsageError
from elir_cli.pipeline.photo import RestoreResult
from elir_cli.pipeline.files import check_destinations, output_name_for
from elir_cli.pipeline.restorer import PhotoRestorer
from elir_cli.pipeline.settings import RestoreSettings

PHOTOS = Path(__file__).parent / "data" / "photos"


def test_batch_names_never_collide(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.jpg", "a.png", "a_jpg.png", "A.webp"):
        shutil.copy(PHOTOS / "faces" / "grace_hopper.jpg", src / name)
    names = [item.output.path.name for item in plan_batch(src, tmp_path / "out")]
    assert len(names) == 4
    assert len({n.lower() for n in names}) == 4, names


def test_batch_refuses_an_input_folder_inside_the_output_folder(tmp_path: Path) -> None:
    (tmp_path / "photos" / "2020").mkdir(parents=True)
    with pytest.raises(UsageError, match="inside the output folder"):
        plan_batch(tmp_path / "photos" / "2020", tmp_path / "photos")


def test_restore_refuses_colliding_destinations(tmp_path: Path) -> None:
    a, b = tmp_path / "d1" / "a.jpg", tmp_path / "d2" / "a.jpg"
    pairs = [(p, output_name_for(p, out=str(tmp_path / "o"), suffix="_restored", many=True)) for p in (a, b)]
    with pytest.raises(UsageError, match="both be written"):
        check_destinations(pairs)
    # an output that would land on another input (same stem, image suffix)
    c, d = tmp_path / "a.jpg", tmp_path / "a_restored.png"
    pairs = [(p, output_name_for(p, out=str(tmp_path), suffix="_restored", many=True)) for p in (c, d)]
    with pytest.raises(UsageError, match="could replace the input"):
        check_destinations(pairs)


def test_trailing_slash_means_a_folder(tmp_path: Path) -> None:
    name = output_name_for(Path("x/a.jpg"), out=str(tmp_path / "new") + "/", suffix="_r", many=False)
    assert name.path == tmp_path / "new" / "a_r" and not name.exact
    exact = output_name_for(Path("x/a.jpg"), out=str(tmp_path / "new.png"), suffix="_r", many=False)
    assert exact.exact and exact.path == tmp_path / "new.png"


@pytest.mark.parametrize("settings, option, flags", [
    ({"bg_task": "denoising"}, "bg_task", "--bg-task 'denoising' is not a background task"),
    ({"task": "bsr", "bg_task": "bsr"}, "bg_task", "--bg-task only applies to face tasks"),
    ({"task": "bsr", "aligned": True}, "aligned", "--aligned is for face tasks"),
    ({"aligned": True, "face_indices": (1,)}, "aligned",
     "--aligned skips face detection, so --faces would be ignored"),
    ({"aligned": True, "max_faces": 2, "det_threshold": 0.5}, "aligned",
     "--max-faces, --det-threshold would be ignored"),
    ({"task": "bsr", "face_indices": (0,)}, "face_indices",
     "task bsr restores whole photos, without face detection, so --faces"),
    ({"det_threshold": 0.0}, "det_threshold", "--det-threshold must be between 0 and 1 (exclusive), got 0.0"),
    ({"fidelity": 1.5}, "fidelity", "--fidelity must be between 0 and 1, got 1.5"),
    ({"face_indices": "0,x"}, "face_indices", "--faces takes face numbers separated by commas, got '0,x'"),
])
def test_settings_are_checked_before_any_work(settings: dict, option: str, flags: str) -> None:
    """One rule set, in the settings; the error says which option, and each front end names it its way."""
    from elir_cli.pipeline.settings import flag_of, form_name_of

    with pytest.raises(UsageError) as caught:
        RestoreSettings(**settings)
    error = caught.value
    assert error.option == option
    assert error.value == settings[option]
    assert flags in error.render(flag_of)[0]  # the CLI's words
    assert "--" not in error.message  # the library's: keywords
    assert form_name_of(option) in error.render(form_name_of)[0]  # the server's: form fields


class FailsOnGrey(PhotoRestorer):
    """A restorer that breaks like a real one can (out of memory) on one kind of photo."""

    def restore_decoded(self, image, *, faces_dir=None):  # type: ignore[no-untyped-def]
        if image.grayscale:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return RestoreResult(array=image.rgb, faces=[], task="bfr", upscale=1)


def test_an_unexpected_failure_in_one_file_does_not_stop_the_batch(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(PHOTOS / "faces" / "camera.png", src / "a_grey.png")
    shutil.copy(PHOTOS / "faces" / "astronaut.png", src / "b.png")
    restorer = FailsOnGrey(RestoreSettings(device="cpu"))
    summary = run_batch(restorer, plan_batch(src, tmp_path / "out"))
    status = {Path(r.input).name: r for r in summary.records}
    assert status["a_grey.png"].status == "failed"
    assert "out of memory" in status["a_grey.png"].error and "--batch-size" in status["a_grey.png"].hint
    assert status["b.png"].status == "restored"
    assert not summary.ok


def test_a_one_pixel_image_does_not_hang_the_warp() -> None:
    code = ("import numpy as np; from elir_cli.faces.alignment import warp_affine; "
            "print(warp_affine(np.ones((1, 1, 3), np.float32), np.array([[4.0, 0, 0], [0, 4.0, 0]]), (8, 8)).shape)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "(8, 8, 3)" in done.stdout, done.stderr


def test_compile_setting_reaches_the_loaded_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Wiring only: the compiled model's numbers are checked in test_runtime (compiling takes a minute).
    import torch

    from tests.helpers.cli_helpers import tiny_weights

    monkeypatch.setattr(torch._dynamo.config, "suppress_errors", torch._dynamo.config.suppress_errors)
    weights = str(tiny_weights(tmp_path))
    keys = []
    for flag in (False, True):
        restorer = PhotoRestorer(RestoreSettings(task="denoising", weights=weights, device="cpu", compile=flag))
        model = restorer.model
        compiled = [part._compiled_call_impl is not None for part in (model.enc, model.mmse, model.fmir, model.dec)]
        assert compiled == [flag] * 4
        assert restorer.describe()["compile"] is flag
        keys.append(list(model.state_dict()))
    assert keys[0] == keys[1]  # compiling keeps the module names and state_dict keys
