"""Ray for a batch: connect to a cluster, or start a small local instance; fail in one line.

Without an address, :func:`ray_session` starts a local Ray instance sized for
the model workers (no dashboard, a small object store: rows carry paths, not
pixels), logging into a temporary folder that goes when the session ends.
With an address it connects to that cluster, after checking in a few seconds
that something listens there (Ray itself retries an unreachable head for
minutes).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
import tempfile
from dataclasses import dataclass
from types import ModuleType
from typing import Iterator

from elir_cli.errors import ElirError, UsageError, first_line

INSTALL_HINT = 'pip install "elir-cli[ray]"'
CONNECT_TIMEOUT_S = 5.0
# Rows are paths and small status records, so the local object store can stay small
# (Ray's minimum is 75 MB); the model workers' memory is what counts.
LOCAL_OBJECT_STORE_BYTES = 200 * 1024 * 1024
CLIENT_PREFIX = "ray://"
DEFAULT_RAY_PORT = 6379
DEFAULT_CLIENT_PORT = 10001
BACKEND_LOG_LEVEL_ENV, BACKEND_LOG_LEVEL = "RAY_BACKEND_LOG_LEVEL", "fatal"


class RayUnavailableError(ElirError):
    """Ray is not installed, or the cluster cannot be reached or used."""


@dataclass(frozen=True)
class RayOptions:
    """Where to run and how large the model stage is (``--ray-address``, ``--num-model-workers``, ...)."""

    address: str | None = None  # None: start a local instance; "auto", "host:port" or "ray://host:port"
    num_model_workers: int | None = None  # None: as many as the cluster's CPUs (or GPUs) allow
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0

    def __post_init__(self) -> None:
        if self.num_model_workers is not None and self.num_model_workers < 1:
            raise UsageError(f"{{num_model_workers}} must be at least 1, got {self.num_model_workers}",
                             option="num_model_workers", value=self.num_model_workers)
        if self.cpus_per_worker <= 0:
            raise UsageError(f"{{cpus_per_worker}} must be positive, got {self.cpus_per_worker}",
                             option="cpus_per_worker", value=self.cpus_per_worker)
        if self.gpus_per_worker < 0:
            raise UsageError(f"{{gpus_per_worker}} must be 0 or more, got {self.gpus_per_worker}",
                             option="gpus_per_worker", value=self.gpus_per_worker)

    @property
    def torch_threads(self) -> int:
        """Threads each worker's torch uses: its CPUs (at least one)."""
        return max(1, int(self.cpus_per_worker))


def import_ray() -> ModuleType:
    """``ray`` with Ray Data, or a one-line error saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (the Data library is part of the extra)
    except ImportError as exc:
        raise RayUnavailableError(f"--engine ray needs Ray Data, which is not installed ({exc})",
                                  hint=INSTALL_HINT) from None
    return ray


@dataclass(frozen=True)
class Cluster:
    """The Ray instance a batch runs on."""

    address: str
    local: bool
    cpus: float
    gpus: float

    def workers(self, options: RayOptions) -> int:
        """How many model workers to start: as asked, or as many as the resources hold."""
        if options.num_model_workers is not None:
            return options.num_model_workers
        fits = self.cpus // options.cpus_per_worker
        if options.gpus_per_worker > 0:
            fits = min(fits, self.gpus // options.gpus_per_worker)
        return max(1, int(fits))

    def check_fits(self, options: RayOptions, workers: int) -> None:
        """On a local instance, refuse a pool that could never start (Ray would wait forever)."""
        if not self.local:
            return  # a cluster may autoscale: Ray waits for the nodes
        need_cpus = workers * options.cpus_per_worker
        need_gpus = workers * options.gpus_per_worker
        if need_cpus > self.cpus or need_gpus > self.gpus:
            raise UsageError(
                f"{workers} model workers need {need_cpus:g} CPUs and {need_gpus:g} GPUs; "
                f"this machine has {self.cpus:g} CPUs and {self.gpus:g} GPUs",
                hint="lower --num-model-workers, --cpus-per-worker or --gpus-per-worker, or use --ray-address")


# A folder given as a URL (s3://bucket/x, gs://..., file:///...), not a local path.
URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(path: str) -> bool:
    return bool(URL_SCHEME.match(path))


def check_reachable(address: str, *, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail in ``timeout`` seconds when nothing listens at ``host:port`` (``auto`` is Ray's to find)."""
    if address == "auto":
        return
    rest = address[len(CLIENT_PREFIX):] if address.startswith(CLIENT_PREFIX) else address
    host, _, port_text = rest.rpartition(":")
    if not host:
        host, port_text = rest, str(DEFAULT_CLIENT_PORT if address.startswith(CLIENT_PREFIX) else DEFAULT_RAY_PORT)
    try:
        port = int(port_text)
    except ValueError:
        raise UsageError(f"{{ray_address}} {address!r} is not host:port, ray://host:port or auto",
                         option="ray_address", value=address) from None
    try:
        with socket.create_connection((host.strip("[]"), port), timeout=timeout):
            pass
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise RayUnavailableError(
            f"cannot reach the Ray cluster at {address}: {reason}",
            hint="check --ray-address (`ray status` on the head node shows it), "
                 "or leave it out to start a local Ray instance") from None


@contextlib.contextmanager
def ray_session(options: RayOptions) -> Iterator[Cluster]:
    """Ray, connected or started for one batch, and shut down (or disconnected) after it."""
    ray = import_ray()
    if ray.is_initialized():  # a library caller's own session: use it and leave it running
        yield _describe(ray, local=False)
        return
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
    temp_dir = None
    saved_level = os.environ.get(BACKEND_LOG_LEVEL_ENV)
    if saved_level is None:  # Ray's C++ core logs warnings meant for Ray developers on stderr
        os.environ[BACKEND_LOG_LEVEL_ENV] = BACKEND_LOG_LEVEL
    try:
        if options.address is not None:
            check_reachable(options.address)
            try:
                ray.init(address=options.address, **quiet)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise RayUnavailableError(f"cannot use the Ray cluster at {options.address}: {first_line(exc)}",
                                          hint="check --ray-address, and that the cluster runs the same Ray "
                                               "version; or leave it out to start a local Ray instance") from None
            cluster = _describe(ray, local=False)
        else:
            temp_dir = tempfile.mkdtemp(prefix="elir-ray-")
            ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False,
                     object_store_memory=LOCAL_OBJECT_STORE_BYTES, _temp_dir=temp_dir, **quiet)
            cluster = _describe(ray, local=True)
        _quiet_ray_data()
        yield cluster
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if saved_level is None:
            os.environ.pop(BACKEND_LOG_LEVEL_ENV, None)
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)


def _describe(ray: ModuleType, *, local: bool) -> Cluster:
    resources = ray.cluster_resources()
    return Cluster(address=ray.get_runtime_context().gcs_address, local=local, cpus=float(resources.get("CPU", 0)),
                   gpus=float(resources.get("GPU", 0)))


def _quiet_ray_data() -> None:
    """Our progress line replaces Ray Data's bars and INFO logs on stderr."""
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    for name in ("ray.data", "ray"):
        logging.getLogger(name).setLevel(logging.ERROR)
