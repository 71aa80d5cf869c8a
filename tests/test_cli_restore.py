"""`elir restore` end to end: the real executable on real and awkward photos."""

from __future__ import annotations

import glob
import hashlib
import json
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from tests.helpers.cli_helpers import TRACEBACK, assert_one_line_error, run_elir, tiny_denoising  # noqa: F401 (fixture)

PHOTOS = Path(__file__).parent / "data" / "photos"
FILES = sorted(p for p in PHOTOS.glob("*/*") if p.suffix.lower() != ".md")
MUST_FAIL = {"65536-uint32-limit.png", "decompression_bomb.gif", "corrupt-header.jpg",
             "truncated.jpg", "truncated_jpeg.jpg", "hopper_12bit.jpg"}
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
COMMON = ("--task", "denoising", "--seed", "0", "--device", "cpu", "--json")
OUTPUT_SUFFIX = "_restored"  # elir restore's default --suffix


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def upright(path: Path) -> Image.Image:
    Image.MAX_IMAGE_PIXELS = None
    with Image.open(path) as im:
        return ImageOps.exif_transpose(im)


def translucent(image: Image.Image) -> bool:
    """Whether any pixel is not fully opaque (an all-opaque alpha may be dropped losslessly)."""
    return image.has_transparency_data and int(np.asarray(image.convert("RGBA"))[..., 3].min()) < 255


@dataclass
class Swept:
    """What one photo of the sweep became: its record, its outputs, its error lines."""

    record: dict
    outputs: list[Path]
    errors: list[str]
    sha256_before: str
    result: subprocess.CompletedProcess[bytes]  # the whole group's run


def groups_with_unique_stems(files: list[Path]) -> list[list[Path]]:
    """As few groups as can hold the files with no output name twice in a group (hopper.gif, hopper.webp)."""
    groups: list[list[Path]] = []
    for path in files:
        group = next((g for g in groups if path.stem.lower() not in {p.stem.lower() for p in g}), None)
        if group is None:
            groups.append(group := [])
        group.append(path)
    return groups


@pytest.fixture(scope="module")
def sweep(tiny_denoising: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Swept]:
    """Run `elir restore` over every photo, a few processes of many files each (two at a time):
    one process a photo spent most of a minute and a half importing torch."""
    root = tmp_path_factory.mktemp("sweep")
    before = {path: sha256(path) for path in FILES}

    def run(numbered: tuple[int, list[Path]]) -> dict[str, Swept]:
        n, group = numbered
        out = root / f"group{n}"
        out.mkdir()
        result = run_elir("restore", *map(str, group), "-o", str(out) + "/", "--weights", str(tiny_denoising),
                          *COMMON)
        records = {r["input"]: r for r in json.loads(result.stdout)["files"]}
        lines = result.stderr.decode().splitlines()
        return {f"{p.parent.name}/{p.name}": Swept(
            record=records[str(p)], outputs=sorted(out.glob(f"{glob.escape(p.stem)}{OUTPUT_SUFFIX}.*")),
            errors=[line for line in lines if line.startswith(f"Error: {p}")], sha256_before=before[p],
            result=result) for p in group}

    swept: dict[str, Swept] = {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        for part in pool.map(run, enumerate(groups_with_unique_stems(FILES))):
            swept.update(part)
    return swept


@pytest.mark.slow
@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.name}" for p in FILES])
def test_every_photo_restores_or_fails_cleanly(path: Path, sweep: dict[str, Swept]) -> None:
    swept = sweep[f"{path.parent.name}/{path.name}"]
    assert sha256(path) == swept.sha256_before, "the input was modified"
    assert TRACEBACK not in swept.result.stderr.decode()
    record = swept.record
    if path.name in MUST_FAIL or record["status"] != "restored":
        assert path.name in MUST_FAIL, (record, swept.result.stderr.decode())
        assert record["status"] == "failed"
        assert swept.result.returncode == 1  # its group's run: a file failed
        assert len(swept.errors) == 1 and record["error"] in swept.errors[0], swept.result.stderr.decode()
        assert swept.outputs == [], "a failed restore left a file behind"
        return
    assert swept.errors == []
    assert [Path(record["output"])] == swept.outputs
    source = upright(path)
    with Image.open(swept.outputs[0]) as im:
        im.load()
        assert im.size == source.size
        assert (im.getexif().get(0x0112) or 1) == 1
        if source.mode in GREY_MODES:  # written back grey (16-bit grey+alpha PNG reads back as RGBA)
            rgb = np.asarray(im.convert("RGB"), dtype=np.int16)
            assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]), im.mode
        if translucent(source):
            assert "A" in im.mode or "transparency" in im.info, f"alpha dropped: {source.mode} -> {im.mode}"
        if source.info.get("icc_profile"):
            assert im.info.get("icc_profile"), "ICC profile dropped"
    assert json.loads(swept.result.stdout)["settings"]["device"].startswith("cpu")


