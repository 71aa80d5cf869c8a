"""`elir batch --report run.html`: one self-contained page, opened from disk in Chromium, with each face's score
and the faces the faithfulness guard changed marked (a folder job with a plug-in restorer that drifts on purpose)."""

from __future__ import annotations

import html
import re
import shutil
from pathlib import Path
from urllib.parse import unquote

import pytest
from PIL import Image

from elir_cli.pipeline.settings import RestoreSettings
from elir_cli.reports.html import write_html_report
from elir_cli.runner import FolderJob, FolderResult
from tests.helpers.browser import DESKTOP, check_png, chromium_page, save_png, screens_dir
from tests.helpers.cli_helpers import run_elir, tiny_denoising  # noqa: F401 (fixture)
from tests.helpers.drifting import Calls, aligned, face_swap_by_person
from tests.helpers.facephotos import PHOTOS as FACE_PHOTOS
from tests.helpers.serve_helpers import PHOTOS, png_bytes

REPORT_HEIGHT = 1600  # one card per file: the top shows the totals, the settings and the first cards
GUARD_REPORT_HEIGHT = 900  # the guard's batch: the totals and its three cards
MINIMUM_DB = 25.0
# Each photo's face blended with Grace Hopper's: the astronaut's more at higher fidelity (the guard
# lowers it), the cameraman's 80 % even at fidelity 0 (the guard cannot save it), Grace Hopper's
# with her own (faithful at any fidelity).
FLOORS = {"astronaut.png": 0.0, "camera.png": 0.8, "grace_hopper.jpg": 0.0}


