"""Batches: find the images under a folder, mirror the tree, resume, report.

``plan_batch`` decides what each input becomes (by content, never by name);
``run_batch`` restores the plan file by file, skipping outputs that already
exist unless told to overwrite, so an interrupted batch resumes where it
stopped. A file that fails is recorded and the batch goes on.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Callable, Iterator, Sequence

from elir_cli.atomicwrite import write_bytes_atomic
from elir_cli.errors import UsageError
from elir_cli.images.read import is_image_or_claims_to_be
from .faithfulness import GUARD_FAILED, GUARD_LOWERED
from .files import PhotoRecord, OutputName
from .restorer import PhotoRestorer

REPORT_VERSION = 1
# The hint of a file skipped because its output is already there (every engine says the same).
SKIPPED_HINT = "output exists (use --overwrite to redo it)"


@dataclass(frozen=True)
class BatchItem:
    src: Path
    relative: Path
    output: OutputName


@dataclass
class BatchSummary:
    records: list[PhotoRecord] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(1 for r in self.records if r.status == status)

    def face_totals(self) -> dict[str, int]:
        """Faces restored in this run and scored, and of them those the guard (``min_faithfulness``)
        lowered and those it could not bring up to the minimum even at fidelity 0 (videos have none)."""
        guards = [score.get("guard") for r in self.records for score in getattr(r, "face_scores", ())]
        return {"scored": len(guards), GUARD_LOWERED: guards.count(GUARD_LOWERED),
                GUARD_FAILED: guards.count(GUARD_FAILED)}

    @property
    def ok(self) -> bool:
        return not self.interrupted and self.count("failed") == 0

    def to_json(self, settings: dict[str, Any]) -> dict[str, Any]:
        return {
            "version": REPORT_VERSION,
            "settings": settings,
            "totals": {s: self.count(s) for s in ("restored", "skipped", "failed")},
            "face_totals": self.face_totals(),
            "interrupted": self.interrupted,
            "seconds": round(self.seconds, 3),
            "files": [r.to_json() for r in self.records],
        }


def _walk(root: Path, exclude: Path | None) -> Iterator[Path]:
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and (exclude is None or (here / d).resolve() != exclude))
        for name in sorted(files):
            if not name.startswith("."):
                yield here / name


def plan_batch(root: Path, out: Path, *, suffix: str = "",
               include: Callable[[Path], bool] = is_image_or_claims_to_be) -> list[BatchItem]:
    """Every image file under ``root`` (recursively, by content) and its output under ``out``.

    ``include`` decides which files are taken (default: images, and files whose
    name says image though their bytes are not one, so the batch reports them
    as failed instead of passing over them); a feature built on the pipeline
    (video) passes a wider test.
    """
    if not root.is_dir():
        raise UsageError(f"{root} is not a folder", hint="elir batch takes a folder; use elir restore for files")
    root_r, out_r = root.resolve(), out.resolve()
    if root_r == out_r:
        raise UsageError("the output folder is the input folder", hint="choose another -o folder")
    if root_r.is_relative_to(out_r):
        raise UsageError("the input folder is inside the output folder; outputs could replace inputs",
                         hint="choose an -o folder outside the input folder")
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file, not a folder", hint="give a folder with -o")
    exclude = out_r if out_r.is_relative_to(root_r) else None
    found = [p for p in _walk(root, exclude) if include(p)]
    names = output_names([path.relative_to(root) for path in found], suffix=suffix)
    return [BatchItem(src=path, relative=path.relative_to(root), output=OutputName(out / name))
            for path, name in zip(found, names)]


def output_names(relatives: Sequence[PurePath], *, suffix: str = "") -> list[PurePath]:
    """Each input's output name (relative, without the format's suffix), unique within its folder.

    ``relatives`` are the inputs' paths relative to the batch's folder, in plan
    order. Shared by :func:`plan_batch` and planners of trees that are not on
    the local file system (a distributed batch on object storage).
    """
    counts: dict[PurePath, int] = {}
    for rel in relatives:
        key = rel.with_name(rel.stem.lower())
        counts[key] = counts.get(key, 0) + 1
    taken: set[PurePath] = set()
    names = []
    for rel in relatives:
        stem = rel.stem
        if counts[rel.with_name(stem.lower())] > 1:  # a.jpg and a.png: both keep their extension
            stem = f"{rel.stem}_{rel.suffix.lstrip('.')}"
        candidate, n = stem, 1
        while (rel.parent / (candidate + suffix).lower()) in taken:  # still taken: number it
            n += 1
            candidate = f"{stem}_{n}"
        taken.add(rel.parent / (candidate + suffix).lower())
        names.append(rel.parent / (candidate + suffix))
    return names


def run_batch(restorer: PhotoRestorer, items: list[BatchItem], *,
              on_done: Callable[[PhotoRecord], None] | None = None,
              restore_item: Callable[[BatchItem], Any] | None = None) -> BatchSummary:
    """Restore ``items`` in order; Ctrl-C stops after recording what was done.

    ``restore_item`` may take over an item (a video) and return its record;
    None leaves the item to the photo path.
    """
    summary = BatchSummary()
    started = time.perf_counter()
    try:
        for item in items:
            record = restore_item(item) if restore_item is not None else None
            if record is None and (existing := restorer.kept_output(item.output)) is not None:
                record = PhotoRecord(input=str(item.src), output=str(existing), status="skipped",
                                    hint=SKIPPED_HINT)
            elif record is None:
                faces_key = (item.relative.parent / item.output.path.name).as_posix()
                record, _ = restorer.restore_file(item.src, item.output, faces_key=faces_key)
            summary.records.append(record)
            if on_done is not None:
                on_done(record)
    except KeyboardInterrupt:
        summary.interrupted = True
    summary.seconds = time.perf_counter() - started
    return summary


def write_report(path: Path, summary: BatchSummary, settings: dict[str, Any]) -> Path:
    data = json.dumps(summary.to_json(settings), indent=2).encode() + b"\n"
    return write_bytes_atomic(path, data, overwrite=True)
