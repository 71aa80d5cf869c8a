"""The browser tests' Chromium, and the screenshots they save for the docs.

Chromium is Debian's (``/usr/bin/chromium``), driven by the ``playwright``
package; Playwright's own browser download is never used. The browser tests
(the ``elir serve`` page, the HTML batch report) save what they looked at
with :func:`save_png`, into :func:`screens_dir`: the test's own folder, or
``$ELIR_SCREENSHOTS`` when set. The docs' screenshots are made this way::

    ELIR_SCREENSHOTS=docs/images python -m pytest -m browser
"""

from __future__ import annotations

import io
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
SCREENSHOTS_ENV = "ELIR_SCREENSHOTS"
MAX_BYTES = 300_000  # a screenshot in the docs stays under this (palette-reduced if needed)
DESKTOP = {"width": 1200, "height": 900}
PHONE = {"width": 390, "height": 844}


def chromium_or_skip() -> Any:
    """playwright's sync API, or a skip saying what is missing."""
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)")
    return pytest.importorskip("playwright.sync_api", reason="needs the playwright package (test extra)")


def screens_dir(tmp_path: Path) -> Path:
    """Where a browser test saves its screenshots: ``$ELIR_SCREENSHOTS`` (e.g. docs/images), else ``tmp_path``."""
    where = os.environ.get(SCREENSHOTS_ENV)
    return Path(where) if where else tmp_path


def save_png(page: Any, path: Path, *, full_page: bool = True, max_height: int | None = None) -> Path:
    """Chromium's screenshot of ``page`` as a PNG under ``MAX_BYTES`` (palette-reduced if needed).

    ``max_height``: only the top of a long page.
    """
    from PIL import Image

    options: dict[str, Any] = {"full_page": full_page, "type": "png"}
    if max_height is not None:
        width = page.evaluate("document.documentElement.scrollWidth")
        height = page.evaluate("document.documentElement.scrollHeight")
        options["clip"] = {"x": 0, "y": 0, "width": width, "height": min(height, max_height)}
    image = Image.open(io.BytesIO(page.screenshot(**options))).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    if buffer.tell() > MAX_BYTES:
        buffer = io.BytesIO()
        image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            buffer, format="PNG", optimize=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return path


def check_png(path: Path, width: int) -> None:
    """A saved screenshot: a PNG of the page's width, small enough for the docs."""
    from PIL import Image

    assert path.stat().st_size <= MAX_BYTES, (path, path.stat().st_size)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] == width, (path, image.format, image.size)


@contextmanager
def chromium_page(viewport: dict[str, int] = DESKTOP, **context: Any) -> Iterator[tuple[Any, list[str]]]:
    """A page in Debian's chromium (skipped with the reason where it is missing), and the list its
    console errors and uncaught exceptions are collected in; the browser is closed afterwards."""
    sync_api = chromium_or_skip()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport=viewport, **context).new_page()
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            yield page, problems
        finally:
            browser.close()
