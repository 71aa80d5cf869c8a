"""What is on disk: the status of each task, re-hashing, and removal.

Used by ``elir models list/info/verify/remove``. Reads our store, our records
and the hub cache directly, so listing imports neither torch nor
huggingface_hub and touches no network.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .store import (
    StoredWeights,
    Source,
    cache_writes,
    elir_cache_dir,
    hub_cached_copies,
    read_record,
    remove_hub_copy,
    remove_record,
    sha256_file,
    store_detector_path,
    store_task_path,
)
from .hub import cached_task_weights, hub_location
from .tasks import Task, get_task, load_manifest, task_names, weights_dir


def remove_task_weights(task: str, *, repo_id: str | None = None) -> list[Path]:
    """Delete every cached copy of ``task``'s weights (our store and the hub cache)."""
    t = get_task(task)
    repo, _ = hub_location(repo_id)
    removed: list[Path] = []
    with cache_writes(elir_cache_dir()):
        store = store_task_path(t.name, t.hub_filename)
        if store.exists():
            store.unlink()
            removed.append(store)
        for copy in hub_cached_copies(repo, t.hub_filename):
            removed.extend(remove_hub_copy(copy))
        remove_record("tasks", t.name)
    return removed


@dataclass(frozen=True)
class TaskStatus:
    """What is on disk for one task."""

    task: Task
    path: Path | None
    source: Source | None
    record: StoredWeights | None
    hub_repo: str
    hub_revision: str


def task_status(task: str) -> TaskStatus:
    """The cached file of ``task`` (if any) and its record; no network, no torch."""
    t = get_task(task)
    repo, revision = hub_location()
    path = cached_task_weights(t.name)
    record = read_record("tasks", t.name)
    if record is not None and (path is None or record.path != str(path)):
        record = None
    source: Source | None = None
    if path is not None:
        source = record.source if record else ("hub" if path.parent.parent.name == "snapshots" else "import")
    return TaskStatus(task=t, path=path, source=source, record=record, hub_repo=repo, hub_revision=revision)


def task_status_json(task: str) -> dict[str, Any]:
    """One task and its cached weights as plain JSON data (``elir models list --json``, ``GET /v1/models``)."""
    s = task_status(task)
    t = s.task
    return {
        "task": t.name,
        "title": t.title,
        "restores": t.restores,
        "kind": t.kind,
        "input_size": t.input_size,
        "scale": t.scale,
        "steps": t.model.k_steps,
        "sigma_s": t.model.sigma_s,
        "parameters": t.parameters,
        "download_bytes": t.download_bytes,
        "licence": t.licence,
        "cached": s.path is not None,
        "path": str(s.path) if s.path else None,
        "source": s.source,
        "origin": s.record.origin if s.record else None,
        "sha256": s.record.sha256 if s.record else None,
        "hub": {"repo_id": s.hub_repo, "revision": s.hub_revision, "filename": t.hub_filename,
                "sha256": t.hub_sha256},
        "release": {"url": t.release_url, "sha256": t.release_sha256},
        "paper": t.paper,
        "calibration": calibrations_json(s.record.sha256 if s.record else None),
    }


def calibrations_json(sha256: str | None) -> list[dict[str, Any]]:
    """The precision calibrations recorded for this weights file (see pipeline.calibration)."""
    from dataclasses import asdict

    from .store import calibrations_for

    return [asdict(c) for c in calibrations_for(sha256)] if sha256 else []


VerifyStatus = Literal["ok", "mismatch", "unverified"]


@dataclass(frozen=True)
class VerifyResult:
    """One re-hashed file."""

    name: str
    path: Path
    status: VerifyStatus
    sha256: str
    expected: str | None


def verify_cache() -> list[VerifyResult]:
    """Re-hash every cached weights file against the manifest or our records."""
    results = []
    repo, _ = hub_location()
    for name in task_names():
        t = get_task(name)
        record = read_record("tasks", name)
        files = [store_task_path(name, t.hub_filename)] + hub_cached_copies(repo, t.hub_filename)
        for path in files:
            if not path.is_file():
                continue
            in_store = path == files[0]
            expected = None if in_store else t.hub_sha256
            if expected is None and record is not None and record.path == str(path):
                expected = record.sha256
            results.append(_verify_one(name, path, expected))
    for d in load_manifest().detectors.values():
        path = weights_dir() / d.bundled if d.bundled else store_detector_path((d.url or "").rsplit("/", 1)[-1])
        if path.is_file():
            record = read_record("detectors", d.name)
            expected = d.sha256 or (record.sha256 if record and record.path == str(path) else None)
            results.append(_verify_one(d.name, path, expected))
    return results


def _verify_one(name: str, path: Path, expected: str | None) -> VerifyResult:
    digest = sha256_file(path)
    status: VerifyStatus = "unverified" if expected is None else ("ok" if digest == expected else "mismatch")
    return VerifyResult(name=name, path=path, status=status, sha256=digest, expected=expected)
