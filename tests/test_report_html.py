"""`elir batch --report run.html`: one self-contained page, opened from disk in Chromium."""

from __future__ import annotations

import html
import re
import shutil
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.helpers.browser import CHROMIUM, CHROMIUM_ARGS, DESKTOP, check_png, chromium_or_skip, save_png, \
    screens_dir
from tests.helpers.cli_helpers import run_elir, tiny_denoising  # noqa: F401 (fixture)
from tests.helpers.serve_helpers import PHOTOS, png_bytes



REPORT_HEIGHT = 1600  # one card per file: the top shows the totals, the settings and the first cards


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


def test_report_is_one_self_contained_page(batch_run: Path) -> None:
    page = batch_run.read_text()
    assert list(batch_run.parent.iterdir()) == [batch_run]  # written atomically: no temporary file left
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing from the network
    assert "<script src" not in page and "<link" not in page  # styles and script are inline
    assert page.count('class="slide"') == 3  # a before/after slider per restored file
    assert page.count("data:image/jpeg;base64,") == 6  # before and after thumbnails, embedded
    assert "3 restored" in page and "1 failed" in page
    assert "1 face found" in page and "0 faces found" in page
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
    sync_api = chromium_or_skip()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=DESKTOP)
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
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
        finally:
            browser.close()
