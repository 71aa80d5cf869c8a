"""``elir tune``: a tiny ELIR tuned for a few steps on real photos, on the CPU.

The photos are the four corners (256 x 256) of each of the three real portraits of
``tests/data/photos/faces``: twelve images, one held out for validation, trained at 64 px
(face tasks resize each whole image), the task's LQ made on the fly (denoising's noise).
The model is the tiny random denoiser of the CLI tests, its own autoencoder as the teacher
(``--teacher self``: no download), the best weights kept by the validation loss (LPIPS needs
pretrained files that the tests do not have).

Proved here: the validation loss falls; a run interrupted and resumed ends bitwise where an
uninterrupted one ends (weights, EMA, optimizer state, validations); the exported file
restores with ``elir restore`` (by path and by its registered name) and measures with
``elir eval``, in processes of their own; ``elir models list`` shows it; what cannot work is
refused in one line (too few images, images smaller than ``--size``, LQ of the wrong size,
a run on a CPU that would take days, a second run in a run folder); the teacher comes from
the hub through huggingface_hub (a local stand-in of the hub).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from elir_cli.errors import CheckpointError, ModelNotAvailableError, UsageError
from elir_cli.tuning import Tuner, TuneSettings
from elir_cli.tuning.data import Geometry, ImageFolder, PairSource, TrainingSet, degradation, pair
from elir_cli.tuning.loop import CHECKPOINT_FILE, SETTINGS_FILE, SUMMARY_FILE
from tests.helpers.cli_helpers import assert_one_line_error, run_elir
from tests.helpers.torch_threads import one_torch_thread  # noqa: F401  (autouse: one torch thread)
from tests.helpers.tunephotos import TASK, corner_photos, photos, weights  # noqa: F401  (fixtures)

SIZE = 64
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # the CLI's processes too: two threads on a loaded 2-core machine crawl


def settings(photos: Path, weights: Path, out: Path, **changes: Any) -> TuneSettings:
    values: dict[str, Any] = dict(task=TASK, hq=str(photos), out=out, weights=str(weights), teacher="self", steps=6,
                                  batch_size=2, size=SIZE, val_every=2, best_by="loss", device="cpu", lr=1e-3, seed=3)
    values.update(changes)
    return TuneSettings(**values)


def state_tensors(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / CHECKPOINT_FILE))


def test_the_validation_loss_falls(photos: Path, weights: Path, tmp_path: Path) -> None:
    events = []
    result = Tuner(settings(photos, weights, tmp_path / "run", steps=8, val_every=4), on_event=events.append,
                   register=False).run()
    losses = [h["values"]["loss"] for h in result.history]
    assert [h["step"] for h in result.history] == [0, 4, 8]
    assert losses[2] < losses[1] < losses[0], losses
    assert result.best_step == 8 and result.best["loss"] == losses[2]
    assert result.images == {"train": 11, "validation": 1}
    # progress: every step's loss and speed, each validation, start and end
    steps = [e for e in events if e.kind == "step"]
    assert [e.step for e in steps] == list(range(1, 9))
    assert all(math.isfinite(e.loss) and e.steps_per_s > 0 and e.eta_s >= 0 for e in steps)
    assert steps[-1].eta_s == 0
    assert [e.step for e in events if e.kind == "validation"] == [0, 4, 8]
    assert events[-1].kind == "done"
    # the best weights are the EMA's at step 8, in our format, with their provenance and model card
    with safe_open(str(result.weights), "pt") as f:
        meta = f.metadata()
    assert meta["task"] == TASK and meta["tuned_by"] == "elir tune" and meta["tune_step"] == "8"
    card = result.card.read_text()
    assert card.startswith("---\nlicense: apache-2.0") and "| 8 |" in card and "self (the starting model" in card
    summary = json.loads((tmp_path / "run" / SUMMARY_FILE).read_text())
    assert summary["best_step"] == 8 and summary["settings"]["lr"] == 1e-3


def test_a_resumed_run_ends_bitwise_where_an_uninterrupted_one_ends(photos: Path, weights: Path,
                                                                       tmp_path: Path) -> None:
    whole = Tuner(settings(photos, weights, tmp_path / "whole"), register=False).run()

    def stop_at_3(event: Any) -> None:
        if event.kind == "step" and event.step == 3:  # after the checkpoint of step 2
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Tuner(settings(photos, weights, tmp_path / "parts"), on_event=stop_at_3, register=False).run()
    assert json.loads((tmp_path / "parts" / SETTINGS_FILE).read_text())["steps"] == 6
    resumed = Tuner(settings(photos, weights, tmp_path / "parts"), resume=True, register=False).run()

    a, b = state_tensors(tmp_path / "whole"), state_tensors(tmp_path / "parts")
    assert a.keys() == b.keys() and any(k.startswith("optim.") for k in a) and any(k.startswith("ema.") for k in a)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert different == [], different[:5]
    assert load_file(str(whole.weights)).keys() == load_file(str(resumed.weights)).keys()
    assert all(torch.equal(x, load_file(str(resumed.weights))[k]) for k, x in load_file(str(whole.weights)).items())
    assert resumed.history == whole.history and resumed.best_step == whole.best_step
    # a step later than the checkpoint: the weights moved (the test can fail)
    start = load_file(str(weights))
    assert not torch.equal(start["fmir.first_proj.weight"], a["model.fmir.first_proj.weight"])


def test_a_run_stopped_in_its_first_validation_resumes_to_the_uninterrupted_result(
        photos: Path, weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = Tuner(settings(photos, weights, tmp_path / "whole", steps=2), register=False).run()
    real = Tuner._validate_and_keep

    def interrupted(self: Tuner, step: int) -> None:
        raise KeyboardInterrupt  # Ctrl-C during the step-0 validation (minutes at 512 on a CPU)

    monkeypatch.setattr(Tuner, "_validate_and_keep", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Tuner(settings(photos, weights, tmp_path / "parts", steps=2), register=False).run()
    monkeypatch.setattr(Tuner, "_validate_and_keep", real)
    assert (tmp_path / "parts" / CHECKPOINT_FILE).is_file() and (tmp_path / "parts" / SETTINGS_FILE).is_file()
    resumed = Tuner(settings(photos, weights, tmp_path / "parts", steps=2), resume=True, register=False).run()
    assert resumed.history == whole.history and resumed.best_step == whole.best_step
    assert all(torch.equal(x, load_file(str(resumed.weights))[k]) for k, x in load_file(str(whole.weights)).items())


def test_local_paths_are_kept_absolute_and_names_and_urls_as_given(photos: Path, weights: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray Train workers run in folders of their own, and a run may be resumed from elsewhere."""
    monkeypatch.chdir(photos.parent)
    s = settings(Path(photos.name), weights, tmp_path / "run", teacher="self")
    assert s.hq == str(photos.resolve()) and s.teacher == "self"
    assert settings(photos, Path("not-here"), tmp_path / "run").weights == "not-here"  # a local model's name
    assert settings(photos, weights, tmp_path / "run", val="file:///x").val == "file:///x"


