"""The task registry: the five released ELIR configurations, read from data.

``weights/manifest.json`` (installed as ``elir_cli.weights``) is the single
source of every task's hyper-parameters, sizes and download sources. The
environment variable ``ELIR_MANIFEST`` may name another manifest with the same
schema (an organisation's own registry, or the tiny models of the test suite).
This module only reads it; it never imports torch, so ``elir models list`` and
``--help`` stay fast.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from elir_cli.errors import UsageError
from elir_cli.model.config import ModelConfig

MANIFEST_NAME = "manifest.json"
MANIFEST_ENV = "ELIR_MANIFEST"


@dataclass(frozen=True)
class Task:
    """One released task: what it restores and how to run and fetch it."""

    name: str
    title: str
    restores: str
    kind: Literal["face", "image"]
    input_size: int
    scale: int
    model: ModelConfig
    tensors: int
    parameters: int
    licence: str
    hub_filename: str
    hub_sha256: str | None
    release_url: str
    release_sha256: str | None
    paper: dict[str, Any] | None

    @property
    def download_bytes(self) -> int:
        """Approximate size of the float32 weights file."""
        return self.parameters * 4


@dataclass(frozen=True)
class Detector:
    """A face detector known to the registry."""

    name: str
    title: str
    network: str
    licence: str
    sha256: str | None
    bundled: str | None = None
    url: str | None = None
    notice: str | None = None


@dataclass(frozen=True)
class TaskManifest:
    """The whole registry: where our hub files live, the tasks and the detectors."""

    hub_repo_id: str
    hub_revision: str
    tasks: dict[str, Task]
    detectors: dict[str, Detector]
    path: Path


def weights_dir() -> Path:
    """The installed ``weights/`` folder (manifest, bundled detector, notices).

    Installed, it is the package ``elir_cli.weights``; imported straight from
    a source checkout (``python -c`` in the repository root), it is the
    top-level ``weights/`` next to ``elir_cli/``.
    """
    try:
        return Path(str(resources.files("elir_cli.weights")))
    except ModuleNotFoundError:
        checkout = Path(__file__).resolve().parents[2] / "weights"
        if (checkout / MANIFEST_NAME).is_file():
            return checkout
        raise


def get_detector(name: str) -> Detector:
    """The face detector called ``name``; a :class:`UsageError` listing the choices otherwise."""
    detectors = load_manifest().detectors
    try:
        return detectors[name]
    except KeyError:
        raise UsageError(f"unknown face detector {name!r}",
                         hint=f"choose one of: {', '.join(detectors)}") from None


def manifest_path() -> Path:
    """The manifest in use: ``$ELIR_MANIFEST`` if set, else the installed one."""
    override = os.environ.get(MANIFEST_ENV)
    return Path(override).expanduser() if override else weights_dir() / MANIFEST_NAME


def load_manifest() -> TaskManifest:
    """Read (once per path) the manifest named by :func:`manifest_path`."""
    return _load_manifest(str(manifest_path()))


@lru_cache(maxsize=4)
def _load_manifest(path_text: str) -> TaskManifest:
    path = Path(path_text)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read the task manifest {path}: {exc.strerror or exc}",
                         hint=f"check ${MANIFEST_ENV} or reinstall elir-cli") from None
    except ValueError as exc:
        raise UsageError(f"the task manifest {path} is not valid JSON: {exc}",
                         hint=f"check ${MANIFEST_ENV} or reinstall elir-cli") from None
    try:
        return _parse_manifest(data, path)
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"the task manifest {path} is malformed ({type(exc).__name__}: {exc})",
                         hint=f"check ${MANIFEST_ENV} or reinstall elir-cli") from None


def _parse_manifest(data: dict[str, Any], path: Path) -> TaskManifest:
    tasks = {}
    for name, t in data["tasks"].items():
        tasks[name] = Task(
            name=name,
            title=t["title"],
            restores=t["restores"],
            kind=t["kind"],
            input_size=int(t["input_size"]),
            scale=int(t["scale"]),
            model=ModelConfig.from_dict(t["model"]),
            tensors=int(t["tensors"]),
            parameters=int(t["parameters"]),
            licence=t["licence"],
            hub_filename=t["sources"]["hub"]["filename"],
            hub_sha256=t["sources"]["hub"]["sha256"],
            release_url=t["sources"]["release"]["url"],
            release_sha256=t["sources"]["release"]["sha256"],
            paper=t.get("paper"),
        )
    detectors = {name: Detector(name=name, **d) for name, d in data["detectors"].items()}
    return TaskManifest(
        hub_repo_id=data["hub"]["repo_id"],
        hub_revision=data["hub"]["revision"],
        tasks=tasks,
        detectors=detectors,
        path=path,
    )


def task_names() -> list[str]:
    """The task names of the manifest in use, in manifest order."""
    return list(load_manifest().tasks)


def get_task(name: str) -> Task:
    """The task called ``name``; a :class:`UsageError` listing the choices otherwise."""
    tasks = load_manifest().tasks
    try:
        return tasks[name]
    except KeyError:
        raise UsageError(
            f"unknown task {name!r}",
            hint=f"choose one of: {', '.join(tasks)}",
        ) from None
