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
import re
import time
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

from elir_cli.atomicwrite import write_bytes_atomic
from elir_cli.errors import ElirError
from elir_cli.pipeline.batch import BatchSummary
from elir_cli.pipeline.faithfulness import GUARD_FAILED, GUARD_LOWERED
from elir_cli.pipeline.files import PhotoRecord

THUMB_SIZE = 480  # longest side of the embedded thumbnails, in pixels
THUMB_QUALITY = 82
HTML_SUFFIXES = (".html", ".htm")
# What the guard did, as each face's note says it (the web page of elir serve says the same).
LOWERED_NOTE = "fidelity lowered to {fidelity} by the guard"
FAILED_NOTE = "below the minimum even at fidelity 0"
SCORES_HELP = "dB: how faithful each restored face is to its input (higher is closer); ΔE: how far its colours moved."
GUARD_HELP = "The guard (min_faithfulness) restores a face below the minimum again, at a lower fidelity."

STYLE = """
:root { --fg:#1b1f24; --muted:#5b6470; --line:#d4d8de; --bad:#a4161a; --ok:#1b7a3a; --warn:#8a5300;
        --warn-edge:#e0a100; --warn-bg:#fff4d6; --bad-bg:#fde8e8; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 64rem; padding: 1rem; font: 15px/1.5 system-ui, sans-serif; color: var(--fg); background: #fafafa; }
h1 { font-size: 1.5rem; margin: 0.5rem 0; }
.totals span { display: inline-block; margin-right: 1rem; font-weight: 600; }
.failed-count, .guard-failed-count { color: var(--bad); } .restored-count { color: var(--ok); }
.guard-lowered-count { color: var(--warn); }
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
ul.faces { list-style: none; padding: 0; margin: 0.4rem 0; font-size: 0.9rem; }
ul.faces li { padding: 0.2rem 0.5rem; margin: 0.2rem 0; border-left: 4px solid var(--line); }
ul.faces li.lowered { border-left-color: var(--warn-edge); background: var(--warn-bg); }
ul.faces li.failed { border-left-color: var(--bad); background: var(--bad-bg); }
ul.faces .guard { display: block; }
ul.faces li.lowered .guard { color: var(--warn); } ul.faces li.failed .guard { color: var(--bad); }
.face-box { position: absolute; border: 3px solid var(--warn-edge); pointer-events: none; }
.face-box.failed { border-color: var(--bad); border-style: dashed; }
.face-box span { position: absolute; top: -3px; left: -3px; padding: 0 0.3rem; color: #fff; background: var(--warn);
                 font: 600 0.75rem/1.4 system-ui, sans-serif; }
.face-box.failed span { background: var(--bad); }
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
    faces = _face_totals(summary, settings.get("min_faithfulness"))
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
{faces}
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


def _face_totals(summary: BatchSummary, minimum: float | None) -> str:
    """The header's line of faces scored, lowered and failed (the guard's counts where it was asked for
    or acted); empty where no face was restored."""
    faces = summary.face_totals()
    if not faces["scored"]:
        return ""
    spans = [f'<span class="faces-count">{faces["scored"]} face{"s" if faces["scored"] != 1 else ""} scored</span>']
    help_text = SCORES_HELP
    if minimum is not None or faces[GUARD_LOWERED] or faces[GUARD_FAILED]:
        below = FAILED_NOTE if minimum is None else FAILED_NOTE.replace("minimum", f"minimum ({minimum:g} dB)")
        spans += [f'<span class="guard-lowered-count">{faces[GUARD_LOWERED]} lowered by the guard</span>',
                  f'<span class="guard-failed-count">{faces[GUARD_FAILED]} {html.escape(below)}</span>']
        help_text += " " + GUARD_HELP
    return f'<p class="totals face-totals">{" ".join(spans)}</p><p class="hint">{html.escape(help_text)}</p>'


def _fidelity(value: float) -> str:
    """A fidelity as the reports show it: two decimals, up to four where the guard chose a finer one."""
    return re.sub(r"0{1,2}$", "", f"{value:.4f}")


def _face_scores(record: Any) -> str:
    """Each restored face's score, the faces the guard lowered or could not save marked in words and colour."""
    e = html.escape
    rows = []
    for score in getattr(record, "face_scores", None) or []:
        guard = score.get("guard")
        values = [f"{score['faithfulness_db']:.2f} dB", f"ΔE {score['delta_e']:.2f}",
                  f"fidelity {_fidelity(score['fidelity'])}"]
        if score.get("identity") is not None:
            values.append(f"identity {score['identity']:.2f}")
        note = ""
        if guard == GUARD_LOWERED:
            note = LOWERED_NOTE.format(fidelity=_fidelity(score["fidelity"]))
        elif guard == GUARD_FAILED:
            note = FAILED_NOTE
        rows.append(f'<li class="{e(guard or "passed")}"><b>Face {int(score["index"])}</b>: {e(", ".join(values))}'
                    + (f' <strong class="guard">{e(note)}</strong>' if note else "") + "</li>")
    whole = getattr(record, "faithfulness", None)
    if whole:
        rows.append(f'<li><b>Whole image</b>: {whole["faithfulness_db"]:.2f} dB, ΔE {whole["delta_e"]:.2f}</li>')
    if not rows:
        return ""
    return f'<ul class="faces" aria-label="Faithfulness to the input">{"".join(rows)}</ul>'


