"""A folder job: every photo and video under a folder, restored on this machine or on Ray.

:class:`FolderJob` owns what ``elir batch`` does besides showing it: the
checks on the options, the plan (the input tree mirrored under the output,
by content), the local or Ray engine, videos after the photos on Ray (a
video is one long stream, resumed by its own checkpoints), resume (existing
outputs are skipped) and the summary that reports are written from::

    from elir_cli.runner import FolderJob

    result = FolderJob("scans/", "restored/", RestoreSettings(seed=1)).run()
    print(result.summary.count("restored"), result.summary.ok)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from elir_cli.errors import ElirError, UsageError
from elir_cli.pipeline.batch import BatchItem, BatchSummary, plan_batch, run_batch
from elir_cli.pipeline.photo import Restorer as CropRestorer
from elir_cli.pipeline.restorer import PhotoRestorer
from elir_cli.pipeline.settings import RestoreSettings

from .videos import Progress, check_video_options, is_image_or_video, is_video, video_items, video_output

LOCAL, RAY = "local", "ray"
Log = Callable[[str], None]


@dataclass
class FolderResult:
    """The summary (records in plan order), the settings a report records, and an error that stopped the job."""

    summary: BatchSummary
    settings: dict[str, Any]
    error: ElirError | None = None


@dataclass
class FolderJob:
    """Restore every image and video under ``src`` into ``dst`` (folders, or URLs with the Ray engine).

    ``video``: the video options (:class:`~elir_cli.video.stream.VideoOptions`;
    default: h264, tracking on). ``engine``: ``"local"`` or ``"ray"`` with
    ``ray`` (:class:`~elir_cli.distributed.RayOptions`). ``restorer``: a crop
    restorer used instead of loading ELIR, on the local engine (as
    :class:`~elir_cli.pipeline.restorer.PhotoRestorer`'s ``restorer``).
    Creating the job checks the options; :meth:`plan` finds the files;
    :meth:`run` restores them (a rerun skips finished outputs).
    """

    src: str
    dst: str
    settings: RestoreSettings = field(default_factory=lambda: RestoreSettings(suffix=""))
    video: Any = None
    engine: str = LOCAL
    ray: Any = None
    restorer: CropRestorer | None = None

    def __post_init__(self) -> None:
        if self.engine not in (LOCAL, RAY):
            raise UsageError(f"unknown engine {self.engine!r}", option="engine", value=self.engine,
                             hint="choose local or ray")
        if self.engine == RAY and self.restorer is not None:
            raise UsageError("a plug-in restorer runs on the local engine only; Ray workers load ELIR",
                             option="engine", value=self.engine, hint="use the local engine")
        from elir_cli.distributed.cluster import RayOptions, is_url

        if self.engine == LOCAL and self.ray is not None and self.ray != RayOptions():
            given = [name for name in ("address", "num_model_workers", "cpus_per_worker", "gpus_per_worker")
                     if getattr(self.ray, name) != getattr(RayOptions(), name)]
            names = ", ".join("{" + _RAY_OPTION[name] + "}" for name in given)
            raise UsageError(f"{names} {'needs' if len(given) == 1 else 'need'} {{engine}} ray",
                             option=_RAY_OPTION[given[0]], value=getattr(self.ray, given[0]),
                             mentions=tuple(_RAY_OPTION[name] for name in given) + ("engine",),
                             hint="add {engine} ray, or drop them")
        urls = [where for where in (self.src, self.dst) if is_url(where)]
        if urls and self.engine == LOCAL:
            raise UsageError(f"{urls[0]} is a URL; the local engine reads and writes folders on this machine",
                             option="engine", value=self.engine, mentions=("engine",),
                             hint="add {engine} ray (it reads and writes s3://, gs://, ... URLs), or give a "
                                  "local folder")
        if urls and (self.settings.compare or self.settings.save_faces):
            raise UsageError("{compare} and {save_faces} write next to local outputs; not with URL folders",
                             option="compare" if self.settings.compare else "save_faces", value=True,
                             mentions=("compare", "save_faces"), hint="drop them, or restore into a local folder")
        self._urls = bool(urls)
        self._items: Any = None

    # -- planning --------------------------------------------------------------
    def plan(self) -> Any:
        """The files to restore (a list of :class:`BatchItem`, or a storage plan for URL folders)."""
        if self._items is None:
            if self._urls:
                from elir_cli.distributed import plan_storage

                self._items = plan_storage(self.src, self.dst, suffix=self.settings.suffix)  # images only
            else:
                self._items = plan_batch(Path(self.src), Path(self.dst), suffix=self.settings.suffix,
                                         include=is_image_or_video)
                if self.videos:
                    check_video_options(self.video_options())
        return self._items

    @property
    def total(self) -> int:
        items = self.plan()
        return len(items.items) if self._urls else len(items)

    @property
    def videos(self) -> list[BatchItem]:
        return [] if self._urls else [item for item in self.plan() if is_video(item.src)]

    def video_options(self) -> Any:
        from elir_cli.video.stream import VideoOptions

        return self.video or VideoOptions()

    def needs_model(self, restorer: PhotoRestorer) -> bool:
        """Whether any output is missing (False: a finished job, run again; nothing is loaded)."""
        items = self.plan()
        return self._urls or any(restorer.needs_model(item.output) for item in items)

    # -- running ---------------------------------------------------------------
    def run(self, *, log: Log | None = None, on_done: Callable[[Any], None] | None = None,
            progress_for: Callable[[Path], Progress | None] | None = None,
            on_start: Callable[[PhotoRestorer, bool], None] | None = None) -> FolderResult:
        """Restore the plan; per-file failures are records, Ctrl-C stops with ``summary.interrupted``.

        ``on_done(record)`` after each file; ``progress_for(video)`` gives a
        video's frame progress callback; ``on_start(restorer, loads)`` before
        the first file on the local engine (``loads`` False: every output
        exists already and nothing is loaded), to say where it runs.
        """
        say = log or (lambda message: None)
        items = self.plan()
        if self.engine == RAY:
            return self._on_ray(items, say, on_done, progress_for)
        restorer = PhotoRestorer(self.settings, log=say, restorer=self.restorer)
        summary = self._restore_here(restorer, items, loads=self.needs_model(restorer), on_done=on_done,
                                     progress_for=progress_for, on_start=on_start)
        return FolderResult(summary=summary, settings=restorer.describe())

    def _restore_here(self, restorer: PhotoRestorer, items: list[BatchItem], *, loads: bool,
                      on_done: Callable[[Any], None] | None, progress_for: Callable[[Path], Progress | None] | None,
                      on_start: Callable[[PhotoRestorer, bool], None] | None = None) -> BatchSummary:
        """``items`` on this machine, photos and videos; the models are loaded first when ``loads``."""
        restorer.start(loads, announce=on_start)
        hook = video_items(restorer, self.video_options(), progress_for=progress_for)
        return run_batch(restorer, items, on_done=on_done, restore_item=hook)

    def _on_ray(self, items: Any, say: Log, on_done: Callable[[Any], None] | None,
                progress_for: Callable[[Path], Progress | None] | None) -> FolderResult:
        """Photos on Ray; then the videos, if any, with the local engine on this machine."""
        from elir_cli.distributed import RayOptions, run_ray_batch

        videos = self.videos
        moving_ones = set(videos)
        photos = [item for item in items if item not in moving_ones] if videos else items
        result = run_ray_batch(self.settings, photos, self.ray or RayOptions(), log=say, on_done=on_done)
        if not videos or result.error is not None or result.summary.interrupted:
            return FolderResult(summary=result.summary, settings=result.settings, error=result.error)
        say(f"{len(videos)} video{'s' if len(videos) != 1 else ''}: restored by the local engine on this machine, "
            "after the photos (a video is one long stream, resumed by its own checkpoints)")
        restorer = PhotoRestorer(self.settings, log=say)
        loads = self.settings.overwrite or any(not video_output(item.src, item.output.path, exact=False).exists()
                                               for item in videos)
        moving = self._restore_here(restorer, videos, loads=loads, on_done=on_done, progress_for=progress_for)
        by_item = dict(zip(photos, result.summary.records))
        by_item.update(zip(videos, moving.records))
        summary = BatchSummary(records=[by_item[item] for item in items if item in by_item],
                               interrupted=moving.interrupted, seconds=result.summary.seconds + moving.seconds)
        return FolderResult(summary=summary, settings=result.settings)


# The Ray options by their field in RayOptions, as option names (the CLI's flags: --ray-address, ...).
_RAY_OPTION = {"address": "ray_address", "num_model_workers": "num_model_workers",
               "cpus_per_worker": "cpus_per_worker", "gpus_per_worker": "gpus_per_worker"}
