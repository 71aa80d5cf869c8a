"""A files job: the photos and videos a user names, each next to itself or into one output.

:class:`FilesJob` owns what ``elir restore FILE... [-o OUT]`` does besides
showing it: where each output goes (:func:`~elir_cli.pipeline.files.output_name_for`),
the checks before any work (outputs that collide or would replace an input,
a file given as the output of several inputs, bad video options, videos
that cannot be opened), which inputs are videos (by content), loading the
models only when something is left to do, and the records::

    from elir_cli import FilesJob, RestoreSettings

    result = FilesJob(["old.jpg", "clip.mp4"], "restored/", RestoreSettings(seed=1)).run()
    print([record.status for record in result.records])

Standard input and output are the command line's (``elir restore - > out.png``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from elir_cli.errors import UsageError
from elir_cli.pipeline.files import check_destinations, output_name_for
from elir_cli.pipeline.restorer import PhotoRestorer
from elir_cli.pipeline.settings import RestoreSettings

from .videos import Progress, check_video_options, is_video, restore_one, unreadable, video_output

VIDEO_SETTINGS = ("codec", "crf", "preset", "tracking")  # the video options a report records


@dataclass
class FilesResult:
    """One record per input, in the given order, and the settings a report records."""

    records: list[Any]
    settings: dict[str, Any]

    @property
    def ok(self) -> bool:
        return not any(record.status == "failed" for record in self.records)


@dataclass
class FilesJob:
    """Restore ``inputs`` (photos and videos) next to themselves, or into ``output`` (a file for one
    input, else a folder). Creating the job checks everything that can be checked before loading."""

    inputs: Sequence["str | Path"]
    output: str | None = None
    settings: RestoreSettings = field(default_factory=RestoreSettings)
    video: Any = None  # VideoOptions (default: h264, tracking on)

    def __post_init__(self) -> None:
        self.inputs = [Path(src) for src in self.inputs]
        many = len(self.inputs) > 1
        if self.output is not None and many and Path(self.output).exists() and not Path(self.output).is_dir():
            raise UsageError(f"{self.output} is a file but there are {len(self.inputs)} inputs",
                             hint="give a folder with -o")
        self.videos = [src for src in self.inputs if is_video(src)]
        self.names = {src: output_name_for(src, out=self.output, suffix=self.settings.suffix, many=many)
                      for src in self.inputs}
        check_destinations([(src, name) for src, name in self.names.items() if src not in self.videos])
        if self.videos:
            check_video_options(self.video_options())  # option errors (and a missing PyAV) before loading
        self.unreadable = {src: record for src in self.videos if (record := unreadable(src)) is not None}
        self.current: Path | None = None  # the input being restored (for a caller's Ctrl-C message)

    def video_options(self) -> Any:
        from elir_cli.video.stream import VideoOptions

        return self.video or VideoOptions()

    def needs_model(self, restorer: PhotoRestorer) -> bool:
        """Whether anything is left to restore (False: every photo's output exists, no video can be read)."""
        return any(src not in self.unreadable for src in self.videos) or any(
            restorer.needs_model(self.names[src]) for src in self.inputs if src not in self.videos)

    def run(self, *, log: Callable[[str], None] | None = None, on_done: Callable[[Any], None] | None = None,
            progress_for: Callable[[Path], Progress | None] | None = None,
            on_start: Callable[[PhotoRestorer, bool], None] | None = None) -> FilesResult:
        """Restore every input in order; a failure is a record, the rest go on.

        ``on_done(record)`` after each input; ``progress_for(video)`` gives a
        video's frame progress callback; ``on_start(restorer, loads)`` before
        the first input (``loads`` False: nothing is loaded, torch included).
        """
        restorer = PhotoRestorer(self.settings, log=log)
        restorer.start(self.needs_model(restorer), announce=on_start)
        records = []
        for src in self.inputs:
            self.current = src
            name = self.names[src]
            if src in self.unreadable:
                record = self.unreadable[src]
            elif src in self.videos:
                record = restore_one(src, video_output(src, name.path, name.exact), restorer, self.video_options(),
                                     on_progress=progress_for(src) if progress_for is not None else None)
            else:
                record, _ = restorer.restore_file(src, name)
            records.append(record)
            if on_done is not None:
                on_done(record)
        self.current = None
        return FilesResult(records=records, settings=self._described(restorer))

    def _described(self, restorer: PhotoRestorer) -> dict[str, Any]:
        if not self.videos:
            return restorer.describe()
        readable = len(self.unreadable) < len(self.inputs)
        options = self.video_options()
        return {**(restorer.describe() if readable else {"task": self.settings.task}),
                "video": {name: getattr(options, name) for name in VIDEO_SETTINGS}}
