"""Restore a video: decode -> restore -> encode, three stages joined by bounded queues.

The decoder thread turns frames into RGB arrays, the calling thread restores
them (:mod:`.frames`), the encoder thread writes them into segments
(:mod:`.mux`, :mod:`.segments`). Each queue holds at most
``queue_frames`` frames, so memory depends on the frame size, never on the
video's length; the frame count in the container's metadata is only used for
progress (it may be missing or wrong). When every segment is done they are
joined with the input's audio and subtitles into a temporary file that is then
renamed to the output: the output appears complete or not at all.
"""

from __future__ import annotations

import os
import queue
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from elir_cli.atomicwrite import same_file
from elir_cli.errors import ElirError, OutputExistsError, UsageError
from elir_cli.model.runtime import trim_cpu_heap
from elir_cli.registry.tasks import get_task

from .media import DEFAULT_CODEC, VideoError, VideoInfo, _ffmpeg_reason, container_format, open_input, \
    probe_video, require_av, resolve_encoder
from .detect import DETECT_EVERY
from .mux import EncodeOptions, FrameConverter, SegmentWriter, join
from .segments import SegmentManifest, Parts

if TYPE_CHECKING:
    from elir_cli.pipeline.restorer import PhotoRestorer
    from elir_cli.pipeline.settings import RestoreSettings

    from .frames import Restorer

DEFAULT_SEGMENT_SECONDS = 10.0
DEFAULT_QUEUE_FRAMES = 4
# FFmpeg's decoder threads: one. Decoding is a few ms a frame next to the
# model, and every extra thread competes with torch's OpenMP team for the cores.
DECODE_THREADS = 1
POLL_SECONDS = 0.1
# Free heap pages go back to the system every this many frames (and after each
# segment): see _Run's docstring. A trim costs a few ms, plus faulting in the
# pages the next frames allocate again.
TRIM_EVERY_FRAMES = 8
# Settings that do not change the video's bytes (they are left out of the resume key).
NOT_IN_KEY = ("ext", "quality", "suffix", "overwrite", "save_faces", "compare", "max_pixels")

Progress = Callable[[int, "int | None", float], None]  # frames done, frames expected (or None), fps


@dataclass(frozen=True)
class VideoOptions:
    """How the video is encoded and processed (the options photos do not have)."""

    codec: str = DEFAULT_CODEC
    crf: int | None = None
    preset: str | None = None
    tracking: bool = True
    segment_seconds: float = DEFAULT_SEGMENT_SECONDS
    queue_frames: int = DEFAULT_QUEUE_FRAMES
    detect_every: int = DETECT_EVERY  # frames between full-frame detections (crops around tracks between)

    def __post_init__(self) -> None:
        if self.crf is not None and not 0 <= self.crf <= 63:
            raise UsageError(f"--crf must be between 0 and 63, got {self.crf}")
        if self.segment_seconds <= 0:
            raise UsageError(f"segment length must be positive, got {self.segment_seconds}")
        if self.queue_frames < 1:
            raise UsageError(f"queue_frames must be >= 1, got {self.queue_frames}")
        if self.detect_every < 1:
            raise UsageError(f"detect_every must be >= 1, got {self.detect_every}")


@dataclass
class VideoRecord:
    """What happened to one video (for --json and --report)."""

    input: str
    output: str | None = None
    status: str = "pending"  # restored | skipped | failed
    error: str | None = None
    hint: str | None = None
    frames: int = 0
    frames_expected: int | None = None
    resumed_at_frame: int = 0
    faces_per_frame: list[int] = field(default_factory=list)
    tracks: list[dict[str, Any]] = field(default_factory=list)
    scene_cuts: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    fps: float | None = None
    seconds: float | None = None
    video: dict[str, Any] = field(default_factory=dict)
    encode: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def faces(self) -> int:
        return max(self.faces_per_frame, default=0)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _Stopped(Exception):
    """Another stage failed or the run was interrupted."""


