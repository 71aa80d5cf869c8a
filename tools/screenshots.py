"""Make the documentation's screenshots: the ``elir serve`` web page and the HTML batch report.

    python tools/screenshots.py              # writes docs/images/*.png
    python tools/screenshots.py --out DIR    # somewhere else

What it does, with nothing but this checkout, Debian's chromium
(``/usr/bin/chromium``, driven by the ``playwright`` package: the test extra)
and no network:

1. writes a tiny ELIR with random weights for the denoising task (the
   configuration the tests use; it restores in milliseconds, and its "restored"
   faces are meant to show the pages, not the model);
2. starts ``elir serve --task denoising --weights TINY --preload`` on a free
   127.0.0.1 port, opens ``/`` at 1200x900, picks a 256 px wide copy of
   ``tests/data/photos/faces/grace_hopper.jpg``, presses Restore and waits
   for the before/after slider, then saves ``serve-page.png`` (the whole page
   at 1200 px) and, at 390x844, ``serve-page-phone.png``;
3. runs ``elir batch`` over three small photos from ``tests/data/photos/``
   and a truncated JPEG (so the report shows a failed file too) with
   ``--report run.html``, opens the report from disk at 1200x900 and saves
   ``batch-report.png`` (the top 1600 px of the page).

Each PNG is written by :func:`save_png`: Chromium's screenshot, reduced to a
256-colour palette when that is needed to stay under ``MAX_BYTES``. A browser
test that already has a ``page`` in the right state can make the same file
with ``save_png(page, DOCS_IMAGES / "serve-page.png")``.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOCS_IMAGES = ROOT / "docs" / "images"
PHOTOS = ROOT / "tests" / "data" / "photos"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
DESKTOP = {"width": 1200, "height": 900}
PHONE = {"width": 390, "height": 844}
MAX_BYTES = 300_000
REPORT_HEIGHT = 1600  # the report is one card per file: the top shows the totals, settings and three cards


def elir_env() -> dict[str, str]:
    """The environment for ``python -m elir_cli``: this checkout first, terminal width fixed."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "COLUMNS": "200"}


def tiny_weights(folder: Path, task: str = "denoising") -> Path:
    """A small random ELIR in our safetensors format (the tests' TINY configuration, seed 0)."""
    sys.path.insert(0, str(ROOT))
    import torch

    from elir_cli.model.checkpoint import save_safetensors
    from elir_cli.model.config import ModelConfig
    from elir_cli.model.elir import ElirModel

    config = ModelConfig(k_steps=3, sigma_s=0.1, hid_channels=32, n_mid_blocks=1, rrdb_c_hid=16, n_rrdb=1)
    torch.manual_seed(0)
    model = ElirModel(config).eval()
    return save_safetensors(folder / f"tiny_{task}.safetensors", model.state_dict(), config, task=task)


def save_png(page: Any, path: Path, *, full_page: bool = True, max_height: int | None = None) -> Path:
    """Chromium's screenshot of ``page`` as a PNG under ``MAX_BYTES`` (palette-reduced if needed)."""
    from PIL import Image

    options: dict[str, Any] = {"full_page": full_page, "type": "png"}
    if max_height is not None:
        width = page.evaluate("document.documentElement.scrollWidth")
        height = page.evaluate("document.documentElement.scrollHeight")
        options["clip"] = {"x": 0, "y": 0, "width": width, "height": min(height, max_height)}
    image = Image.open(io.BytesIO(page.screenshot(**options))).convert("RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    if buffer.tell() > MAX_BYTES:
        buffer = io.BytesIO()
        image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            buffer, format="PNG", optimize=True)
    path.write_bytes(buffer.getvalue())
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``elir serve`` in a subprocess on a free loopback port."""

    def __init__(self, weights: Path, log: Path) -> None:
        self.base = f"http://127.0.0.1:{free_port()}"
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "elir_cli", "serve", "--port", self.base.rsplit(":", 1)[1],
             "--task", "denoising", "--weights", str(weights), "--device", "cpu", "--preload"],
            stdout=subprocess.DEVNULL, stderr=open(log, "wb"), env=elir_env(), cwd=ROOT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"elir serve exited: {log.read_text()}")
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"elir serve did not start: {log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def shoot_serve_page(browser: Any, base: str, photo: Path, out: Path) -> list[Path]:
    """The page after restoring one photo: desktop width, then phone width."""
    context = browser.new_context(viewport=DESKTOP)
    try:
        page = context.new_page()
        page.goto(base + "/")
        page.wait_for_function("document.querySelectorAll('#task option').length > 0")
        page.set_input_files("#files", str(photo))
        page.click("#go")
        page.wait_for_selector(".result .compare:not([hidden])", timeout=120_000)
        page.wait_for_function("[...document.images].every(i => i.complete)")
        page.locator("#go").blur()
        shots = [save_png(page, out / "serve-page.png")]
        page.set_viewport_size(PHONE)
        shots.append(save_png(page, out / "serve-page-phone.png"))
        return shots
    finally:
        context.close()


def shoot_report(browser: Any, report: Path, out: Path) -> Path:
    """The HTML report, opened from disk."""
    page = browser.new_page(viewport=DESKTOP)
    try:
        page.goto(report.as_uri())
        page.wait_for_function("[...document.images].every(i => i.complete)")
        return save_png(page, out / "batch-report.png", max_height=REPORT_HEIGHT)
    finally:
        page.close()


def batch_report(weights: Path, work: Path) -> Path:
    """``elir batch`` over three small photos and a truncated JPEG, with ``--report run.html``."""
    from PIL import Image

    src = work / "scans"
    (src / "family").mkdir(parents=True)
    Image.open(PHOTOS / "faces" / "grace_hopper.jpg").resize((256, 300)).save(src / "grace_hopper.jpg", quality=90)
    Image.open(PHOTOS / "faces" / "astronaut.png").resize((256, 256)).save(src / "family" / "astronaut.png")
    shutil.copy(PHOTOS / "awkward" / "hopper.webp", src / "family" / "hopper.webp")
    shutil.copy(PHOTOS / "awkward" / "truncated.jpg", src / "family" / "scan_0042.jpg")
    report = work / "run.html"
    # Relative paths, run from the work folder: the failed file's message names scans/..., not /tmp/...
    done = subprocess.run(
        [sys.executable, "-m", "elir_cli", "batch", "scans", "-o", "restored",
         "--weights", str(weights), "--task", "denoising", "--seed", "0", "--device", "cpu",
         "--report", report.name],
        capture_output=True, env=elir_env(), cwd=work, timeout=600)
    if not report.exists():
        raise RuntimeError(f"elir batch wrote no report (exit {done.returncode}): {done.stderr.decode()[-2000:]}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DOCS_IMAGES, help="folder for the PNGs (default: docs/images)")
    args = parser.parse_args(argv)
    if not CHROMIUM.exists():
        print(f"needs Debian's chromium at {CHROMIUM} (apt-get install -y chromium)", file=sys.stderr)
        return 1
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="elir-screens-") as tmp:
        work = Path(tmp)
        weights = tiny_weights(work)
        photo = work / "grace hopper.jpg"
        from PIL import Image

        Image.open(PHOTOS / "faces" / "grace_hopper.jpg").resize((256, 300)).save(photo, quality=92)
        report = batch_report(weights, work / "batch")
        server = Server(weights, work / "serve.log")
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                try:
                    shots = shoot_serve_page(browser, server.base, photo, args.out)
                    shots.append(shoot_report(browser, report, args.out))
                finally:
                    browser.close()
        finally:
            server.stop()
    for shot in shots:
        print(f"{shot}: {shot.stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
