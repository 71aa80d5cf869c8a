"""The server's settings, fixed at start (``elir serve`` options)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from elir_cli.errors import UsageError
from elir_cli.registry.tasks import get_task, task_names

MB = 1 << 20
DEFAULT_MAX_UPLOAD_MB = 50
DEFAULT_QUEUE = 8
DEFAULT_TIMEOUT = 300.0  # seconds a /v1/restore request may wait and run
DEFAULT_JOB_TTL = 3600.0  # seconds a finished job's result is kept
DEFAULT_JOBS_DISK_MB = 1024
DEFAULT_MAX_JOBS = 256
# The server's pixel limit, for inputs and outputs: lower than the CLI's
# 179 MP bomb guard, since a server holds several uploads at once.
DEFAULT_MAX_PIXELS = 50_000_000
FORM_SLACK_BYTES = 64 * 1024  # multipart boundaries and the option fields around the image


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    task: str = "bfr"
    weights: str | None = None
    device: str = "auto"
    precision: str = "auto"
    api_key: str | None = None
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    queue: int = DEFAULT_QUEUE
    workers: int = 1
    timeout: float = DEFAULT_TIMEOUT
    job_ttl: float = DEFAULT_JOB_TTL
    jobs_disk_mb: float = DEFAULT_JOBS_DISK_MB
    max_jobs: int = DEFAULT_MAX_JOBS
    max_pixels: int = DEFAULT_MAX_PIXELS
    jobs_dir: Path | None = None  # None: a fresh temporary folder, removed at shutdown
    preload: bool = False

    def __post_init__(self) -> None:
        get_task(self.task)
        for name in ("queue", "workers", "max_jobs", "max_pixels"):
            if getattr(self, name) < 1:
                raise UsageError(f"{{{name}}} must be at least 1, got {getattr(self, name)}", option=name,
                                 value=getattr(self, name))
        for name in ("max_upload_mb", "timeout", "job_ttl", "jobs_disk_mb"):
            if not getattr(self, name) > 0:
                raise UsageError(f"{{{name}}} must be positive, got {getattr(self, name)}", option=name,
                                 value=getattr(self, name))
        if not 0 <= self.port <= 65535:
            raise UsageError(f"{{port}} must be between 0 and 65535, got {self.port}", option="port", value=self.port)
        if self.api_key is not None and not self.api_key.strip():
            raise UsageError("{api_key} is empty", option="api_key", value=self.api_key,
                             hint="give a key, or leave it out to run without one")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MB)

    @property
    def max_body_bytes(self) -> int:
        return self.max_upload_bytes + FORM_SLACK_BYTES

    @property
    def jobs_disk_bytes(self) -> int:
        return int(self.jobs_disk_mb * MB)

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks requests may ask for: with ``--weights``, only ``--task``."""
        return (self.task,) if self.weights else tuple(task_names())

    @property
    def retry_after(self) -> int:
        """Seconds a client told 429 or 503 should wait."""
        return 2


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(config: ServeConfig) -> str | None:
    """The warning for a server reachable from other machines without an API key."""
    if is_loopback(config.host) or config.api_key:
        return None
    return (f"serving on {config.host} without an API key: anyone who can reach this address can use "
            "the server (set --api-key or $ELIR_API_KEY)")
