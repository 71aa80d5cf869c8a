"""The parts folder beside the output: finished segments and a manifest, for resuming.

``out.mp4`` is built in ``.out.mp4.elir-parts/``: ``seg00000.mp4``, ... and
``manifest.json``. A segment is renamed into place only once it is complete,
and the manifest (written atomically after each segment) lists the finished
segments with the tracker's state after the last of them, so a killed run
continues at the first unfinished segment, exactly as if it had never
stopped. The manifest also holds a key of the input (size, mtime) and of every
setting that decides the output: parts made from another input or with other
settings are never reused.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from elir_cli.atomicwrite import write_bytes_atomic

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
PARTS_SUFFIX = ".elir-parts"


def parts_dir(output: Path) -> Path:
    return output.parent / f".{output.name}{PARTS_SUFFIX}"


@dataclass
class SegmentManifest:
    key: dict[str, Any]
    segment_frames: int
    segments: list[dict[str, Any]] = field(default_factory=list)  # {"file", "first", "frames"}
    tracker: dict[str, Any] | None = None
    faces_per_frame: list[int] = field(default_factory=list)

    @property
    def frames_done(self) -> int:
        return sum(int(s["frames"]) for s in self.segments)

    def to_json(self) -> dict[str, Any]:
        return {"version": MANIFEST_VERSION, "key": self.key, "segment_frames": self.segment_frames,
                "segments": self.segments, "tracker": self.tracker, "faces_per_frame": self.faces_per_frame}


class Parts:
    """The parts folder of one output."""

    def __init__(self, output: Path) -> None:
        self.folder = parts_dir(output)
        self.suffix = output.suffix.lower()

    def segment_path(self, index: int) -> Path:
        return self.folder / f"seg{index:05d}{self.suffix}"

    def temp_path(self, index: int) -> Path:
        return self.folder / f".seg{index:05d}.partial{self.suffix}"

    def load(self, key: dict[str, Any]) -> SegmentManifest | None:
        """The manifest of an earlier run of the same input and settings, or None."""
        path = self.folder / MANIFEST
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if data.get("version") != MANIFEST_VERSION or data.get("key") != key:
            return None
        manifest = SegmentManifest(key=key, segment_frames=int(data["segment_frames"]), segments=data["segments"],
                            tracker=data["tracker"], faces_per_frame=data["faces_per_frame"])
        if not all((self.folder / s["file"]).is_file() for s in manifest.segments):
            return None
        return manifest

    def exists(self) -> bool:
        return self.folder.exists()

    def reset(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def save(self, manifest: SegmentManifest) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        data = json.dumps(manifest.to_json()).encode() + b"\n"
        write_bytes_atomic(self.folder / MANIFEST, data, overwrite=True)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
