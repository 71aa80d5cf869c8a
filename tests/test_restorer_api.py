"""``Restorer``, the public session object, run as the README shows it.

The README's Python example is executed as written (its ``Restorer(task="bfr")``
fetches the task's weights from a local stand-in for the Hub holding a tiny
bfr model), on real photos with real detection; then what it promises: one
load for many images, per-image options sharing the models, paths, bytes,
PIL images and arrays giving the same result, and a video by content.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import elir_cli
from elir_cli import Restorer, UsageError

ROOT = Path(__file__).resolve().parent.parent
FACES = ROOT / "tests" / "data" / "photos" / "faces"


def readme_api_example() -> str:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    found = [block for block in blocks if "from elir_cli import Restorer" in block]
    assert found, "the README's Python example no longer uses Restorer"
    return found[0]


def test_the_readme_api_example_runs(hub_server_bfr: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    Image.open(FACES / "astronaut.png").convert("RGB").save(tmp_path / "photo.jpg", quality=95)
    shutil.copy(FACES / "grace_hopper.jpg", tmp_path / "other.jpg")
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_api_example(), "README.md", "exec"), {})
    for name in ("photo_restored.png", "other_restored.png"):
        with Image.open(tmp_path / name) as out:
            assert out.mode == "RGB" and out.size[0] >= 256
    printed = capsys.readouterr().out.splitlines()
    assert printed and printed[0].startswith("0 ("), printed  # the astronaut's face: index, box, score


def test_one_restorer_many_inputs_same_models(hub_server_bfr: tuple) -> None:
    restorer = Restorer(task="bfr", seed=3, steps=1)
    photo = FACES / "astronaut.png"
    by_path = restorer.restore(photo)
    model = restorer.model
    assert restorer.restore(photo.read_bytes()).array.tobytes() == by_path.array.tobytes()
    with Image.open(photo) as pil:
        assert restorer.restore(pil).array.tobytes() == by_path.array.tobytes()
        uint8 = np.asarray(pil.convert("RGB"))
    assert restorer.restore(uint8).array.tobytes() == by_path.array.tobytes()
    other = restorer.restore(photo, fidelity=0.0)  # per-image options: the same loaded model
    assert restorer.model is model and other.array.tobytes() != by_path.array.tobytes()
    assert len(by_path.faces) == 1
    # the one-call convenience gives the same bytes as the session object
    assert elir_cli.restore_array(by_path.array * 0 + _rgb(photo), task="bfr", seed=3, steps=1
                                  ).array.tobytes() == by_path.array.tobytes()
    with pytest.raises(UsageError) as caught:
        restorer.restore(photo, fidelity=2.0)
    assert (caught.value.option, caught.value.value) == ("fidelity", 2.0)
    with pytest.raises(ValueError, match="decide the models"):
        restorer.restore(photo, task="denoising")


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def test_restore_path_tells_photos_from_videos_by_content(hub_server_bfr: tuple, tmp_path: Path) -> None:
    disguised = tmp_path / "holiday.mp4"  # a photo whose name says video
    shutil.copy(FACES / "astronaut.png", disguised)
    record = Restorer(task="bfr", seed=1, steps=1).restore_path(disguised)  # next to it, as elir restore
    assert record.status == "restored" and Path(record.output) == tmp_path / "holiday_restored.png", record
    assert record.faces == 1


def test_files_job_checks_first_loads_only_when_needed(tmp_path: Path) -> None:
    from tests.helpers.cli_helpers import tiny_weights

    from elir_cli import FilesJob, RestoreSettings

    weights = tiny_weights(tmp_path, "denoising")
    photos = [tmp_path / "a.png", tmp_path / "b.jpg"]
    Image.open(FACES / "astronaut.png").convert("RGB").resize((64, 64)).save(photos[0])
    Image.open(FACES / "grace_hopper.jpg").convert("RGB").resize((64, 72)).save(photos[1])
    settings = RestoreSettings(task="denoising", weights=str(weights), steps=1, seed=0, device="cpu")
    starts: list[bool] = []
    result = FilesJob(photos, str(tmp_path / "out"), settings).run(on_start=lambda restorer, loads: starts.append(loads))
    assert starts == [True] and result.ok
    assert [Path(r.output).name for r in result.records] == ["a_restored.png", "b_restored.jpg"]
    again = FilesJob(photos, str(tmp_path / "out"), settings).run(on_start=lambda restorer, loads: starts.append(loads))
    assert starts == [True, False]  # every output exists: nothing is loaded
    assert [r.status for r in again.records] == ["failed", "failed"] and "already exists" in again.records[0].error
    with pytest.raises(UsageError, match="would both be written"):
        FilesJob([photos[0], tmp_path / "sub" / "a.png"], str(tmp_path / "out"), settings)
