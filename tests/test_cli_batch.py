"""`elir batch` end to end: mirror, skip, resume after Ctrl-C, report, exit codes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.cli_helpers import ELIR, run_elir, tiny_denoising  # noqa: F401 (fixture)
from tests.helpers.serve_helpers import png_bytes
from tests.helpers.waiting import wait_until

PHOTOS = Path(__file__).parent / "data" / "photos"
GOOD = ["faces/astronaut.png", "faces/grace_hopper.jpg", "awkward/hopper.webp", "awkward/hopper_gray.jpg",
        "awkward/hopper_orientation_3.jpg", "awkward/hopper.gif", "awkward/transparent.png"]
BAD = ["awkward/truncated.jpg", "awkward/corrupt-header.jpg"]
WAIT = 240


def make_tree(root: Path, copies: int = 1) -> tuple[list[Path], list[Path]]:
    good, bad = [], []
    for i, name in enumerate(GOOD + BAD):
        sub = root / ("a" if i % 2 else "b/c")
        sub.mkdir(parents=True, exist_ok=True)
        dst = sub / Path(name).name.upper() if i == 1 else sub / Path(name).name  # case does not matter
        shutil.copy(PHOTOS / name, dst)
        (good if name in GOOD else bad).append(dst)
    for k in range(1, copies):  # more of the same, so that an interrupt cannot miss the middle
        for i, name in enumerate(GOOD):
            dst = root / f"more{k}" / ("a" if i % 2 else "b") / Path(name).name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(PHOTOS / name, dst)
            good.append(dst)
    (root / "notes.txt").write_text("not an image")  # passed over: it does not claim to be one
    (root / "fake.jpg").write_text("not a jpeg either")  # reported: its name says JPEG
    bad.append(root / "fake.jpg")
    return good, bad


def outputs(out: Path) -> list[Path]:
    """Finished outputs: not the reports, nor an atomic write's hidden temporary file."""
    return sorted(p for p in out.rglob("*") if p.is_file() and p.suffix != ".json" and not p.name.startswith("."))


