"""The worker: one thread that owns the loaded models, fed by a bounded queue.

Requests never touch a model: they put a :class:`Work` item on the queue
(a full queue raises :class:`QueueFull`, which the API answers with 429) and
wait on its future. The worker decodes the upload (the same pixel limit as
the CLI), restores it with the models it keeps loaded (at most
:data:`MAX_LOADED` model sets, least recently used dropped) and encodes the
result. So at most ``queue`` uploads and one decoded image are in memory at
once, whatever the number of clients.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable

from elir_cli.errors import ImageError
from elir_cli.model.runtime import tune_cpu_allocator
from elir_cli.registry.tasks import get_task

if TYPE_CHECKING:
    from elir_cli.pipeline.restorer import PhotoRestorer
    from elir_cli.pipeline.settings import RestoreSettings

MAX_LOADED = 2  # model sets (task + weights) one worker keeps loaded
STOP = None
MEDIA_TYPES = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp", "tiff": "image/tiff"}

StageCallback = Callable[[str, float], None]


class QueueFull(Exception):
    """The bounded queue has no room; try again later."""


@dataclass
class Work:
    settings: "RestoreSettings"
    data: bytes
    future: Future = field(default_factory=Future)
    on_stage: StageCallback | None = None
    load_only: bool = False  # --preload: load the models, restore nothing
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class Restored:
    """One restored image, encoded, and what was done to it."""

    data: bytes
    format: str  # png | jpg | webp | tiff
    size: tuple[int, int]
    faces: list[list[float]]
    warnings: list[str]
    timings: dict[str, float]  # seconds: queue, decode, restore, encode
    face_scores: list[dict[str, object]] = field(default_factory=list)  # per face, as RestoreResult.face_scores
    faithfulness: dict[str, object] | None = None  # the whole image's (whole-image work)

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.format]

    @property
    def suffix(self) -> str:
        from elir_cli.images.write import output_suffix

        return output_suffix(self.format)

    def summary(self) -> dict[str, object]:
        return {"format": self.format, "media_type": self.media_type, "size": list(self.size),
                "faces": len(self.faces), "face_boxes": self.faces, "face_scores": self.face_scores,
                "faithfulness": self.faithfulness, "warnings": self.warnings,
                "timings": {k: round(v, 4) for k, v in self.timings.items()}}


class RequestWorker:
    """``workers`` threads, each owning its models, taking work from one bounded queue."""

    def __init__(self, *, queue_size: int, max_pixels: int, workers: int = 1,
                 log: Callable[[str], None] | None = None) -> None:
        self.max_pixels = max_pixels
        self._queue: queue.Queue[Work | None] = queue.Queue(maxsize=queue_size)
        self._threads = [threading.Thread(target=self._loop, name=f"elir-worker-{i}", daemon=True)
                         for i in range(workers)]
        self._local = threading.local()
        self._log = log or (lambda message: None)
        self._started = False
        self._stopped = False
        self._lock = threading.Lock()
        self._busy = 0
        self._recent: list[float] = []  # seconds of the last few restorations, for Retry-After
        self.loaded: list[str] = []

    # -- life ------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        tune_cpu_allocator()  # one heap for every thread: see its docstring
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel queued work, let running work finish, and end the threads (once)."""
        with self._lock:
            if not self._started or self._stopped:
                return
            self._stopped = True
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not STOP:
                item.future.cancel()
        for _ in self._threads:
            self._queue.put(STOP)
        for thread in self._threads:
            thread.join(timeout)

    # -- work --------------------------------------------------------------------
    def submit(self, settings: "RestoreSettings", data: bytes, *, on_stage: StageCallback | None = None) -> Future:
        """Queue ``data`` for restoration with ``settings``; raises :class:`QueueFull`."""
        work = Work(settings=settings, data=data, on_stage=on_stage)
        try:
            self._queue.put_nowait(work)
        except queue.Full:
            raise QueueFull() from None
        return work.future

    def load(self, settings: "RestoreSettings") -> Future:
        """Load the models for ``settings`` in the worker (``--preload``); waits for room."""
        work = Work(settings=settings, data=b"", load_only=True)
        self._queue.put(work)
        return work.future

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    @property
    def busy(self) -> int:
        return self._busy

    def estimated_wait(self) -> float:
        """Seconds until a new item would start, from recent restorations."""
        recent = self._recent[-8:]
        each = sum(recent) / len(recent) if recent else 1.0
        return each * (self.waiting + self.busy) / max(1, len(self._threads))

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is STOP:
                return
            if not item.future.set_running_or_notify_cancel():
                continue  # cancelled while queued (timed out, or a deleted job)
            with self._lock:
                self._busy += 1
            started = time.perf_counter()
            try:
                if item.load_only:
                    self._restorer_for(item.settings)
                    result = None
                else:
                    result = self._restore(item)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
                item.future.set_exception(exc)
            else:
                item.future.set_result(result)
            finally:
                item.data = b""
                with self._lock:
                    self._busy -= 1
                    if not item.load_only:
                        self._recent = (self._recent + [time.perf_counter() - started])[-8:]

    def _restorer_for(self, settings: "RestoreSettings") -> "PhotoRestorer":
        """A restorer for ``settings`` over models this thread keeps loaded."""
        from elir_cli.pipeline.restorer import PhotoRestorer

        cache: OrderedDict[tuple, PhotoRestorer] = getattr(self._local, "cache", None) or OrderedDict()
        self._local.cache = cache
        key = settings.model_key()
        base = cache.get(key)
        if base is None:
            while len(cache) >= MAX_LOADED:
                cache.popitem(last=False)
            self._log(f"loading the {settings.task} model")
            base = PhotoRestorer(replace(settings, steps=None, seed=None), log=self._log)
            base.prepare()
            cache[key] = base
            self.loaded = sorted({k[0] for k in cache})
        cache.move_to_end(key)
        return base.sharing(settings)

    def _restore(self, item: Work) -> Restored:
        from elir_cli.images.read import make_output, read_image
        from elir_cli.images.write import choose_format, encode_image, format_losses

        stage = item.on_stage or (lambda name, progress: None)
        timings = {"queue": time.perf_counter() - item.enqueued}
        s = item.settings

        t = time.perf_counter()
        stage("decoding", 0.05)
        image = read_image(item.data, max_pixels=self.max_pixels)
        item.data = b""  # the upload is no longer needed
        width, height = image.size
        scale = s.upscale or get_task(s.task).scale
        if width * height * scale * scale > self.max_pixels:
            raise ImageError(f"the output would be {width * scale}x{height * scale}, over the server's limit of "
                             f"{self.max_pixels / 1e6:.0f} megapixels", hint="send a smaller image or a lower upscale")
        timings["decode"] = time.perf_counter() - t

        t = time.perf_counter()
        stage("restoring", 0.15)
        restorer = self._restorer_for(s)
        result = restorer.restore_decoded(image)
        timings["restore"] = time.perf_counter() - t

        t = time.perf_counter()
        stage("encoding", 0.9)
        output = make_output(image, result.array)
        fmt = choose_format(output, s.ext)
        data = encode_image(output, s.ext, quality=s.quality)
        timings["encode"] = time.perf_counter() - t
        warnings = list(image.warnings) + format_losses(output, fmt)
        faces = [[round(float(v), 1) for v in f.box] for f in result.faces]
        return Restored(data=data, format=fmt, size=output.size, faces=faces, warnings=warnings, timings=timings,
                        face_scores=result.face_scores(), faithfulness=result.image_score())


