"""What the routers share: the settings, the worker and the job store (``app.state.service``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .config import ServeConfig
from .jobs import JobStore
from .worker import RequestWorker


@dataclass
class Service:
    config: ServeConfig
    log: Callable[[str], None] = field(default=lambda message: None)

    def __post_init__(self) -> None:
        c = self.config
        self.worker = RequestWorker(queue_size=c.queue, max_pixels=c.max_pixels, workers=c.workers, log=self.log)
        self.jobs: JobStore | None = None

    def start(self) -> None:
        """Start the worker threads and the job store (idempotent)."""
        self.worker.start()
        if self.jobs is None:
            c = self.config
            self.jobs = JobStore(c.jobs_dir, ttl=c.job_ttl, max_bytes=c.jobs_disk_bytes, max_jobs=c.max_jobs)

    def preload(self) -> None:
        """Load the default task's models in the worker now (``--preload``); raises what loading raises.

        Starts only the worker: the job store (a temporary folder) comes with :meth:`start`."""
        self.worker.start()
        self.worker.load(self.default_settings()).result()

    def default_settings(self):  # type: ignore[no-untyped-def]
        from elir_cli.pipeline.settings import RestoreSettings

        c = self.config
        return RestoreSettings(task=c.task, weights=c.weights, device=c.device, precision=c.precision,
                               max_pixels=c.max_pixels)

    def stop(self) -> None:
        self.worker.stop()
        if self.jobs is not None:
            self.jobs.close()
            self.jobs = None
