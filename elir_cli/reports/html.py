"""The HTML report of a batch: one self-contained page with a before/after slider per file.

The page needs no server and nothing from the network: styles and script are
inline, the before/after thumbnails are embedded as JPEG data URIs, and the
full-size inputs and outputs are linked relative to the report's folder, so
it opens from the file system (``file://``) and keeps working when the
report and the output folder are moved together. It is written atomically.
"""

from __future__ import annotations

import base64
import html
import io
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from elir_cli.atomicwrite import write_bytes_atomic
from elir_cli.errors import ElirError
from elir_cli.pipeline.batch import BatchSummary
from elir_cli.pipeline.files import PhotoRecord

THUMB_SIZE = 480  # longest side of the embedded thumbnails, in pixels
THUMB_QUALITY = 82
HTML_SUFFIXES = (".html", ".htm")

STYLE = """
:root { --fg:#1b1f24; --muted:#5b6470; --line:#d4d8de; --bad:#a4161a; --ok:#1b7a3a; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 64rem; padding: 1rem; font: 15px/1.5 system-ui, sans-serif; color: var(--fg); background: #fafafa; }
h1 { font-size: 1.5rem; margin: 0.5rem 0; }
.totals span { display: inline-block; margin-right: 1rem; font-weight: 600; }
.failed-count { color: var(--bad); } .restored-count { color: var(--ok); }
table.settings { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.9rem; }
table.settings td { border-top: 1px solid var(--line); padding: 0.2rem 0.75rem 0.2rem 0; vertical-align: top; overflow-wrap: anywhere; }
ol.files { list-style: none; padding: 0; display: grid; gap: 1rem; grid-template-columns: repeat(auto-fill, minmax(20rem, 1fr)); }
li.file { background: #fff; border: 1px solid var(--line); border-radius: 0.6rem; padding: 0.75rem; }
li.file h2 { font-size: 1rem; margin: 0 0 0.4rem; overflow-wrap: anywhere; }
.status { font-weight: 600; text-transform: uppercase; font-size: 0.8rem; }
.status.restored { color: var(--ok); } .status.failed { color: var(--bad); } .status.skipped { color: var(--muted); }
.frame { position: relative; line-height: 0; margin: 0.4rem 0; }
.frame img { width: 100%; height: auto; display: block; }
.frame img.before { position: absolute; inset: 0; height: 100%; clip-path: inset(0 50% 0 0); }
.divider { position: absolute; top: 0; bottom: 0; left: 50%; width: 2px; background: #fff; box-shadow: 0 0 3px #000; }
label.slider { display: flex; gap: 0.5rem; align-items: center; font-size: 0.9rem; }
label.slider input { flex: 1; }
.meta { color: var(--muted); font-size: 0.9rem; margin: 0.3rem 0; }
.error { color: var(--bad); font-weight: 600; margin: 0.3rem 0; }
.hint { color: var(--muted); margin: 0.2rem 0; }
:focus-visible { outline: 3px solid #f0a500; outline-offset: 2px; }
"""

SCRIPT = """
document.querySelectorAll("li.file").forEach(function (item) {
  var slider = item.querySelector("input.slide");
  if (!slider) return;
  var before = item.querySelector("img.before"), divider = item.querySelector(".divider");
  function move() {
    var v = Number(slider.value);
    before.style.clipPath = "inset(0 " + (100 - v) + "% 0 0)";
    divider.style.left = v + "%";
    slider.setAttribute("aria-valuetext", v + "% before");
  }
  slider.addEventListener("input", move);
  move();
});
"""


