"""Image files: what happened to each (records), where outputs go, and checks on the names.

The loaded-model restorer that writes them is :mod:`.restorer`.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from elir_cli.errors import UsageError

COMPARE_SUFFIX = "_compare"
FACES_DIR_BEFORE = "before"
FACES_DIR_AFTER = "after"


@dataclass
class PhotoRecord:
    """What happened to one input file (for --json and --report)."""

    input: str
    output: str | None = None
    status: str = "pending"  # restored | skipped | failed
    error: str | None = None
    hint: str | None = None
    faces: int | None = None
    face_boxes: list[list[float]] = field(default_factory=list)
    # Per face: index, faithfulness_db, delta_e, fidelity, identity, guard (RestoreResult.face_scores).
    face_scores: list[dict[str, Any]] = field(default_factory=list)
    faithfulness: dict[str, Any] | None = None  # the whole image's, for whole-image work
    seconds: float | None = None
    warnings: list[str] = field(default_factory=list)
    size: list[int] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _is_oom(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or "out of memory" in text or "insufficient memory" in text


def side_by_side(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Input (resized with nearest neighbour to the output size) left, output right."""
    height, width = after.shape[:2]
    ys = (np.arange(height) * before.shape[0] // height).clip(0, before.shape[0] - 1)
    xs = (np.arange(width) * before.shape[1] // width).clip(0, before.shape[1] - 1)
    return np.concatenate([before[ys][:, xs], after], axis=1)


@dataclass(frozen=True)
class OutputName:
    """An output path; unless ``exact``, the format's suffix is appended once it is known."""

    path: Path
    exact: bool = False

    def existing(self) -> Path | None:
        """The output already written for this name, if any (for skipping and resuming)."""
        if self.exact:
            return self.path if self.path.exists() else None
        from elir_cli.images.write import SUFFIX_FORMATS

        for suffix in SUFFIX_FORMATS:
            candidate = self.path.with_name(self.path.name + suffix)
            if candidate.exists():
                return candidate
        return None


def output_name_for(src: Path, *, out: str | None, suffix: str, many: bool) -> OutputName:
    """Where ``elir restore`` writes ``src``: next to it with ``suffix``, into folder ``out``
    (several inputs, an existing folder, or a name ending in a slash), or to the file ``out``."""
    stem = src.stem + suffix
    if out is None:
        return OutputName(src.with_name(stem))
    folder = Path(out)
    if many or folder.is_dir() or out.endswith(("/", os.sep)):
        return OutputName(folder / stem)
    return OutputName(folder, exact=True)


def check_destinations(pairs: Sequence[tuple[Path, "OutputName"]]) -> None:
    """Refuse, before any work, outputs that collide with each other or with any input."""
    inputs = {src.resolve() for src, _ in pairs}
    seen: dict[Path, Path] = {}
    for src, name in pairs:
        key = name.path.resolve()
        if key in seen:
            raise UsageError(f"{seen[key]} and {src} would both be written to {name.path}.*",
                             hint="restore them into different folders, or rename one")
        seen[key] = src
        if name.exact and key in inputs:
            raise UsageError(f"output {name.path} is one of the inputs; refusing to replace it",
                             hint="choose another output name or folder")
        if not name.exact:
            from elir_cli.images.write import SUFFIX_FORMATS

            clash = [p for p in inputs if p.parent == key.parent and p.stem == key.name
                     and p.suffix.lower() in SUFFIX_FORMATS]
            if clash:
                raise UsageError(f"the output for {src} could replace the input {clash[0]}",
                                 hint="use another --suffix or output folder")


def expand_inputs(patterns: Sequence[str]) -> list[Path]:
    """Files, folders' direct image files and globs, in the given order, without repeats."""
    import glob

    seen: set[Path] = set()
    files: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise UsageError(f"no files match {pattern!r}", hint="check the pattern (quote it to let elir expand it)")
        for match in matches:
            path = Path(match)
            if not path.exists():
                raise UsageError(f"no such file: {path}", hint="check the name (quote globs to let elir expand them)")
            if path.is_dir():
                raise UsageError(f"{path} is a folder", hint=f"use: elir batch {path} -o OUT")
            key = path.resolve()
            if key not in seen:
                seen.add(key)
                files.append(path)
    return files
