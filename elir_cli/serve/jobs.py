"""Asynchronous jobs: status, results on disk, expiry and a disk budget.

A job's result is written (atomically) into the jobs folder under a name made
from the job id alone; client file names never become paths. Finished
results expire ``ttl`` seconds after they finish; when a new result would
take the folder over its byte budget, the oldest finished results are
dropped first, and a result larger than the whole budget fails its job.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import threading
import time
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from elir_cli.atomicwrite import write_bytes_atomic
from elir_cli.errors import ElirError, first_line

from .worker import Restored

ID_BYTES = 16
SWEEP_EVERY = 5.0  # seconds between expiry sweeps (at most)
QUEUED, RUNNING, DONE, FAILED, CANCELLED, EXPIRED = "queued", "running", "done", "failed", "cancelled", "expired"


@dataclass
class Job:
    id: str
    created: float = field(default_factory=time.time)
    status: str = QUEUED
    stage: str = "queued"
    progress: float = 0.0
    finished: float | None = None
    error: str | None = None
    hint: str | None = None
    path: Path | None = None
    nbytes: int = 0
    result: dict[str, Any] | None = None
    media_type: str | None = None
    suffix: str = ""
    future: Future | None = None

    def to_json(self, ttl: float) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "status": self.status, "stage": self.stage,
                                "progress": round(self.progress, 3), "created": self.created,
                                "finished": self.finished}
        if self.finished is not None and self.status == DONE:
            data["expires"] = self.finished + ttl
            data["result_url"] = f"/v1/jobs/{self.id}/result"
        if self.result is not None:
            data["result"] = self.result
        if self.error is not None:
            data["error"], data["hint"] = self.error, self.hint
        return data


class JobLimit(Exception):
    """Too many jobs are held; try again later."""


class JobStore:
    """Jobs by id, their results in ``root``; thread-safe. ``clock`` gives the time (``time.time``:
    the API reports it) of each job's creation and end, and of each expiry sweep."""

    def __init__(self, root: Path | None, *, ttl: float, max_bytes: int, max_jobs: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="elir-serve-jobs-")) if root is None else Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.ttl, self.max_bytes, self.max_jobs = ttl, max_bytes, max_jobs
        self._jobs: dict[str, Job] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep_loop, name="elir-jobs-sweeper", daemon=True)
        self._sweeper.start()

    # -- the API's verbs -----------------------------------------------------------
    def create(self) -> Job:
        with self._lock:
            self.sweep()
            if len(self._jobs) >= self.max_jobs:
                raise JobLimit()
            job = Job(id=secrets.token_urlsafe(ID_BYTES), created=self.clock())
            self._jobs[job.id] = job
            return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            self.sweep()
            return self._jobs.get(job_id)

    def delete(self, job_id: str) -> bool:
        """Cancel ``job_id`` if it has not finished, and remove it and its result."""
        with self._lock:
            job = self._jobs.pop(job_id, None)
            if job is None:
                return False
            if job.future is not None:
                job.future.cancel()  # only a queued job can be stopped; a running one's result is dropped
            job.status = CANCELLED
            self._remove_file(job)
            return True

    def attach(self, job: Job, future: Future) -> None:
        job.future = future
        future.add_done_callback(lambda f: self._finish(job, f))

    def stage(self, job: Job, name: str, progress: float) -> None:
        with self._lock:
            if job.status in (QUEUED, RUNNING):
                job.status, job.stage, job.progress = RUNNING, name, progress

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return sum(j.nbytes for j in self._jobs.values())

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            for job in list(self._jobs.values()):
                if job.future is not None:
                    job.future.cancel()
                self._remove_file(job)
            self._jobs.clear()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- inside ----------------------------------------------------------------------
    def _finish(self, job: Job, future: Future) -> None:
        with self._lock:
            if self._jobs.get(job.id) is not job:
                return  # deleted meanwhile: drop the result
            job.finished = self.clock()
            job.future = None
            try:
                restored: Restored = future.result()
            except CancelledError:
                job.status, job.stage = CANCELLED, CANCELLED
                return
            except ElirError as exc:
                job.status, job.stage, job.error, job.hint = FAILED, FAILED, exc.message, exc.hint
                return
            except Exception as exc:  # noqa: BLE001 - recorded on the job, like a batch's failed file
                first = first_line(exc)
                job.status, job.stage, job.error = FAILED, FAILED, f"{type(exc).__name__}: {first}"
                return
            size = len(restored.data)
            if size > self.max_bytes:
                job.status, job.stage = FAILED, FAILED
                job.error = f"the result ({size} bytes) is larger than the server's jobs disk budget"
                return
            self._make_room(size)
            path = self.root / f"{job.id}{restored.suffix}"
            write_bytes_atomic(path, restored.data, overwrite=True)
            job.path, job.nbytes = path, size
            job.media_type, job.suffix = restored.media_type, restored.suffix
            job.result = restored.summary()
            job.status, job.stage, job.progress = DONE, DONE, 1.0

    def _make_room(self, size: int) -> None:
        done = sorted((j for j in self._jobs.values() if j.path is not None), key=lambda j: j.finished or 0)
        used = sum(j.nbytes for j in self._jobs.values())
        for old in done:
            if used + size <= self.max_bytes:
                break
            used -= old.nbytes
            self._remove_file(old)
            old.status, old.stage = EXPIRED, EXPIRED

    def _remove_file(self, job: Job) -> None:
        if job.path is not None:
            job.path.unlink(missing_ok=True)
            job.path, job.nbytes = None, 0

    def sweep(self) -> None:
        """Forget jobs whose results expired (``ttl`` after they finished)."""
        now = self.clock()
        with self._lock:
            for job in [j for j in self._jobs.values() if j.finished is not None and now - j.finished > self.ttl]:
                self._remove_file(job)
                del self._jobs[job.id]

    def _sweep_loop(self) -> None:
        while not self._stop.wait(min(SWEEP_EVERY, self.ttl)):
            self.sweep()
