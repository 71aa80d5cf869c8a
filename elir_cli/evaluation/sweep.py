"""The perception-distortion curve: one point per setting of ``fidelity`` (or ``steps``).

x is a distortion measure (PSNR, else SSIM, else consistency), y a perceptual
one (LPIPS, FID, NIQE, MUSIQ or CLIPIQA when measured; else the next metric
measured, named as such on the axis). Each point is labelled with its
setting, so a user can pick the fidelity value that suits the use. Written as
``sweep.png`` (matplotlib, Agg backend: no display needed), ``sweep.md`` and
``sweep.json``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from elir_cli.atomicwrite import write_bytes_atomic
from elir_cli.errors import ElirError

from .metrics import METRICS

SWEEP_PNG = "sweep.png"
SWEEP_MD = "sweep.md"
SWEEP_JSON = "sweep.json"
DISTORTION = ("psnr", "ssim", "consistency")
PERCEPTUAL = ("lpips", "fid", "niqe", "musiq", "clipiqa")


def choose_axes(points: list[dict[str, Any]]) -> tuple[str | None, str | None]:
    """(x metric, y metric) among those measured at every point."""
    measured = [n for n in points[0]["overall"] if all(p["overall"][n]["ours"] is not None for p in points)]
    x = next((n for n in DISTORTION if n in measured), None)
    y = next((n for n in PERCEPTUAL if n in measured), None)
    if y is None:
        y = next((n for n in measured if n != x), None)
    return x, y


def axis_label(name: str, role: str) -> str:
    spec = METRICS[name]
    better = "lower" if spec.lower_better else "higher"
    return f"{spec.label} ({role}; {better} is better)"


def plot(parameter: str, points: list[dict[str, Any]], task: str) -> bytes:
    """The curve as PNG bytes."""
    try:
        import matplotlib
    except ImportError:
        raise ElirError("the sweep plot needs matplotlib, which is not installed",
                        hint='pip install "elir-cli[eval]"') from None

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    x_name, y_name = choose_axes(points)
    fig = Figure(figsize=(6.4, 4.8), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    if x_name is None or y_name is None:
        ax.text(0.5, 0.5, "fewer than two metrics measured at every setting", ha="center", va="center")
    else:
        xs = [p["overall"][x_name]["ours"] for p in points]
        ys = [p["overall"][y_name]["ours"] for p in points]
        ax.plot(xs, ys, "-o", color="tab:blue")
        for (x, y), values in _coincident(points, xs, ys, parameter).items():
            note = ax.annotate(f"{parameter}={', '.join(values)}", (x, y), textcoords="offset points",
                               xytext=(6, 6), fontsize=9)
            note.set_in_layout(False)  # a long label must not squeeze the axes
        ax.ticklabel_format(useOffset=False)
        ax.set_xlabel(axis_label(x_name, "distortion"))
        perceptual = y_name in PERCEPTUAL
        ax.set_ylabel(axis_label(y_name, "perception" if perceptual else "no perceptual metric measured"))
        ax.grid(True, alpha=0.3)
        ax.margins(x=0.2, y=0.15)
    ax.set_title(f"elir eval {task}: sweep over {parameter}")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _coincident(points: list[dict[str, Any]], xs: list[float], ys: list[float],
                parameter: str) -> dict[tuple[float, float], list[str]]:
    """Setting values grouped by point, so settings that give the same result share one label."""
    span_x = (max(xs) - min(xs)) or 1.0
    span_y = (max(ys) - min(ys)) or 1.0
    groups: dict[tuple[float, float], list[str]] = {}
    for p, x, y in zip(points, xs, ys):
        key = next((k for k in groups if abs(k[0] - x) < 0.02 * span_x and abs(k[1] - y) < 0.02 * span_y), (x, y))
        groups.setdefault(key, []).append(f"{p[parameter]:g}")
    return groups


def table(parameter: str, points: list[dict[str, Any]]) -> str:
    names = list(points[0]["overall"])
    lines = [f"| {parameter} | " + " | ".join(METRICS[n].label for n in names) + " | seconds |",
             "| ---: | " + " | ".join("---:" for _ in names) + " | ---: |"]
    for p in points:
        cells = []
        for n in names:
            v = p["overall"][n]["ours"]
            cells.append("-" if v is None else f"{v:.4f}" if n in ("ssim", "lpips", "clipiqa") else f"{v:.2f}")
        lines.append(f"| {p[parameter]:g} | " + " | ".join(cells) + f" | {p['timing']['total_s']:.1f} |")
    return "\n".join(lines)


def write_sweep(parameter: str, points: list[dict[str, Any]], task: str, out_dir: Path, *,
                overwrite: bool) -> dict[str, Any]:
    x, y = choose_axes(points)
    result = {"task": task, "parameter": parameter, "x": x, "y": y, "points": points}
    write_bytes_atomic(out_dir / SWEEP_PNG, plot(parameter, points, task), overwrite=overwrite)
    md = f"# elir eval {task}: sweep over {parameter}\n\n![curve]({SWEEP_PNG})\n\n{table(parameter, points)}\n"
    write_bytes_atomic(out_dir / SWEEP_MD, md.encode(), overwrite=overwrite)
    write_bytes_atomic(out_dir / SWEEP_JSON, (json.dumps(result, indent=2) + "\n").encode(), overwrite=overwrite)
    return result