def test_resume_refuses_other_settings_and_a_second_run_in_one_folder(photos: Path, weights: Path,
                                                                       tmp_path: Path) -> None:
    run = tmp_path / "run"
    Tuner(settings(photos, weights, run, steps=2), register=False).run()
    with pytest.raises(UsageError, match="holds a tuning run already"):
        Tuner(settings(photos, weights, run, steps=2), register=False).run()
    with pytest.raises(UsageError, match=r"these differ: lr: 0\.001 -> 0\.01"):
        Tuner(settings(photos, weights, run, steps=4, lr=1e-2), resume=True, register=False).run()
    with pytest.raises(UsageError, match="no checkpoint to resume"):
        Tuner(settings(photos, weights, tmp_path / "none", steps=2), resume=True, register=False).run()
    more = Tuner(settings(photos, weights, run, steps=4), resume=True, register=False).run()  # --steps may grow
    assert [h["step"] for h in more.history] == [0, 2, 4]


def test_the_batch_of_a_step_is_a_function_of_the_step(photos: Path) -> None:
    """Order, crops, flips and LQ from (seed, epoch, file): the same step twice gives the same
    batch; two ranks' halves are the global batch; another epoch draws other noise."""
    from elir_cli.registry.tasks import get_task

    task = get_task(TASK)
    folder = ImageFolder(str(photos), what="--hq")
    items = pair(folder, None)
    data = TrainingSet(items, PairSource(folder, None, Geometry(task, SIZE)), batch_size=4, seed=1,
                       degrade=degradation(task))
    hq, lq = data.batch(5)
    again = data.batch(5)
    assert torch.equal(hq, again[0]) and torch.equal(lq, again[1])
    halves = [data.batch(5, rank=r, world_size=2) for r in (0, 1)]
    assert torch.equal(torch.cat([h for h, _ in halves]), hq) and torch.equal(torch.cat([x for _, x in halves]), lq)
    assert hq.shape == (4, 3, SIZE, SIZE) and 0 <= float(lq.min()) and float(lq.max()) <= 1
    assert not torch.equal(lq, hq)  # denoising's noise, drawn on the fly
    epoch_0 = {items[i].key: data.sample(i, 0)[1] for i in range(2)}
    epoch_1 = {items[i].key: data.sample(i, 1)[1] for i in range(2)}
    assert any(not np.array_equal(epoch_0[k], epoch_1[k]) for k in epoch_0)


