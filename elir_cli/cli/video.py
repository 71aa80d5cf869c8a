"""Video in ``elir restore`` and ``elir batch``: the video options and progress on the terminal.

Which inputs are videos (by content) is the library's
(:mod:`elir_cli.runner.videos`); this module only shows it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Optional

import typer

VIDEO = "Video"
PROGRESS_EVERY_SECONDS = 2.0

Codec = Annotated[str, typer.Option("--codec", help="Video codec: h264, h265, vp9, av1 or a hardware encoder this FFmpeg has.", rich_help_panel=VIDEO)]
Crf = Annotated[Optional[int], typer.Option("--crf", min=0, max=63, help="Constant quality (lower is better; default visually lossless: 18 for h264).", rich_help_panel=VIDEO)]
Preset = Annotated[Optional[str], typer.Option("--preset", help="Encoder speed preset (h264/h265: ultrafast..veryslow; av1: 0..13).", rich_help_panel=VIDEO)]
Tracking = Annotated[bool, typer.Option("--tracking/--no-tracking", help="Track faces across frames and smooth their landmarks (against flicker).", rich_help_panel=VIDEO)]


@dataclass(frozen=True)
class VideoFlags:
    codec: str = "h264"
    crf: int | None = None
    preset: str | None = None
    tracking: bool = True

    def options(self) -> Any:
        from elir_cli.video.stream import VideoOptions

        return VideoOptions(codec=self.codec, crf=self.crf, preset=self.preset, tracking=self.tracking)

    def check(self) -> None:
        """Raise the one-line error of a bad codec, preset or crf, or of a missing PyAV, now."""
        from elir_cli.runner.videos import check_video_options

        check_video_options(self.options())


def progress_printer(console: Any, name: str) -> Callable[[int, "int | None", float], None]:
    """Frames done / total, fps and ETA on stderr, at most every few seconds."""
    last = [0.0]

    def show(done: int, total: int | None, fps: float) -> None:
        now = time.monotonic()
        if now - last[0] < PROGRESS_EVERY_SECONDS and (total is None or done < total):
            return
        last[0] = now
        text = f"{name}: frame {done}" + (f"/{total}" if total else "") + f", {fps:.2f} fps"
        if total and fps > 0 and done < total:
            eta = (total - done) / fps
            text += f", ETA {int(eta // 3600)}:{int(eta % 3600 // 60):02d}:{int(eta % 60):02d}"
        console.print(f"[dim]{text}[/]")

    return show


def report_video(console: Any, record: Any) -> None:
    from rich.markup import escape

    from .console import report_problems

    if not report_problems(console, record, note_label="Note") and record.status == "restored":
        resumed = f", resumed at frame {record.resumed_at_frame}" if record.resumed_at_frame else ""
        tracks = len(record.tracks)
        console.print(f"[green]Restored[/] {escape(record.input)} -> {escape(record.output or '')}, "
                      f"{record.frames} frame{'s' * (record.frames != 1)}, "
                      f"{tracks} face track{'s' * (tracks != 1)}{resumed}, {record.seconds:.1f} s")
