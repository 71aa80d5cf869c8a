"""Which inputs are videos (by content, never by name), where their outputs go, and restoring them.

Photos go through :class:`~elir_cli.pipeline.restorer.PhotoRestorer`; a
video is streamed by :func:`elir_cli.video.stream.restore_video` with the
same loaded restorer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from elir_cli.errors import ElirError
from elir_cli.images.read import is_image_file, is_image_or_claims_to_be
from elir_cli.pipeline.batch import SKIPPED_HINT, BatchItem
from elir_cli.pipeline.restorer import PhotoRestorer
from elir_cli.video.media import CONTAINERS, is_video_file

DEFAULT_VIDEO_SUFFIX = ".mkv"  # for inputs whose name has no container we write

Progress = Callable[[int, "int | None", float], None]


def is_video(path: Path) -> bool:
    """Not an image, and a media container by its first bytes (never by its name)."""
    return not is_image_file(path) and is_video_file(path)


def is_image_or_video(path: Path) -> bool:
    """What a folder job takes: images and videos by content, and files whose name says image."""
    return is_image_or_claims_to_be(path) or is_video_file(path)


def video_output(src: Path, name: Path, exact: bool) -> Path:
    """The output file of a video: ``name`` as given, or with the input's container suffix."""
    if exact:
        return name
    suffix = src.suffix.lower() if src.suffix.lower() in CONTAINERS else DEFAULT_VIDEO_SUFFIX
    return name.with_name(name.name + suffix)


def unreadable(src: Path) -> Any:
    """A failed record if ``src`` cannot be opened as a video (checked before loading the model), else None."""
    from elir_cli.video.media import probe_video
    from elir_cli.video.stream import VideoRecord

    try:
        probe_video(src)
    except ElirError as exc:
        return VideoRecord(input=str(src), status="failed", error=exc.message, hint=exc.hint)
    return None


def check_video_options(options: Any) -> None:
    """Raise the one-line error of a bad codec, preset or crf, or of a missing PyAV, now (before any model)."""
    from elir_cli.video.media import resolve_encoder
    from elir_cli.video.mux import EncodeOptions

    EncodeOptions(container="matroska", encoder=resolve_encoder(options.codec), crf=options.crf,
                  preset=options.preset).codec_options()


def restore_one(src: Path, dst: Path, restorer: PhotoRestorer, options: Any, *,
                on_progress: Progress | None = None) -> Any:
    """Restore one video; an ElirError becomes a failed record (Ctrl-C is the caller's)."""
    from elir_cli.video.stream import VideoRecord, restore_video

    try:
        return restore_video(src, dst, files=restorer, options=options, on_progress=on_progress)
    except ElirError as exc:
        return VideoRecord(input=str(src), status="failed", error=exc.message, hint=exc.hint)


def video_items(restorer: PhotoRestorer, options: Any, *,
                progress_for: Callable[[Path], Progress | None] | None = None) -> Callable[[BatchItem], Any]:
    """``run_batch``'s ``restore_item``: videos here (skipped when done), photos (None) to the photo path."""
    from elir_cli.video.stream import VideoRecord

    def restore_item(item: BatchItem) -> Any:
        if not is_video(item.src):
            return None
        dst = video_output(item.src, item.output.path, exact=False)
        if dst.exists() and not restorer.settings.overwrite:
            return VideoRecord(input=str(item.src), output=str(dst), status="skipped", hint=SKIPPED_HINT)
        return restore_one(item.src, dst, restorer, options,
                           on_progress=progress_for(item.src) if progress_for is not None else None)

    return restore_item