@pytest.mark.slow
def test_interrupted_batch_resumes_and_restores_each_file_once(tiny_denoising: Path, tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    good, bad = make_tree(src, copies=3)
    # fp32: a first-use precision calibration must not eat the wait for the first outputs
    args = [*ELIR, "batch", str(src), "-o", str(out), "--weights", str(tiny_denoising), "--task", "denoising",
            "--seed", "0", "--device", "cpu", "--precision", "fp32"]
    # Ctrl-C as at a terminal: a test runner started in the background ignores SIGINT, and a
    # child would inherit that (then Python installs no KeyboardInterrupt handler at all).
    first = subprocess.Popen([*args, "--report", str(tmp_path / "r1.json")], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env={**os.environ, "COLUMNS": "200"},
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:  # interrupt it once two files are done (or it ended: the checks below say what went wrong)
        wait_until(lambda: len(outputs(out)) >= 2 or first.poll() is not None, WAIT,
                   "the first run restored two files")
    finally:
        first.send_signal(signal.SIGINT)
    _, err1 = first.communicate(timeout=WAIT)
    assert first.returncode == 130, err1.decode()
    assert b"Traceback" not in err1
    r1 = json.loads((tmp_path / "r1.json").read_text())
    assert r1["interrupted"] is True
    done_first = {f["input"] for f in r1["files"] if f["status"] == "restored"}
    assert 2 <= len(done_first) < len(good), "the interrupt did not land half-way"
    assert not [p for p in out.rglob("*") if p.name.startswith(".")], "a temporary file was left behind"

    second = run_elir(*args[3:], "--report", str(tmp_path / "r2.json"))
    assert second.returncode == 1, second.stderr.decode()  # the bad files fail
    r2 = json.loads((tmp_path / "r2.json").read_text())
    status = {f["input"]: f["status"] for f in r2["files"]}
    assert {k for k, v in status.items() if v == "skipped"} == done_first
    restored_second = {k for k, v in status.items() if v == "restored"}
    assert restored_second.isdisjoint(done_first)
    assert restored_second | done_first == {str(p) for p in good}
    assert {k for k, v in status.items() if v == "failed"} == {str(p) for p in bad}
    assert len(outputs(out)) == len(good)
    for p in good:  # the tree is mirrored
        rel = p.relative_to(src)
        assert list((out / rel.parent).glob(p.stem + ".*")), rel
    assert r2["settings"]["weights_sha256"] and r2["settings"]["seed"] == 0
    assert "failed" in second.stdout.decode()


def test_a_file_named_as_an_image_that_is_not_one_fails_others_are_ignored(tiny_denoising: Path,
                                                                            tmp_path: Path) -> None:
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    shutil.copy(PHOTOS / "faces" / "grace_hopper.jpg", src / "gh.jpg")
    (src / "sub" / "broken.JPG").write_bytes(b"\x00" * 64)  # a transfer that went wrong
    (src / "empty.png").write_bytes(b"")
    (src / "notes.txt").write_text("not an image")
    (src / "Thumbs.db").write_bytes(bytes.fromhex("d0cf11e0a1b11ae1") + b"\x00" * 504)  # an OLE file
    (src / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + b"\x00" * 100)
    inputs = {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}
    result = run_elir("batch", str(src), "-o", str(tmp_path / "out"), "--weights", str(tiny_denoising),
                      "--task", "denoising", "--steps", "1", "--json")
    assert result.returncode == 1, result.stderr.decode()
    report = json.loads(result.stdout)
    assert report["totals"] == {"restored": 1, "skipped": 0, "failed": 2}
    failed = {Path(f["input"]).name: f for f in report["files"] if f["status"] == "failed"}
    assert failed.keys() == {"broken.JPG", "empty.png"}
    assert failed["broken.JPG"]["error"].endswith("not an image, though its name says JPEG")
    assert failed["empty.png"]["error"].endswith("not an image, though its name says PNG")
    assert all(f["hint"] for f in failed.values())
    assert "Traceback" not in result.stderr.decode()
    assert {p: p.read_bytes() for p in src.rglob("*") if p.is_file()} == inputs  # inputs untouched
    assert sorted(p.name for p in outputs(tmp_path / "out")) == ["gh.jpg"]

    # the summary after the table names each failed file once, on one line
    again = run_elir("batch", str(src), "-o", str(tmp_path / "out"), "--weights", str(tiny_denoising),
                     "--task", "denoising", "--steps", "1")
    assert again.returncode == 1, again.stderr.decode()
    lines = [line for line in again.stdout.decode().splitlines() if line.startswith("failed: ")]
    broken = src / "sub" / "broken.JPG"
    assert f"failed: {broken}: not an image, though its name says JPEG" in lines, lines
    assert all(line.count(str(src)) == 1 for line in lines), lines


def test_finished_batch_reruns_without_loading_anything(tiny_denoising: Path, tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for name in ("faces/grace_hopper.jpg", "awkward/hopper.webp"):
        shutil.copy(PHOTOS / name, src / Path(name).name)
    first = run_elir("batch", str(src), "-o", str(out), "--weights", str(tiny_denoising), "--task", "denoising")
    assert first.returncode == 0, first.stderr.decode()
    written = {p: p.stat().st_mtime_ns for p in outputs(out)}
    assert len(written) == 2
    # Offline, and no bfr weights cached: loading anything would fail this rerun.
    again = run_elir("batch", str(src), "-o", str(out), "--report", str(tmp_path / "r.json"),
                     env={"HF_HUB_OFFLINE": "1"})
    assert again.returncode == 0, again.stderr.decode()
    assert "every output exists already" in again.stderr.decode()
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["totals"] == {"restored": 0, "skipped": 2, "failed": 0}
    assert report["settings"]["weights"] is None  # no model was loaded
    assert {p: p.stat().st_mtime_ns for p in outputs(out)} == written


def test_batch_json_and_clean_exit(tiny_denoising: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(PHOTOS / "faces" / "grace_hopper.jpg", src / "gh.jpg")
    result = run_elir("batch", str(src), "-o", str(tmp_path / "out"), "--weights", str(tiny_denoising),
                      "--task", "denoising", "--json")
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(result.stdout)
    assert report["totals"] == {"restored": 1, "skipped": 0, "failed": 0}
    assert report["files"][0]["faces"] == 1


def test_batch_save_faces_mirrors_the_tree(tiny_denoising: Path, tmp_path: Path) -> None:
    src, crops = tmp_path / "in", tmp_path / "crops"
    for sub in ("a", "b/c"):  # the same file name twice: the crops must not mix
        (src / sub).mkdir(parents=True)
        shutil.copy(PHOTOS / "faces" / "grace_hopper.jpg", src / sub / "gh.jpg")
    shutil.copy(PHOTOS / "faces" / "astronaut.png", src / "a" / "astro.png")
    result = run_elir("batch", str(src), "-o", str(tmp_path / "out"), "--weights", str(tiny_denoising),
                      "--task", "denoising", "--seed", "0", "--save-faces", str(crops))
    assert result.returncode == 0, result.stderr.decode()
    found = sorted(p.relative_to(crops).as_posix() for p in crops.rglob("*.png"))
    assert found == [f"{folder}/{which}/face_000.png" for folder in ("a/astro", "a/gh", "b/c/gh")
                     for which in ("after", "before")]
    with Image.open(crops / "a/gh/before/face_000.png") as one, Image.open(crops / "b/c/gh/before/face_000.png") as two:
        assert one.size == two.size == (256, 256)
        assert np.array_equal(np.asarray(one), np.asarray(two))  # same photo, same aligned crop


def test_batch_summary_counts_the_faces_the_guard_could_not_save(tiny_denoising: Path, tmp_path: Path) -> None:
    """The tiny random model is nowhere near 60 dB, even at fidelity 0: the guard fails the face, the file
    is still restored, and the summary line, the JSON report and --json say so. (A face the guard
    lowers needs a restorer that drifts on purpose: tests/test_report_html.py.)"""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    shutil.copy(PHOTOS / "faces" / "grace_hopper.jpg", src / "gh.jpg")
    (src / "noise.png").write_bytes(png_bytes())  # no face: nothing to score
    args = ["batch", str(src), "-o", str(out), "--weights", str(tiny_denoising), "--task", "denoising",
            "--steps", "1", "--seed", "0", "--overwrite"]
    guarded = run_elir(*args, "--min-faithfulness", "60", "--report", str(tmp_path / "r.json"))
    assert guarded.returncode == 0, guarded.stderr.decode()  # a face below the minimum is not a failed file
    lines = guarded.stdout.decode().splitlines()
    assert "faces: 1 scored, 0 lowered by the guard, 1 below the minimum even at fidelity 0" in lines, lines
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["face_totals"] == {"scored": 1, "lowered": 0, "failed": 1}
    assert report["settings"]["min_faithfulness"] == 60
    (face,) = next(f for f in report["files"] if f["input"].endswith("gh.jpg"))["face_scores"]
    assert face["guard"] == "failed" and face["fidelity"] == 0 and face["faithfulness_db"] < 60

    plain = run_elir(*args)
    assert plain.returncode == 0, plain.stderr.decode()
    lines = plain.stdout.decode().splitlines()
    assert "faces: 1 scored" in lines and not any("guard" in line for line in lines), lines  # no guard asked
    as_json = json.loads(run_elir(*args, "--json").stdout)
    assert as_json["face_totals"] == {"scored": 1, "lowered": 0, "failed": 0}