def test_a_paired_lq_folder_must_fit_its_hq_images(tmp_path: Path) -> None:
    from elir_cli.registry.tasks import get_task

    sr = Geometry(get_task("sr"), SIZE)
    hq = np.zeros((256, 256, 3), np.uint8)
    assert sr.fit_lq("a.png", hq, np.zeros((32, 32, 3), np.uint8)).shape == hq.shape  # 1/8: upsampled
    assert sr.fit_lq("a.png", hq, np.full((256, 256, 3), 7, np.uint8))[0, 0, 0] == 7
    with pytest.raises(UsageError, match=r"LQ image a.png is 100x100; its HQ image is 256x256 \(expected 256x256 "
                                          r"or 32x32\)"):
        sr.fit_lq("a.png", hq, np.zeros((100, 100, 3), np.uint8))


def test_a_run_that_would_take_days_on_this_cpu_is_refused_with_the_estimate(photos: Path, weights: Path,
                                                                               tmp_path: Path) -> None:
    with pytest.raises(UsageError) as caught:
        Tuner(settings(photos, weights, tmp_path / "run", steps=10_000_000), register=False).run()
    assert "steps would take about" in caught.value.message and "days on this CPU" in caught.value.message
    assert "a day holds about" in caught.value.hint and "force" in caught.value.hint
    assert not (tmp_path / "run" / SETTINGS_FILE).exists()  # refused before anything was written


def test_the_teacher_comes_from_the_hub(hub_server: Any, weights: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """TAESD3's file (here: the tiny model's autoencoder under diffusers' keys) through hf_hub_download,
    at the pinned revision; offline and not cached, a one-line error says how to get it."""
    from safetensors.torch import save as save_bytes

    from elir_cli.registry.loading import load_float32_model
    from elir_cli.registry.teacher import TEACHER_FILENAME, TEACHER_REPO, TEACHER_REVISION
    from elir_cli.tuning.teacher import load_teacher

    model = load_float32_model(weights, task=TASK)
    state = {("encoder." if k.startswith("enc.") else "decoder.") + k.split(".", 1)[1]: v
             for k, v in model.state_dict().items() if k.startswith(("enc.", "dec."))}
    commit = hub_server.add_commit(TEACHER_REPO, {TEACHER_FILENAME: save_bytes(state), "config.json": b"{}"})
    repo = hub_server.repos[TEACHER_REPO]  # the stand-in's commit gets the real one's id
    repo.commits[TEACHER_REVISION] = repo.commits.pop(commit)
    repo.refs["main"] = TEACHER_REVISION
    teacher = load_teacher(None, model)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in state.items())
    assert not any(p.requires_grad for p in teacher.parameters())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    load_teacher(None, model)  # cached now: works offline
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    with pytest.raises(ModelNotAvailableError, match="not cached and HF_HUB_OFFLINE is set") as caught:
        load_teacher(None, model)
    assert "--teacher FILE" in caught.value.hint and "--teacher self" in caught.value.hint
    bad = tmp_path / "not_a_teacher.safetensors"
    bad.write_bytes(save_bytes({"encoder.layers.0.weight": torch.zeros(1)}))
    with pytest.raises(CheckpointError, match="is not a tiny autoencoder"):
        load_teacher(str(bad), model)


# -- the real CLI, in processes of its own --------------------------------------------------------


