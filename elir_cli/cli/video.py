"""Video in ``elir restore`` and ``elir batch``: the video options, dispatch by content, progress.

Which inputs are videos is decided here, in the CLI layer (the pipeline never
imports the video layer): a file that is not an image and whose first bytes
are those of a media container. Photos go through the photo path unchanged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

VIDEO = "Video"
PROGRESS_EVERY_SECONDS = 2.0
DEFAULT_VIDEO_SUFFIX = ".mkv"  # for inputs whose name has no container we write

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

    def options(self):  # type: ignore[no-untyped-def]
        from elir_cli.video.stream import VideoOptions

        return VideoOptions(codec=self.codec, crf=self.crf, preset=self.preset, tracking=self.tracking)

    def check(self) -> None:
        """Raise the one-line error of a bad codec, preset or crf, or of a missing PyAV, now."""
        from elir_cli.video.media import resolve_encoder
        from elir_cli.video.mux import EncodeOptions

        self.options()
        EncodeOptions(container="matroska", encoder=resolve_encoder(self.codec), crf=self.crf,
                      preset=self.preset).codec_options()


def is_video(path: Path) -> bool:
    """Not an image, and a media container by its first bytes (never by its name)."""
    from elir_cli.images.read import is_image_file
    from elir_cli.video.media import is_video_file

    return not is_image_file(path) and is_video_file(path)


def is_image_or_video(path: Path) -> bool:
    """What a batch takes: images and videos by content, and files whose name says image."""
    from elir_cli.images.read import is_image_or_claims_to_be
    from elir_cli.video.media import is_video_file

    return is_image_or_claims_to_be(path) or is_video_file(path)


def video_output(src: Path, name: Path, exact: bool) -> Path:
    """The output file of a video: ``name`` as given, or with the input's container suffix."""
    from elir_cli.video.media import CONTAINERS

    if exact:
        return name
    suffix = src.suffix.lower() if src.suffix.lower() in CONTAINERS else DEFAULT_VIDEO_SUFFIX
    return name.with_name(name.name + suffix)


def unreadable(src: Path) -> Any:
    """A failed record if ``src`` cannot be opened as a video (checked before loading the model), else None."""
    from elir_cli.errors import ElirError
    from elir_cli.video.media import probe_video
    from elir_cli.video.stream import VideoRecord

    try:
        probe_video(src)
    except ElirError as exc:
        return VideoRecord(input=str(src), status="failed", error=exc.message, hint=exc.hint)
    return None


def restore_one(src: Path, dst: Path, restorer: Any, flags: VideoFlags, console: Any, *, show: bool) -> Any:
    """Restore one video; an ElirError becomes a failed record (the caller reports it)."""
    from elir_cli.errors import ElirError
    from elir_cli.video.stream import VideoRecord, restore_video

    progress = _progress_printer(console, src.name) if show else None
    try:
        return restore_video(src, dst, files=restorer, options=flags.options(), on_progress=progress)
    except ElirError as exc:
        return VideoRecord(input=str(src), status="failed", error=exc.message, hint=exc.hint)
    except KeyboardInterrupt:
        console.print(f"[yellow]Interrupted[/]: run the same command again to resume {src.name}.", force=True)
        raise


def batch_hook(restorer: Any, flags: VideoFlags, console: Any, *, show: bool
               ) -> Callable[[Any], Any]:
    """``run_batch``'s ``restore_item``: videos here, photos (None) to the photo path."""
    from elir_cli.pipeline.batch import SKIPPED_HINT
    from elir_cli.video.stream import VideoRecord

    def restore_item(item: Any) -> Any:
        if not is_video(item.src):
            return None
        dst = video_output(item.src, item.output.path, exact=False)
        if dst.exists() and not restorer.settings.overwrite:
            return VideoRecord(input=str(item.src), output=str(dst), status="skipped",
                               hint=SKIPPED_HINT)
        return restore_one(item.src, dst, restorer, flags, console, show=show)

    return restore_item


def _progress_printer(console: Any, name: str) -> Callable[[int, "int | None", float], None]:
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