class _End:
    def __init__(self, tracker_state: dict[str, Any] | None = None) -> None:
        self.tracker_state = tracker_state


def restore_video(src: str | os.PathLike[str], dst: str | os.PathLike[str], *,
                  settings: "RestoreSettings | None" = None, options: VideoOptions | None = None,
                  files: "PhotoRestorer | None" = None, restorer: "Restorer | None" = None,
                  on_progress: Progress | None = None) -> VideoRecord:
    """Restore the video ``src`` into ``dst`` (container from its name); returns the record.

    ``settings`` are the photo settings (task, faces, upscale, background,
    precision, seed; ``overwrite`` starts over instead of resuming);
    ``options`` the video ones (codec, crf, preset, tracking). ``files`` is a
    loaded :class:`~elir_cli.pipeline.restorer.PhotoRestorer` to reuse;
    ``restorer`` plugs in a crop restorer instead of the model. Raises
    :class:`~elir_cli.errors.ElirError` on failure; the input is never written.
    """
    from elir_cli.pipeline.restorer import PhotoRestorer
    from elir_cli.pipeline.settings import RestoreSettings

    src, dst = Path(src), Path(dst)
    settings = settings or (files.settings if files is not None else RestoreSettings())
    options = options or VideoOptions()
    started = time.perf_counter()
    if not src.is_file():
        raise VideoError(f"no such file: {src}")
    if dst.exists() and same_file(src, dst):
        raise UsageError(f"output {dst} is the input; refusing to replace it", hint="choose another output name")
    container = container_format(dst)
    require_av()
    encode = EncodeOptions(container=container, encoder=resolve_encoder(options.codec), crf=options.crf,
                           preset=options.preset)
    encode.codec_options()  # option errors now, not after the first segment
    if dst.exists() and not settings.overwrite:
        raise OutputExistsError(f"output {dst} already exists",
                                hint="pass --overwrite to replace it, or choose another name")
    info = probe_video(src)
    record = VideoRecord(input=str(src), frames_expected=info.frames_estimate, encode=encode.to_json(),
                         video={"width": info.width, "height": info.height, "rate": str(info.rate),
                                "time_base": str(info.time_base), "rotation": info.rotation,
                                "duration": info.duration, "audio": info.audio, "subtitles": info.subtitles,
                                "variable_rate": info.variable_rate})
    if info.variable_rate:
        record.warnings.append("variable frame rate: every frame keeps its own timestamp")
    if settings.min_faithfulness is not None:
        record.warnings.append("the faithfulness guard is not applied to videos (fidelity changing face by face "
                               "would flicker); each face track's scores are in the record")
    files = files or PhotoRestorer(settings)
    segment_frames = max(1, round(options.segment_seconds * float(info.rate)))
    stat = src.stat()
    key = {"input": {"path": str(src.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns},
           "settings": {k: v for k, v in asdict(settings).items() if k not in NOT_IN_KEY},
           "tracking": options.tracking, "detect_every": options.detect_every, "encode": encode.to_json(),
           "segment_frames": segment_frames,
           "plug_in": restorer is not None}
    parts = Parts(dst)
    if settings.overwrite:
        parts.reset()
    manifest = parts.load(key)
    if manifest is None:
        if parts.exists():
            record.warnings.append(f"discarded the unfinished parts in {parts.folder} (another input or settings)")
            parts.reset()
        manifest = SegmentManifest(key=key, segment_frames=segment_frames)
    record.resumed_at_frame = manifest.frames_done

    from elir_cli.model.runtime import tune_cpu_allocator

    tune_cpu_allocator()  # frame-sized arrays every frame: keep freed memory (also with a plug-in restorer)
    t0 = time.perf_counter()
    if restorer is None:
        files.prepare()  # load before the stages start: a missing download fails before any frame
    elif get_task(settings.task).kind == "face" and not settings.aligned:
        _ = files.detector
    load_seconds = time.perf_counter() - t0
    run = _Run(info, files, options, encode, parts, manifest, restorer, on_progress)
    run.go()
    if manifest.frames_done == 0:
        raise VideoError(f"{src} has no frame that could be decoded", hint="the file is damaged or truncated")
    t0 = time.perf_counter()
    segments = [parts.folder / s["file"] for s in manifest.segments]
    record.warnings.extend(_join_atomically(segments, info, dst, container, overwrite=settings.overwrite))
    join_seconds = time.perf_counter() - t0
    parts.remove()
    record.output = str(dst)
    record.status = "restored"
    record.frames = manifest.frames_done
    record.faces_per_frame = list(manifest.faces_per_frame)
    tracker = run.frames.tracker
    record.tracks = tracker.summaries() if run.frames.detects and options.tracking else []
    record.scene_cuts = tracker.cuts
    record.seconds = round(time.perf_counter() - started, 3)
    done_now = manifest.frames_done - record.resumed_at_frame
    record.fps = round(done_now / run.wall, 3) if run.wall > 0 and done_now else None
    record.timings = {**run.frames.timings.to_json(), "decode": round(run.decode_seconds, 3),
                      "encode": round(run.encode_seconds, 3), "decode_cpu": round(run.decode_cpu, 3),
                      "encode_cpu": round(run.encode_cpu, 3), "first_frame_wait": round(run.first_wait, 3),
                      "encode_tail": round(run.tail, 3), "load": round(load_seconds, 3),
                      "join": round(join_seconds, 3),
                      "stages_wall": round(run.wall, 3), "total": record.seconds}
    return record


def _join_atomically(segments: list[Path], info: VideoInfo, dst: Path, container: str, *, overwrite: bool) -> list[str]:
    temp = dst.parent / f".{dst.name}.{secrets.token_hex(6)}.tmp{dst.suffix}"
    try:
        notes = join(segments, info, temp, container, name=str(dst))
        if overwrite:
            os.replace(temp, dst)
        else:
            try:
                os.link(temp, dst)
            except FileExistsError:
                raise OutputExistsError(f"output {dst} already exists",
                                        hint="pass --overwrite to replace it, or choose another name") from None
            except OSError:
                os.replace(temp, dst)
    except OSError as exc:
        raise VideoError(f"cannot write {dst}: {exc.strerror or exc}", hint="check the free disk space") from None
    finally:
        if temp.exists():
            temp.unlink()
    return notes


class _Run:
    """The three stages of one run, from the manifest's first unfinished frame.

    Heap: every thread allocates from one glibc heap that is never trimmed
    (:func:`~elir_cli.model.runtime.tune_cpu_allocator`). Frame-sized arrays
    allocated and freed every frame, and an encoder opened afresh for every
    segment (x264 holds ~45 frames of lookahead: 7 MB each at 1080p), land in
    changing places, so without trimming the resident heap grew with the
    video's length (1080p, stand-in restorer: peak 1.37 GB after 10 s, 1.55 GB
    after 20 s, 1.68 GB after 40 s) while the memory in use stayed flat. The
    encoder stage gives the heap's free pages back every
    :data:`TRIM_EVERY_FRAMES` frames and after each segment.
    """

    def __init__(self, info: VideoInfo, files: "PhotoRestorer", options: VideoOptions, encode: EncodeOptions,
                 parts: Parts, manifest: SegmentManifest, restorer: "Restorer | None", on_progress: Progress | None) -> None:
        from .frames import FrameRestorer
        from .tracking import FaceTracker

        self.info, self.options, self.encode, self.parts, self.manifest = info, options, encode, parts, manifest
        tracker = FaceTracker.from_state(manifest.tracker) if manifest.tracker else FaceTracker()
        self.frames = FrameRestorer(files, tracking=options.tracking, restorer=restorer, tracker=tracker,
                                    detect_every=options.detect_every)
        self.on_progress = on_progress
        self.stop = threading.Event()
        self.inbox: queue.Queue[Any] = queue.Queue(maxsize=options.queue_frames)
        self.outbox: queue.Queue[Any] = queue.Queue(maxsize=options.queue_frames)
        self.errors: list[BaseException] = []
        self.decode_seconds = 0.0
        self.encode_seconds = 0.0
        self.decode_cpu = 0.0  # CPU seconds of the decoder thread (taken from the cores the model uses)
        self.encode_cpu = 0.0  # the same for the encoder thread (x264 runs in it: mux.ENCODE_THREADS)
        self.wall = 0.0
        self.restore_ended = 0.0
        self.first_wait = 0.0  # the restore stage waiting for the first decoded frame
        self.tail = 0.0  # after the last frame was restored: the encoder flushing its last frames

    def go(self) -> None:
        start = self.manifest.frames_done
        threads = [threading.Thread(target=self._guard, args=(self._decode, start), name="elir-decode", daemon=True),
                   threading.Thread(target=self._guard, args=(self._encode,), name="elir-encode", daemon=True)]
        began = time.perf_counter()
        for thread in threads:
            thread.start()
        try:
            self._restore(start)
        except _Stopped:
            pass
        except BaseException:
            self.stop.set()
            raise
        finally:
            if self.errors or not threads[1].is_alive():
                self.stop.set()
            for thread in threads:
                while thread.is_alive():
                    thread.join(POLL_SECONDS)
                    if self.errors:
                        self.stop.set()
            ended = time.perf_counter()
            self.wall = ended - began
            if self.restore_ended:
                self.tail = ended - self.restore_ended
        if self.errors:
            raise self.errors[0]

    def _guard(self, target: Callable[..., None], *args: Any) -> None:
        try:
            target(*args)
        except _Stopped:
            pass
        except BaseException as exc:  # handed to the calling thread, which raises it
            self.errors.append(exc)
            self.stop.set()

    def _put(self, box: "queue.Queue[Any]", item: Any) -> None:
        while True:
            if self.stop.is_set():
                raise _Stopped
            try:
                box.put(item, timeout=POLL_SECONDS)
                return
            except queue.Full:
                continue

    def _get(self, box: "queue.Queue[Any]") -> Any:
        while True:
            if self.stop.is_set():
                raise _Stopped
            try:
                return box.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue

    # -- stage 1: decode -----------------------------------------------------------
    def _decode(self, start: int) -> None:
        av = require_av()
        info = self.info
        step = 1.0 / float(info.rate)
        converter = FrameConverter(info)
        try:
            with open_input(info.path) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                stream.codec_context.thread_count = DECODE_THREADS
                t0 = time.perf_counter()
                c0 = time.thread_time()
                for index, frame in enumerate(container.decode(stream)):
                    if index < start:
                        continue
                    rgb = converter.rgb(frame)
                    seconds = float(frame.time) if frame.time is not None else index * step
                    pts = frame.pts if frame.pts is not None else round(index * step / info.time_base)
                    self.decode_seconds += time.perf_counter() - t0
                    self.decode_cpu += time.thread_time() - c0
                    self._put(self.inbox, (index, pts, seconds, rgb))
                    t0 = time.perf_counter()
                    c0 = time.thread_time()
        except av.error.FFmpegError as exc:
            raise VideoError(f"cannot decode {info.path}: {_ffmpeg_reason(exc)}",
                             hint="the file is damaged or truncated") from None
        self._put(self.inbox, _End())

    # -- stage 2: restore (the calling thread, which owns the model) ---------------------
    def _restore(self, start: int) -> None:
        seg = self.manifest.segment_frames
        default_dt = 1.0 / float(self.info.rate)
        tracker = self.frames.tracker
        began = time.perf_counter()
        done = 0
        expected = self.info.frames_estimate
        while True:
            item = self._get(self.inbox)
            if done == 0:
                self.first_wait = time.perf_counter() - began
            if isinstance(item, _End):
                self._put(self.outbox, _End(tracker.state()))
                self.restore_ended = time.perf_counter()
                return
            index, pts, seconds, rgb = item
            result = self.frames.restore(rgb, time_s=seconds, frame=index, default_dt=default_dt)
            snapshot = tracker.state() if (index + 1) % seg == 0 else None
            self._put(self.outbox, (index, pts, result.rgb, result.faces, snapshot))
            done += 1
            if self.on_progress is not None:
                elapsed = time.perf_counter() - began
                self.on_progress(index + 1, expected, done / elapsed if elapsed > 0 else 0.0)

    # -- stage 3: encode into segments --------------------------------------------------
    def _encode(self) -> None:
        writer: SegmentWriter | None = None
        seg_index = len(self.manifest.segments)
        first = faces = None
        last_pts: int | None = None
        written = 0
        try:
            while True:
                item = self._get(self.outbox)
                if isinstance(item, _End):
                    if writer is not None:
                        t0, c0 = time.perf_counter(), time.thread_time()
                        self._finish(writer, seg_index, first, faces, item.tracker_state)
                        self.encode_seconds += time.perf_counter() - t0
                        self.encode_cpu += time.thread_time() - c0
                    return
                index, pts, rgb, n_faces, snapshot = item
                t0 = time.perf_counter()
                c0 = time.thread_time()
                if writer is None:
                    self.parts.folder.mkdir(parents=True, exist_ok=True)
                    writer = SegmentWriter(self.parts.temp_path(seg_index), self.info, self.encode,
                                           (rgb.shape[1], rgb.shape[0]))
                    first, faces = index, []
                if last_pts is not None and pts <= last_pts:
                    pts = last_pts + 1  # a repeated timestamp would stop the muxer
                last_pts = pts
                self._write(writer, rgb, pts)
                written += 1
                if written % TRIM_EVERY_FRAMES == 0:
                    trim_cpu_heap()
                faces.append(n_faces)  # type: ignore[union-attr]
                if snapshot is not None:
                    self._finish(writer, seg_index, first, faces, snapshot)
                    writer, seg_index = None, seg_index + 1
                self.encode_seconds += time.perf_counter() - t0
                self.encode_cpu += time.thread_time() - c0
        finally:
            if writer is not None and (self.stop.is_set() or self.errors):
                writer.abort()
                self.parts.temp_path(seg_index).unlink(missing_ok=True)

    def _write(self, writer: SegmentWriter, rgb: np.ndarray, pts: int) -> None:
        av = require_av()
        try:
            writer.write(rgb, pts)
        except (av.error.FFmpegError, OSError) as exc:
            raise _write_error(writer.path, exc) from None

    def _finish(self, writer: SegmentWriter, seg_index: int, first: int | None, faces: list[int] | None,
                tracker_state: dict[str, Any] | None) -> None:
        av = require_av()
        try:
            writer.close()
        except (av.error.FFmpegError, OSError) as exc:
            raise _write_error(writer.path, exc) from None
        trim_cpu_heap()  # the closed encoder's buffers: see _Run's docstring
        final = self.parts.segment_path(seg_index)
        os.replace(writer.path, final)
        self.manifest.segments.append({"file": final.name, "first": first, "frames": len(faces or [])})
        self.manifest.faces_per_frame.extend(faces or [])
        self.manifest.tracker = tracker_state
        self.parts.save(self.manifest)


def _write_error(path: Path, exc: BaseException) -> ElirError:
    reason = getattr(exc, "strerror", None) or str(exc)
    return VideoError(f"cannot write {path}: {str(reason).splitlines()[0][:200]}",
                      hint="free some disk space, then run the same command again to resume")