def test_the_sweep_ran_each_photo_once_in_few_processes(sweep: dict[str, Swept]) -> None:
    runs = {id(s.result): s.result for s in sweep.values()}
    assert len(sweep) == len(FILES) and len(runs) <= 4
    for result in runs.values():  # each run: exit code 1 exactly when one of its files failed
        failed = [r for r in json.loads(result.stdout)["files"] if r["status"] == "failed"]
        assert result.returncode == (1 if failed else 0), result.stderr.decode()


def test_alpha_is_composited_back_untouched(sweep: dict[str, Swept]) -> None:
    swept = sweep["awkward/transparent.png"]
    assert swept.record["status"] == "restored"
    with Image.open(PHOTOS / "awkward" / "transparent.png") as src, Image.open(swept.outputs[0]) as dst:
        assert np.array_equal(np.asarray(src.getchannel("A")), np.asarray(dst.getchannel("A")))


def test_16bit_input_is_written_at_16_bits(sweep: dict[str, Swept]) -> None:
    import cv2

    swept = sweep["awkward/tiff_16bit_RGB.tiff"]
    assert swept.record["status"] == "restored"
    assert cv2.imread(str(swept.outputs[0]), cv2.IMREAD_UNCHANGED).dtype == np.uint16


def test_faces_are_found_on_real_portraits(sweep: dict[str, Swept]) -> None:
    for name in ("faces/astronaut.png", "faces/grace_hopper.jpg", "awkward/hopper_orientation_6.jpg"):
        assert sweep[name].record["faces"] == 1, name


@pytest.mark.slow
def test_seed_gives_byte_identical_outputs(tiny_denoising: Path, tmp_path: Path) -> None:
    src = PHOTOS / "faces" / "grace_hopper.jpg"
    outs = []
    for run in ("a", "b"):
        result = run_elir("restore", str(src), "-o", str(tmp_path / f"{run}.png"), "--weights", str(tiny_denoising),
                          *COMMON)
        assert result.returncode == 0, result.stderr.decode()
        outs.append((tmp_path / f"{run}.png").read_bytes())
    assert outs[0] == outs[1]


def test_stdin_to_stdout(tiny_denoising: Path) -> None:
    data = (PHOTOS / "faces" / "astronaut.png").read_bytes()
    result = run_elir("restore", "-", "--weights", str(tiny_denoising), "--task", "denoising", "--seed", "0",
                      "--ext", "png", input=data)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"Restored" in result.stderr


def test_file_to_stdout_sets_up_before_the_file(tiny_denoising: Path) -> None:
    # Writing to stdout has no output file that could already exist: the model is set
    # up (and the device reported) before the file, as for any other run.
    result = run_elir("restore", str(PHOTOS / "faces" / "astronaut.png"), "-o", "-", "--weights",
                      str(tiny_denoising), "--task", "denoising", "--seed", "0", "--ext", "png")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout[:8] == b"\x89PNG\r\n\x1a\n"
    err = result.stderr.decode()
    assert "Running on cpu" in err and err.index("Running on") < err.index("Restored"), err