def is_html_report(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() in HTML_SUFFIXES


def write_html_report(path: Path, summary: BatchSummary, settings: dict[str, Any]) -> Path:
    """Render the report for ``summary`` and write it to ``path`` atomically."""
    page = render_html_report(summary, settings, folder=Path(path).resolve().parent)
    return write_bytes_atomic(path, page.encode("utf-8"), overwrite=True)


def render_html_report(summary: BatchSummary, settings: dict[str, Any], *, folder: Path) -> str:
    """The page; links are relative to ``folder`` (where the report will be)."""
    e = html.escape
    totals = " ".join(f'<span class="{s}-count">{summary.count(s)} {s}</span>'
                      for s in ("restored", "skipped", "failed"))
    rows = "".join(f"<tr><td>{e(str(k))}</td><td>{e(_setting(v))}</td></tr>" for k, v in settings.items())
    items = "".join(_item(i, record, folder) for i, record in enumerate(summary.records))
    interrupted = '<p class="error">The batch was interrupted; run it again to resume.</p>' if summary.interrupted else ""
    when = time.strftime("%Y-%m-%d %H:%M:%S")
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>elir batch report</title>
<style>{STYLE}</style>
</head>
<body>
<h1>elir batch report</h1>
<p class="totals">{totals} <span>{summary.seconds:.1f} s</span></p>
{interrupted}
<details><summary>Settings (written {e(when)})</summary>
<table class="settings">{rows}</table>
</details>
<ol class="files">{items}</ol>
<script>{SCRIPT}</script>
</body>
</html>
"""


def _setting(value: Any) -> str:
    return "" if value is None else str(value)


def _item(index: int, record: PhotoRecord, folder: Path) -> str:
    e = html.escape
    name = Path(record.input).name
    parts = [f'<li class="file" id="file-{index}"><h2>{e(name)}</h2>',
             f'<span class="status {e(record.status)}">{e(record.status)}</span>']
    before = _thumbnail(record.input)
    after = _thumbnail(record.output) if record.output else None
    if before and after:
        width, height, after_uri = after
        parts.append(
            f'<div class="frame"><img class="after" src="{after_uri}" width="{width}" height="{height}" '
            f'alt="{e(name)} after restoration">'
            f'<img class="before" src="{_resized_uri(record.input, (width, height))}" alt="{e(name)} before restoration">'
            '<div class="divider" aria-hidden="true"></div></div>'
            f'<label class="slider">Before / after <input class="slide" type="range" min="0" max="100" value="50" '
            f'aria-label="Before / after: {e(name)}"></label>')
    elif before:
        width, height, uri = before
        parts.append(f'<div class="frame"><img src="{uri}" width="{width}" height="{height}" alt="{e(name)}"></div>')
    meta = []
    if record.faces is not None:
        meta.append(f"{record.faces} face{'s' if record.faces != 1 else ''} found")
    if record.size:
        meta.append(f"{record.size[0]}×{record.size[1]}")
    if record.seconds is not None:
        meta.append(f"{record.seconds:.2f} s")
    if meta:
        parts.append(f'<p class="meta">{e(", ".join(meta))}</p>')
    links = [f'<a href="{_href(record.input, folder)}">input</a>']
    if record.output:
        links.append(f'<a href="{_href(record.output, folder)}">output</a>')
    parts.append(f'<p class="meta">{" · ".join(links)}</p>')
    if record.error:
        parts.append(f'<p class="error">{e(record.error.splitlines()[0])}</p>')
    if record.hint:
        parts.append(f'<p class="hint">{e(record.hint)}</p>')
    for note in record.warnings:
        parts.append(f'<p class="hint">Note: {e(note)}</p>')
    parts.append("</li>")
    return "".join(parts)


def _href(path: str, folder: Path) -> str:
    """``path`` relative to the report's folder, as a URL path."""
    target = Path(path).resolve()
    try:
        relative = Path(os.path.relpath(target, folder)).as_posix()
    except ValueError:  # another drive (Windows): link absolutely
        return target.as_uri()
    return quote(relative)


def _pil(path: str):  # type: ignore[no-untyped-def]
    """The image at ``path`` as an 8-bit RGB PIL image, or None if it cannot be read."""
    from PIL import Image

    from elir_cli.images.read import read_image, to_uint8

    try:
        image = read_image(path)
    except ElirError:
        return None
    rgb = image.rgb
    if image.alpha is not None:  # transparent areas shown on white, as the page's background
        alpha = image.alpha[..., None]
        rgb = rgb * alpha + (1.0 - alpha)
    return Image.fromarray(to_uint8(rgb), mode="RGB")


def _jpeg_uri(im) -> str:  # type: ignore[no-untyped-def]
    buffer = io.BytesIO()
    im.save(buffer, format="JPEG", quality=THUMB_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _thumbnail(path: str | None) -> tuple[int, int, str] | None:
    """(width, height, data URI) of a JPEG thumbnail of ``path``, at most THUMB_SIZE on its longest side."""
    if path is None:
        return None
    im = _pil(path)
    if im is None:
        return None
    from PIL import Image

    im.thumbnail((THUMB_SIZE, THUMB_SIZE), Image.Resampling.LANCZOS)
    return im.width, im.height, _jpeg_uri(im)


def _resized_uri(path: str, size: tuple[int, int]) -> str:
    """The input at exactly ``size`` (the after thumbnail's), so the two line up under the slider."""
    from PIL import Image

    im = _pil(path)
    assert im is not None
    return _jpeg_uri(im.resize(size, Image.Resampling.LANCZOS))
