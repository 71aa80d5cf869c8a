"""The outputs of ``elir eval``: ``results.json``, ``results.md`` and ``report.html``.

``results.md`` holds two tables: the overall means beside the paper's numbers
(with the difference and which way is better) and one row per image.
``report.html`` shows the few worst and best images (LQ, restored, ground
truth side by side, as PNG strips in ``report/``) next to their numbers.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from elir_cli.atomicwrite import write_bytes_atomic
from elir_cli.images.read import to_uint8
from elir_cli.images.resize import resize_bicubic_float

from .images import encode_png, read_float
from .metrics import METRICS

if TYPE_CHECKING:
    from .images import Pair

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
REPORT_HTML = "report.html"
REPORT_DIR = "report"
STRIP_HEIGHT = 256


def fmt(value: float | None, name: str = "") -> str:
    """A metric value for a table: 4 decimals for SSIM/LPIPS/CLIPIQA, 2 otherwise; '-' for none."""
    if value is None:
        return "-"
    digits = 4 if name in ("ssim", "lpips", "clipiqa") else 2
    return f"{value:.{digits}f}"


def _diff(value: float | None, name: str) -> str:
    if value is None:
        return "-"
    digits = 4 if name in ("ssim", "lpips", "clipiqa") else 2
    return f"{value:+.{digits}f}"


def overall_table(results: dict[str, Any]) -> str:
    lines = ["| metric | ours | paper | difference | better |", "| --- | ---: | ---: | ---: | --- |"]
    for name, row in results["overall"].items():
        lines.append(f"| {row['label']} | {fmt(row['ours'], name)} | {fmt(row['paper'], name)} | "
                     f"{_diff(row['difference'], name)} | {'lower' if row['lower_is_better'] else 'higher'} |")
    return "\n".join(lines)


def image_table(results: dict[str, Any]) -> str:
    names = [n for n in results["overall"] if METRICS[n].kind != "folder"]
    lines = ["| image | " + " | ".join(METRICS[n].label for n in names) + " |",
             "| --- | " + " | ".join("---:" for _ in names) + " |"]
    for record in results["images"]:
        lines.append(f"| {record['name']} | " + " | ".join(fmt(record.get(n), n) for n in names) + " |")
    return "\n".join(lines)


def markdown(results: dict[str, Any]) -> str:
    s = results["settings"]
    paper = results["paper"]
    head = [f"# elir eval: {results['task']}", "",
            f"{s['images']} images; seed {s['seed']}, steps {s['steps']}, fidelity {s['fidelity']}, "
            f"weights {s['weights'] or '-'}; {results['tool']}.", "",
            f"Paper: ELIR (Cohen et al., BMVC 2025) on {paper['dataset'] or '-'}; {paper['note']}.", "",
            "## Overall", "", overall_table(results), "", "## Per image", "", image_table(results), ""]
    return "\n".join(head)


def ranking_metric(results: dict[str, Any]) -> str | None:
    """The metric images are ranked by in the report: PSNR, else consistency, else the first per-image one."""
    names = [n for n in results["overall"] if METRICS[n].kind != "folder"]
    for preferred in ("psnr", "consistency"):
        if preferred in names:
            return preferred
    return names[0] if names else None


def worst_and_best(results: dict[str, Any], show: int) -> tuple[str | None, list[int], list[int]]:
    metric = ranking_metric(results)
    if metric is None:
        return None, [], []
    scored = [(r[metric], i) for i, r in enumerate(results["images"]) if r.get(metric) is not None]
    scored.sort(key=lambda t: (t[0], t[1]), reverse=not METRICS[metric].lower_better)  # best first
    order = [i for _, i in scored]
    count = min(show, (len(order) + 1) // 2)  # few images: split them, never show one twice
    best = order[:count]
    worst = [i for i in reversed(order) if i not in best][:count]
    return metric, worst, best


def side_by_side(pair: "Pair") -> np.ndarray:
    """LQ | restored | GT, each scaled to ``STRIP_HEIGHT`` px high (uint8)."""
    panels = [read_float(p) for p in (pair.lq, pair.restored, pair.gt) if p is not None]
    scaled = []
    for panel in panels:
        width = max(1, round(panel.shape[1] * STRIP_HEIGHT / panel.shape[0]))
        scaled.append(resize_bicubic_float(panel, (width, STRIP_HEIGHT)))
    gap = np.ones((STRIP_HEIGHT, 4, 3), dtype=np.float32)
    parts = []
    for panel in scaled:
        parts += [panel, gap]
    return to_uint8(np.concatenate(parts[:-1], axis=1))


def write_html(results: dict[str, Any], pairs: list["Pair"], out_dir: Path, *, overwrite: bool, show: int) -> Path:
    metric, worst, best = worst_and_best(results, show)
    by_name = {p.key: p for p in pairs}
    sections = []
    for title, indices in (("Worst", worst), ("Best", best)):
        rows = []
        for rank, i in enumerate(indices):
            record = results["images"][i]
            strip = f"{REPORT_DIR}/{title.lower()}_{rank}_{_safe(record['name'])}.png"
            write_bytes_atomic(out_dir / strip, encode_png(side_by_side(by_name[record["name"]])), overwrite=overwrite)
            numbers = "<br>".join(f"{METRICS[n].label}: {html.escape(fmt(record.get(n), n))}"
                                  for n in results["overall"] if n in record)
            rows.append(f"<tr><td>{html.escape(record['name'])}<br>{numbers}</td>"
                        f"<td><img src=\"{html.escape(strip)}\" alt=\"{html.escape(record['name'])}\"></td></tr>")
        if rows:
            sections.append(f"<h2>{title} {len(rows)} by {METRICS[metric].label if metric else '-'}</h2>"
                            "<p>left to right: input (LQ), restored, ground truth</p>"
                            f"<table>{''.join(rows)}</table>")
    overall_rows = "".join(
        f"<tr><td>{html.escape(r['label'])}</td><td>{html.escape(fmt(r['ours'], n))}</td>"
        f"<td>{html.escape(fmt(r['paper'], n))}</td><td>{html.escape(_diff(r['difference'], n))}</td>"
        f"<td>{'lower' if r['lower_is_better'] else 'higher'}</td></tr>"
        for n, r in results["overall"].items())
    s = results["settings"]
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>elir eval: {html.escape(results['task'])}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top}}img{{max-width:100%}}</style></head>
<body><h1>elir eval: {html.escape(results['task'])}</h1>
<p>{s['images']} images; seed {s['seed']}, steps {s['steps']}, fidelity {s['fidelity']}; {html.escape(results['tool'])}</p>
<table><tr><th>metric</th><th>ours</th><th>paper</th><th>difference</th><th>better</th></tr>{overall_rows}</table>
{''.join(sections)}
</body></html>
"""
    return write_bytes_atomic(out_dir / REPORT_HTML, page.encode(), overwrite=overwrite)


def write_results(results: dict[str, Any], pairs: list["Pair"], out_dir: Path, *, overwrite: bool, report: bool,
                  show: int) -> None:
    """``results.json``, ``results.md`` and (with ``report``) ``report.html`` in ``out_dir``."""
    write_bytes_atomic(out_dir / RESULTS_MD, markdown(results).encode(), overwrite=overwrite)
    if report:
        write_html(results, pairs, out_dir, overwrite=overwrite, show=show)
    # Last: results.json present means the run finished (and a rerun needs --overwrite).
    write_bytes_atomic(out_dir / RESULTS_JSON, (json.dumps(results, indent=2) + "\n").encode(), overwrite=overwrite)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80]