@pytest.fixture(scope="module")
def tuned(photos: Path, weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder, tuned in this process: its best.safetensors."""
    run = tmp_path_factory.mktemp("tuned") / "run"
    return Tuner(settings(photos, weights, run, steps=2), register=False).run().weights


def test_the_command_tunes_registers_and_models_list_shows_it(photos: Path, weights: Path, tmp_path: Path) -> None:
    run = tmp_path / "faces"
    done = run_elir("tune", "--task", TASK, "--hq", str(photos), "-o", str(run), "--weights", str(weights),
                    "--teacher", "self", "--steps", "1", "--val-every", "1", "--size", str(SIZE), "--batch-size", "2",
                    "--best-by", "loss", "--device", "cpu", "--json", env=ONE_THREAD)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    result = json.loads(done.stdout)
    assert result["name"] == "faces" and result["best_step"] in (0, 1) and Path(result["weights"]).is_file()
    err = done.stderr.decode()
    assert "step 1/1  validation: loss" in err and "11 training images, 1 for validation" in err

    listed = run_elir("models", "list").stdout.decode()
    assert "local models" in listed and "faces" in listed and TASK in listed
    info = json.loads(run_elir("models", "info", "faces", "--json").stdout)
    assert info["task"] == TASK and info["source"] == "local" and Path(info["path"]).is_file()
    assert info["details"]["steps"] == 1 and Path(info["card"]).read_text().startswith("---\nlicense:")
    assert run_elir("models", "remove", "faces").returncode == 0
    assert "faces" not in run_elir("models", "list").stdout.decode()


def test_the_exported_file_restores_by_path_and_by_name_and_evaluates(tuned: Path, photos: Path,
                                                                      tmp_path: Path) -> None:
    from elir_cli.registry.local import register_local_model

    register_local_model("faces", tuned, task=TASK)
    (tmp_path / "faces").mkdir()  # a folder named like the model (the run folder, often) is no weights file
    photo = photos / "astronaut_0.png"
    common = ["--task", TASK, "--aligned", "--seed", "1", "--precision", "fp32", "--device", "cpu"]
    by_name = run_elir("restore", str(photo), *common, "--weights", "faces", "-o", str(tmp_path / "by_name.png"),
                       cwd=tmp_path, env=ONE_THREAD)
    assert by_name.returncode == 0, by_name.stderr.decode()[-2000:]
    by_path = run_elir("restore", str(photo), *common, "--weights", str(tuned), "-o", str(tmp_path / "by_path.png"),
                       env=ONE_THREAD)
    assert by_path.returncode == 0, by_path.stderr.decode()[-2000:]
    assert (tmp_path / "by_name.png").read_bytes() == (tmp_path / "by_path.png").read_bytes()

    lq, gt = tmp_path / "lq", tmp_path / "gt"
    gt.mkdir()
    for name in ("astronaut_0.png", "camera_1.png"):
        shutil.copy(photos / name, gt / name)
    assert run_elir("degrade", "--task", TASK, str(gt), "-o", str(lq), "--size", str(SIZE)).returncode == 0
    evaluated = run_elir("eval", "--task", TASK, "--lq", str(lq), "--gt", str(gt), "-o", str(tmp_path / "eval"),
                         "--weights", "faces", "--metrics", "psnr,ssim", "--device", "cpu", "--json",
                         env=ONE_THREAD)
    assert evaluated.returncode == 0, evaluated.stderr.decode()[-2000:]
    scores = json.loads(evaluated.stdout)
    assert scores["settings"]["images"] == 2 and math.isfinite(scores["overall"]["psnr"]["ours"])


def test_what_cannot_work_is_refused_in_one_line(photos: Path, weights: Path, tmp_path: Path) -> None:
    tiny = ["--weights", str(weights), "--teacher", "self", "--device", "cpu", "--steps", "2"]
    common = ["--task", TASK, *tiny]
    few = corner_photos(tmp_path / "few", names=("astronaut.png",))
    line = assert_one_line_error(run_elir("tune", *common, "--hq", str(few), "-o", str(tmp_path / "a"),
                                          env=ONE_THREAD))
    assert "too few images to train: 4 in --hq (1 held out for validation), at least 9 needed" in line
    line = assert_one_line_error(run_elir("tune", *common, "--hq", str(photos), "-o", str(tmp_path / "b"),
                                          "--size", "512"))
    assert "11 of 11 images are too small" in line and "smaller than --size 512" in line
    line = assert_one_line_error(run_elir("tune", *common, "--hq", str(photos), "-o", str(tmp_path / "c"),
                                          "--size", "80"))
    assert "--size must be a multiple of 32" in line
    line = assert_one_line_error(run_elir("tune", "--hq", str(photos), "-o", str(tmp_path / "d")))
    assert "--task is needed to start a run" in line
    bsr = run_elir("tune", "--task", "bsr", *tiny, "--hq", str(photos), "-o", str(tmp_path / "e"))
    assert "task bsr has no built-in degradation" in assert_one_line_error(bsr)
    assert "Hint: give the LQ images with --lq" in bsr.stderr.decode()
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_folders_may_be_urls_as_elir_batch_reads_them(photos: Path) -> None:
    """A folder URL (here file://; s3:// and gs:// go the same way, through pyarrow) lists and reads
    the same images as the path."""
    pytest.importorskip("pyarrow", reason='URL folders need pyarrow (pip install "elir-cli[ray]")')
    by_url, by_path = ImageFolder(photos.as_uri(), what="--hq"), ImageFolder(str(photos), what="--hq")
    assert by_url.names == by_path.names and len(by_url.names) == 12
    assert np.array_equal(by_url.read(by_url.names[3]), by_path.read(by_path.names[3]))