@pytest.fixture(scope="module")
def batch_run(tiny_denoising: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real batch over a face photo, two photos without faces and a broken file; its HTML report."""
    root = tmp_path_factory.mktemp("report")
    src = root / "in"
    (src / "sub dir").mkdir(parents=True)
    shutil.copy(PHOTOS / "awkward" / "hopper.webp", src / "hopper.webp")
    (src / "noise.png").write_bytes(png_bytes((96, 64), seed=1))
    (src / "sub dir" / "noise #2.png").write_bytes(png_bytes((64, 96), seed=2))
    shutil.copy(PHOTOS / "awkward" / "truncated.jpg", src / "sub dir" / "truncated.jpg")
    (root / "reports").mkdir()
    # relative paths, run from the folder: the page (and the docs' screenshot of it) names in/..., not /tmp/...
    result = run_elir("batch", "in", "-o", "out", "--weights", str(tiny_denoising),
                      "--task", "denoising", "--steps", "1", "--seed", "0", "--device", "cpu",
                      "--report", "reports/run.html", cwd=root)
    assert result.returncode == 1, result.stderr.decode()  # one file failed
    return root / "reports" / "run.html"


@pytest.fixture(scope="module")
def guarded_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[FolderResult, Path]:
    """A folder job with a restorer that drifts on purpose and ``min_faithfulness`` 25; its HTML report."""
    root = tmp_path_factory.mktemp("guarded")
    (root / "in").mkdir()
    for name in FLOORS:
        shutil.copy(FACE_PHOTOS / name, root / "in" / name)
    drifting = face_swap_by_person(aligned("grace_hopper.jpg"), FLOORS, Calls())
    job = FolderJob(str(root / "in"), str(root / "out"),
                    RestoreSettings(task="bfr", suffix="", seed=0, min_faithfulness=MINIMUM_DB), restorer=drifting)
    result = job.run()
    return result, write_html_report(root / "guard.html", result.summary, result.settings)


def records_by_name(result: FolderResult) -> dict[str, dict]:
    return {Path(record.input).name: record.to_json() for record in result.summary.records}


def test_batch_summary_counts_the_faces_the_guard_changed(guarded_run: tuple[FolderResult, Path]) -> None:
    result, _ = guarded_run
    faces = {name: record["face_scores"] for name, record in records_by_name(result).items()}
    assert [face["guard"] for face in faces["astronaut.png"]] == ["lowered"]
    assert [face["guard"] for face in faces["camera.png"]] == ["failed"]
    assert [face["guard"] for face in faces["grace_hopper.jpg"]] == [None]
    totals = {"scored": 3, "lowered": 1, "failed": 1}
    assert result.summary.face_totals() == totals
    report = result.summary.to_json(result.settings)
    assert report["face_totals"] == totals and report["totals"] == {"restored": 3, "skipped": 0, "failed": 0}
    assert report["settings"]["min_faithfulness"] == MINIMUM_DB  # the report says what the guard was asked


def test_report_marks_the_faces_the_guard_changed(guarded_run: tuple[FolderResult, Path]) -> None:
    result, report = guarded_run
    page = report.read_text()
    assert re.search(r'<span class="faces-count">3 faces scored</span> <span class="guard-lowered-count">1 lowered '
                     r'by the guard</span> <span class="guard-failed-count">1 below the minimum \(25 dB\) even at '
                     r'fidelity 0</span>', page)
    cards = dict(re.findall(r'<li class="file" id="file-\d+"><h2>([^<]+)</h2>(.*?)</li>(?=<li class="file"|</ol>)',
                            page, re.S))
    records = records_by_name(result)
    lowered = records["astronaut.png"]["face_scores"][0]
    assert 0 < lowered["fidelity"] < 1 and lowered["faithfulness_db"] >= MINIMUM_DB
    note = re.search(r'<li class="lowered"><b>Face 0</b>: ([\d.]+) dB, ΔE ([\d.]+), fidelity ([\d.]+) '
                     r'<strong class="guard">fidelity lowered to ([\d.]+) by the guard</strong></li>',
                     cards["astronaut.png"])
    assert note, cards["astronaut.png"]
    assert [float(v) for v in note.groups()] == [lowered["faithfulness_db"], lowered["delta_e"], lowered["fidelity"],
                                                 lowered["fidelity"]]
    failed = records["camera.png"]["face_scores"][0]
    assert failed["fidelity"] == 0 and failed["faithfulness_db"] < MINIMUM_DB
    assert (f'<li class="failed"><b>Face 0</b>: {failed["faithfulness_db"]:.2f} dB, ΔE {failed["delta_e"]:.2f}, '
            'fidelity 0.00 <strong class="guard">below the minimum even at fidelity 0</strong></li>'
            in cards["camera.png"])
    assert '<li class="passed"><b>Face 0</b>: 80.00 dB, ΔE 0.00, fidelity 1.00</li>' in cards["grace_hopper.jpg"]
    # outlines over the faces the guard changed, none over the one it left alone
    assert cards["astronaut.png"].count('class="face-box lowered"') == 1
    assert cards["camera.png"].count('class="face-box failed"') == 1
    assert "face-box" not in cards["grace_hopper.jpg"]


def test_a_report_with_a_video_and_whole_image_scores() -> None:
    """Records of every kind render: a video's (no size, no face scores) and a whole image's score."""
    from elir_cli.pipeline.batch import BatchSummary
    from elir_cli.pipeline.files import PhotoRecord
    from elir_cli.reports.html import render_html_report
    from elir_cli.video.stream import VideoRecord

    summary = BatchSummary(records=[
        VideoRecord(input="clip.mp4", output="out/clip.mp4", status="restored", frames=3, faces_per_frame=[1, 1, 0]),
        PhotoRecord(input="scan.png", status="restored", size=[64, 48],
                    faithfulness={"faithfulness_db": 31.234, "delta_e": 1.5})])
    page = render_html_report(summary, {"task": "bsr"}, folder=Path("."))
    assert "<li><b>Whole image</b>: 31.23 dB, ΔE 1.50</li>" in page
    assert "faces scored" not in page  # no face restored: no face totals
    assert "1 face found" in page  # the video's card


def test_report_is_one_self_contained_page(batch_run: Path) -> None:
    page = batch_run.read_text()
    assert list(batch_run.parent.iterdir()) == [batch_run]  # written atomically: no temporary file left
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing from the network
    assert "<script src" not in page and "<link" not in page  # styles and script are inline
    assert page.count('class="slide"') == 3  # a before/after slider per restored file
    assert page.count("data:image/jpeg;base64,") == 6  # before and after thumbnails, embedded
    assert "3 restored" in page and "1 failed" in page
    assert "1 face found" in page and "0 faces found" in page
    assert '<span class="faces-count">1 face scored</span>' in page and "lowered by the guard" not in page
    failure = re.search(r'<p class="error">([^<]*)</p>', page).group(1)
    assert "truncated" in failure and "\n" not in failure
    assert "<td>task</td><td>denoising</td>" in page and "<td>seed</td><td>0</td>" in page


def test_report_links_are_relative_and_reach_the_files(batch_run: Path) -> None:
    links = [unquote(html.unescape(h)) for h in re.findall(r'href="([^"]+)"', batch_run.read_text())]
    assert len(links) == 4 + 3  # every input, every output
    for link in links:
        assert not link.startswith(("/", "file:")), link
        assert (batch_run.parent / link).is_file(), link


@pytest.mark.browser
def test_report_opens_from_disk_in_a_real_browser(batch_run: Path, tmp_path: Path) -> None:
    with chromium_page(DESKTOP) as (page, problems):
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(batch_run.as_uri())
        assert page.locator("input.slide").count() == 3
        first = page.locator("li.file").filter(has=page.locator("input.slide")).first
        slider = first.locator("input.slide")
        slider.focus()
        for _ in range(3):
            page.keyboard.press("ArrowLeft")
        assert slider.input_value() == "47"
        assert first.locator("img.before").evaluate("e => e.style.clipPath") == "inset(0px 53% 0px 0px)"
        widths = page.evaluate("[...document.querySelectorAll('img')].map(i => i.naturalWidth)")
        assert widths and all(w > 0 for w in widths)  # every embedded thumbnail decodes
        assert "truncated" in page.locator("li.file .error").inner_text()
        assert all(u.startswith(("file:", "data:")) for u in requests), requests
        # what the docs show (ELIR_SCREENSHOTS=docs/images): the top of the page
        check_png(save_png(page, screens_dir(tmp_path) / "batch-report.png", max_height=REPORT_HEIGHT),
                  DESKTOP["width"])
        assert not problems, problems


@pytest.mark.browser
def test_guarded_faces_stand_out_in_a_real_browser(guarded_run: tuple[FolderResult, Path], tmp_path: Path) -> None:
    """In words and colour, and outlined on the photo where the face is; nothing else changes colour."""
    result, report = guarded_run
    with chromium_page(DESKTOP) as (page, problems):
        page.goto(report.as_uri())
        header = page.locator("p.face-totals").inner_text()
        assert header == "3 faces scored 1 lowered by the guard 1 below the minimum (25 dB) even at fidelity 0"

        def card(name: str):  # type: ignore[no-untyped-def]
            return page.locator("li.file").filter(has=page.locator("h2", has_text=name))

        lowered = card("astronaut.png").locator("ul.faces li")
        failed = card("camera.png").locator("ul.faces li")
        passed = card("grace_hopper.jpg").locator("ul.faces li")
        assert "fidelity lowered to" in lowered.inner_text() and lowered.inner_text().endswith("by the guard")
        assert failed.inner_text().endswith("\nbelow the minimum even at fidelity 0")  # its own line
        assert "guard" not in passed.inner_text() and "minimum" not in passed.inner_text()
        backgrounds = [item.evaluate("e => getComputedStyle(e).backgroundColor")
                       for item in (lowered, failed, passed)]
        assert backgrounds[2] == "rgba(0, 0, 0, 0)" and len(set(backgrounds)) == 3, backgrounds
        # each outline lies over its face: the record's box, scaled to the thumbnail
        for name, guard in (("astronaut.png", "lowered"), ("camera.png", "failed")):
            record = records_by_name(result)[name]
            outline = card(name).locator(f".frame .face-box.{guard}")
            assert outline.inner_text() == "0"  # the face's number, as in the list
            frame = card(name).locator(".frame img.after").bounding_box()
            shown = outline.bounding_box()
            with Image.open(FACE_PHOTOS / name) as photo:
                width, height = photo.size
            x0, y0, x1, y1 = record["face_boxes"][0]
            expected = (frame["x"] + frame["width"] * x0 / width, frame["y"] + frame["height"] * y0 / height,
                        frame["width"] * (x1 - x0) / width, frame["height"] * (y1 - y0) / height)
            got = (shown["x"], shown["y"], shown["width"], shown["height"])
            assert all(abs(a - b) <= 2 for a, b in zip(got, expected)), (name, got, expected)
        assert card("grace_hopper.jpg").locator(".face-box").count() == 0
        # what the docs show (ELIR_SCREENSHOTS=docs/images)
        check_png(save_png(page, screens_dir(tmp_path) / "batch-report-guard.png", max_height=GUARD_REPORT_HEIGHT),
                  DESKTOP["width"])
        assert not problems, problems