def _face_boxes(record: Any, size: tuple[int, int]) -> str:
    """Outlines over the thumbnails of the faces the guard lowered or could not save, numbered as in the list.

    ``size``: the input's (the boxes are in its pixels; the output is the same picture scaled)."""
    width, height = size
    boxes = []
    for score, box in zip(getattr(record, "face_scores", None) or [], getattr(record, "face_boxes", None) or []):
        guard = score.get("guard")
        if guard not in (GUARD_LOWERED, GUARD_FAILED):
            continue
        x0, y0, x1, y1 = (max(0.0, min(1.0, v / side)) for v, side in zip(box, (width, height, width, height)))
        boxes.append(f'<div class="face-box {guard}" style="left:{100 * x0:.2f}%;top:{100 * y0:.2f}%;'
                     f'width:{100 * (x1 - x0):.2f}%;height:{100 * (y1 - y0):.2f}%" aria-hidden="true">'
                     f'<span>{int(score["index"])}</span></div>')
    return "".join(boxes)


def _item(index: int, record: PhotoRecord, folder: Path) -> str:
    e = html.escape
    name = Path(record.input).name
    parts = [f'<li class="file" id="file-{index}"><h2>{e(name)}</h2>',
             f'<span class="status {e(record.status)}">{e(record.status)}</span>']
    before = _thumbnail(record.input)
    after = _thumbnail(record.output) if record.output else None
    if before and after:
        parts.append(
            f'<div class="frame"><img class="after" src="{after.uri}" width="{after.width}" height="{after.height}" '
            f'alt="{e(name)} after restoration">'
            f'<img class="before" src="{_resized_uri(record.input, (after.width, after.height))}" '
            f'alt="{e(name)} before restoration">'
            f'<div class="divider" aria-hidden="true"></div>{_face_boxes(record, before.full)}</div>'
            f'<label class="slider">Before / after <input class="slide" type="range" min="0" max="100" value="50" '
            f'aria-label="Before / after: {e(name)}"></label>')
    elif before:
        parts.append(f'<div class="frame"><img src="{before.uri}" width="{before.width}" height="{before.height}" '
                     f'alt="{e(name)}"></div>')
    meta = []
    if record.faces is not None:
        meta.append(f"{record.faces} face{'s' if record.faces != 1 else ''} found")
    size = getattr(record, "size", None)  # a video's record has none
    if size:
        meta.append(f"{size[0]}×{size[1]}")
    if record.seconds is not None:
        meta.append(f"{record.seconds:.2f} s")
    if meta:
        parts.append(f'<p class="meta">{e(", ".join(meta))}</p>')
    parts.append(_face_scores(record))
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


class Thumbnail(NamedTuple):
    width: int
    height: int
    uri: str  # a JPEG data URI
    full: tuple[int, int]  # the image's own size


def _thumbnail(path: str | None) -> Thumbnail | None:
    """A JPEG thumbnail of ``path``, at most THUMB_SIZE on its longest side (None: not readable)."""
    if path is None:
        return None
    im = _pil(path)
    if im is None:
        return None
    from PIL import Image

    full = im.size
    im.thumbnail((THUMB_SIZE, THUMB_SIZE), Image.Resampling.LANCZOS)
    return Thumbnail(im.width, im.height, _jpeg_uri(im), full)


def _resized_uri(path: str, size: tuple[int, int]) -> str:
    """The input at exactly ``size`` (the after thumbnail's), so the two line up under the slider."""
    from PIL import Image

    im = _pil(path)
    assert im is not None
    return _jpeg_uri(im.resize(size, Image.Resampling.LANCZOS))