def test_output_never_replaces_the_input(tiny_denoising: Path, tmp_path: Path) -> None:
    src = tmp_path / "photo.png"
    shutil.copy(PHOTOS / "faces" / "astronaut.png", src)
    before = sha256(src)
    result = run_elir("restore", str(src), "-o", str(src), "--overwrite", "--weights", str(tiny_denoising),
                      "--task", "denoising")
    line = assert_one_line_error(result)
    assert "input" in line
    assert sha256(src) == before


def test_existing_output_needs_overwrite(tiny_denoising: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out.png"
    dst.write_bytes(b"keep me")
    args = ("restore", str(PHOTOS / "faces" / "astronaut.png"), "-o", str(dst), "--weights", str(tiny_denoising),
            "--task", "denoising")
    assert "already exists" in assert_one_line_error(run_elir(*args))
    assert dst.read_bytes() == b"keep me"
    assert run_elir(*args, "--overwrite").returncode == 0
    assert dst.read_bytes()[:4] == b"\x89PNG"


def test_compile_flag_reaches_the_run_and_says_what_it_costs(tiny_denoising: Path, tmp_path: Path) -> None:
    # The CLI's end of --compile, with no face to restore (so nothing is compiled: that takes a
    # minute cold). The compiled model's numbers and the four captured graphs are checked in
    # test_runtime.py; that the flag reaches the loaded model in test_restore_files.py.
    src = PHOTOS / "faces" / "astronaut.png"
    for flag in ((), ("--compile",)):
        out = tmp_path / f"out{len(flag)}.png"
        result = run_elir("restore", str(src), "-o", str(out), "--weights", str(tiny_denoising), *COMMON,
                          "--faces", "99", *flag)
        assert result.returncode == 0, result.stderr.decode()
        assert json.loads(result.stdout)["settings"]["compile"] is bool(flag)
        assert ("first image compiles the model" in result.stderr.decode()) is bool(flag)
        assert out.is_file()


def test_existing_output_fails_before_any_loading(tmp_path: Path) -> None:
    # No bfr weights anywhere and the Hub offline: had the command loaded the model
    # first, it would fail on the weights, after seconds of importing torch.
    dst = tmp_path / "out.png"
    dst.write_bytes(b"keep me")
    result = run_elir("restore", str(PHOTOS / "faces" / "astronaut.png"), "-o", str(dst),
                      env={"HF_HUB_OFFLINE": "1"})
    line = assert_one_line_error(result)
    assert "already exists" in line, line
    assert "Running on" not in result.stderr.decode()
    assert dst.read_bytes() == b"keep me"


def test_unavailable_weights_fail_before_the_model_is_set_up(tmp_path: Path) -> None:
    # Offline with nothing cached: the weights are looked for before torch is imported
    # (that import alone takes seconds), so the error comes before "Running on ...".
    result = run_elir("restore", str(PHOTOS / "faces" / "astronaut.png"), "-o", str(tmp_path / "out.png"),
                      env={"HF_HUB_OFFLINE": "1"})
    line = assert_one_line_error(result)
    assert "not cached" in line and "HF_HUB_OFFLINE" in line, line
    assert "Running on" not in result.stderr.decode()
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("args, expect", [
    (("restore", "missing.jpg"), "no such file"),
    (("restore", "x.jpg", "--fidelity", "2"), "fidelity"),
    (("restore", "x.jpg", "--faces", "one"), "--faces"),
    (("restore", "x.jpg", "--task", "nope"), "nope"),
])
def test_bad_usage_is_one_line(args: tuple[str, ...], expect: str, tmp_path: Path) -> None:
    (tmp_path / "x.jpg").write_bytes((PHOTOS / "faces" / "grace_hopper.jpg").read_bytes())
    result = run_elir(*args, cwd=tmp_path)
    err = result.stderr.decode()
    assert result.returncode != 0 and "Traceback" not in err
    assert expect.lower() in err.lower(), err


def test_save_faces_compare_and_upscale(tiny_denoising: Path, tmp_path: Path) -> None:
    src = PHOTOS / "faces" / "grace_hopper.jpg"
    result = run_elir("restore", str(src), "-o", str(tmp_path / "out.png"), "--weights", str(tiny_denoising),
                      "--upscale", "2", "--compare", "--save-faces", str(tmp_path / "crops"), *COMMON)
    assert result.returncode == 0, result.stderr.decode()
    with Image.open(src) as im:
        width, height = im.size
    with Image.open(tmp_path / "out.png") as out:
        assert out.size == (2 * width, 2 * height)
    with Image.open(tmp_path / "out_compare.png") as cmp:
        assert cmp.size == (4 * width, 2 * height)
    for which in ("before", "after"):
        crops = sorted((tmp_path / "crops" / "out" / which).iterdir())  # keyed by the output's name
        assert [c.name for c in crops] == ["face_000.png"]
        with Image.open(crops[0]) as crop:
            assert crop.size == (256, 256)  # the denoising task's aligned crop


def test_aligned_input_skips_detection(tiny_denoising: Path, tmp_path: Path) -> None:
    crop = tmp_path / "crop.png"
    Image.new("RGB", (256, 256), (120, 100, 90)).save(crop)  # no face a detector would find
    result = run_elir("restore", str(crop), "-o", str(tmp_path / "out.png"), "--weights", str(tiny_denoising),
                      "--aligned", *COMMON)
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout)["files"][0]["faces"] == 1
    without = run_elir("restore", str(crop), "-o", str(tmp_path / "out2.png"), "--weights", str(tiny_denoising),
                       *COMMON)
    assert json.loads(without.stdout)["files"][0]["faces"] == 0  # no face: passed through, not an error
    assert without.returncode == 0


