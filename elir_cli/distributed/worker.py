"""The model stage: a callable class Ray Data runs in an actor pool.

Each actor loads the model (and the detector) once, from the weights files the
driver fetched through the registry, then restores the files of every batch it
is given with :meth:`PhotoRestorer.restore_file`: decode, detect, restore and
write the output to its final path atomically, on the worker. Only a small
status row per file goes back (its index in the plan and its
:class:`PhotoRecord` as JSON: status, faces, timings, error).

Per-file failures are rows: nothing a file does stops the worker.
"""

from __future__ import annotations

import json
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from elir_cli.errors import first_line
from elir_cli.pipeline.files import PhotoRecord, OutputName
from elir_cli.pipeline.restorer import PhotoRestorer
from elir_cli.pipeline.settings import RestoreSettings

if TYPE_CHECKING:
    from .storage import Folder

# Columns of the rows that go to the workers and of the rows that come back.
INDEX, SRC, OUTPUT, EXACT, FACES_KEY = "index", "src", "output", "exact", "faces_key"
RECORD = "record"
APPEARED_HINT = "output appeared during the run (written by a worker that was lost and retried, or by another run)"


class RayModelWorker:
    """Restores files with one model loaded per Ray actor."""

    def __init__(self, settings: RestoreSettings, weights_files: Mapping[str, str], *, torch_threads: int,
                 cwd: str | None = None, registry: str | None = None,
                 storage: "tuple[Folder, Folder] | None" = None) -> None:
        """``weights_files``: source -> local file, as the driver's ``fetch_weights`` returned them.

        ``cwd``: the driver's working folder; relative paths in the rows and settings
        are relative to it (where this node has it: on one machine or a shared mount).
        ``registry``: the name of an actor with a ``register(handle, ready_at)`` method
        that learns each worker and when (``time.time()``) its model was loaded (for
        monitoring, tests and the benchmark).
        ``storage``: the input and output folders when the batch is on URL folders;
        the rows' paths are then relative to them.
        """
        import os

        from elir_cli.model.runtime import request_huge_pages

        request_huge_pages()  # as the elir command does, before this process imports torch
        import torch

        if cwd is not None and os.path.isdir(cwd):
            os.chdir(cwd)  # this actor's own process: Ray starts workers in a folder of its own

        # The output bytes depend on the thread count (oneDNN's float sums), so fix it
        # to the worker's CPUs rather than leave it to the node.
        torch.set_num_threads(torch_threads)
        files = {source: Path(path) for source, path in weights_files.items() if Path(path).exists()}
        # A file the driver fetched that this node cannot see (no shared storage): the registry
        # fetches the task's weights here, into this node's cache.
        self.restorer = PhotoRestorer(settings, weights_files=files)
        self.restorer.prepare()
        self.storage = storage
        if storage is not None:
            from .storage import finalize_at_exit

            finalize_at_exit()
        if registry is not None:
            import ray

            ray.get_actor(registry).register.remote(ray.get_runtime_context().current_actor, time.time())

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        indices, records = [], []
        for index, src, output, exact, faces_key in zip(batch[INDEX], batch[SRC], batch[OUTPUT], batch[EXACT],
                                                        batch[FACES_KEY]):
            if self.storage is not None:
                record = self.restore_stored(str(src), str(output), faces_key=str(faces_key))
            else:
                record = self.restore_one(Path(str(src)), OutputName(Path(str(output)), exact=bool(exact)),
                                          faces_key=str(faces_key))
            indices.append(int(index))
            records.append(json.dumps(record.to_json()))
        return {INDEX: np.asarray(indices, dtype=np.int64), RECORD: np.asarray(records, dtype=object)}

    def restore_one(self, src: Path, output: OutputName, *, faces_key: str) -> PhotoRecord:
        # The driver skipped the outputs that existed when it planned; one that exists now was
        # written since, by an attempt of this run that Ray retried (a lost worker) or by another run.
        if (existing := self.restorer.kept_output(output)) is not None:
            return PhotoRecord(input=str(src), output=str(existing), status="skipped", hint=APPEARED_HINT)
        try:
            record, _ = self.restorer.restore_file(src, output, faces_key=faces_key)
        except Exception as exc:  # noqa: BLE001  one file never stops a worker; it is recorded as failed
            record = _failed(str(src), exc)
        return record

    def restore_stored(self, relative: str, output: str, *, faces_key: str) -> PhotoRecord:
        """:meth:`restore_one` for URL folders: read the input's bytes, store the output's (see storage)."""
        from elir_cli.errors import ElirError

        from .storage import StorageError, finished_output_on, read_bytes, write_new

        assert self.storage is not None
        src, dst = self.storage
        shown = src.show(relative)
        overwrite = self.restorer.settings.overwrite
        try:
            if not overwrite and (existing := finished_output_on(dst, output)) is not None:
                return PhotoRecord(input=shown, output=dst.show(existing), status="skipped", hint=APPEARED_HINT)
            try:
                data = read_bytes(src, relative)
            except OSError as exc:
                raise StorageError(f"{shown}: cannot read: {first_line(exc)}") from exc
            record, _ = self.restorer.restore_file(
                None, None, data=data, display_name=shown, faces_key=faces_key,
                put=lambda suffix, payload: write_new(dst, output + suffix, payload, overwrite=overwrite))
        except ElirError as exc:
            record = PhotoRecord(input=shown, status="failed", error=exc.message, hint=exc.hint)
        except Exception as exc:  # noqa: BLE001  as in restore_one
            record = _failed(shown, exc)
        return record


def _failed(shown: str, exc: BaseException) -> PhotoRecord:
    last = traceback.extract_tb(exc.__traceback__)[-1:]
    where = f" at {Path(last[0].filename).name}:{last[0].lineno}" if last else ""
    first = first_line(exc)
    return PhotoRecord(input=shown, status="failed", error=f"{shown}: {type(exc).__name__}: {first}{where}",
                      hint="rerun with --debug on the local engine for the traceback and report it")


def record_from_row(row: Mapping[str, Any]) -> tuple[int, PhotoRecord]:
    """A status row back from a worker as (plan index, record)."""
    return int(row[INDEX]), PhotoRecord(**json.loads(str(row[RECORD])))