def test_aligned_with_a_face_choice_is_refused(tiny_denoising: Path, tmp_path: Path) -> None:
    """--aligned has no detection to choose from: --faces is refused in one line, not ignored."""
    crop = tmp_path / "crop.png"
    Image.new("RGB", (256, 256), (120, 100, 90)).save(crop)
    for command in (["restore", str(crop), "-o", str(tmp_path / "out.png")], ["batch", str(tmp_path), "-o", str(tmp_path / "o")]):
        result = run_elir(*command, "--weights", str(tiny_denoising), "--aligned", "--faces", "0", *COMMON)
        assert assert_one_line_error(result) == "Error: --aligned skips face detection, so --faces would be ignored"
    assert not (tmp_path / "out.png").exists() and not (tmp_path / "o").exists()


def test_weights_for_another_task_are_refused(tiny_denoising: Path, tmp_path: Path) -> None:
    result = run_elir("restore", str(PHOTOS / "faces" / "astronaut.png"), "-o", str(tmp_path / "o.png"),
                      "--weights", str(tiny_denoising), "--task", "bfr")
    assert "denoising" in assert_one_line_error(result)
    assert not (tmp_path / "o.png").exists()


def test_report_names_the_model_actually_used(tmp_path: Path) -> None:
    from tests.helpers.cli_helpers import tiny_weights

    weights = tiny_weights(tmp_path, "bfr")  # K = 3, while the bfr task's K is 5
    result = run_elir("restore", str(PHOTOS / "faces" / "astronaut.png"), "-o", str(tmp_path / "o.png"),
                      "--weights", str(weights), "--seed", "0", "--device", "cpu", "--precision", "fp32", "--json")
    assert result.returncode == 0, result.stderr.decode()
    settings = json.loads(result.stdout)["settings"]
    assert settings["steps"] == 3
    assert settings["weights_sha256"] == sha256(weights)
    assert settings["device"] == "cpu (fp32)"
    assert settings["batch_size"] == 1  # the CPU default (batching is not faster there)
