"""A batch on Ray Data: the local batch's plan, restored by a pool of model workers.

The plan is :func:`elir_cli.pipeline.batch.plan_batch`'s, so a folder gives
the same outputs under the same names on either engine. The driver skips the
outputs that exist (the local batch's rule), fetches the weights once through
the registry, and turns the rest of the plan into a dataset of small rows
(plan index, input path, output path); :class:`~.worker.RayModelWorker` actors
restore them and write the outputs themselves. The status rows stream back
into the local batch's :class:`~elir_cli.pipeline.batch.BatchSummary`, in
plan order, so ``--report`` and the summary are the same.

A worker that dies loses only the file it was restoring: outputs are written
atomically as each file finishes, Ray retries the rest of its rows on another
worker (rows whose output appeared meanwhile are recorded as skipped), and a
rerun skips every finished output.

Folders given as URLs (s3://, gs://) are planned by :func:`plan_storage` (see
:mod:`.storage`); rows then carry paths relative to the two folders, which
the workers receive once. With ``--precision auto`` the driver decides the
precision before the pool starts (:mod:`.precision`).
"""

from __future__ import annotations

import os
import posixpath
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator

from elir_cli.errors import ElirError, first_line
from elir_cli.pipeline.batch import SKIPPED_HINT, BatchItem, BatchSummary
from elir_cli.pipeline.files import PhotoRecord
from elir_cli.pipeline.restorer import PhotoRestorer
from elir_cli.pipeline.settings import RestoreSettings
from .cluster import RayOptions, RayUnavailableError, import_ray, ray_session
from .precision import decide_precision, workers_device
from .storage import Folder, RemoteItem, existing_outputs, finished_output, open_folder, plan_folders
from .worker import EXACT, FACES_KEY, INDEX, OUTPUT, SRC, RayModelWorker, record_from_row

# One file per block up to this many files, so progress and retries are per file; beyond it
# files share blocks (Ray Data schedules every block as a task; millions of tasks cost more
# than they give).
MAX_BLOCKS = 10_000
# Files per model call: one, so a lost worker loses one file and progress moves per file.
FILES_PER_CALL = 1


@dataclass(frozen=True)
class StoragePlan:
    """A batch's plan when SRC or DST is a URL: the two folders and the images, by relative path."""

    src: Folder
    dst: Folder
    items: list[RemoteItem]


@dataclass
class RayBatchResult:
    """The batch's summary and the settings a report records (as for a local batch)."""

    summary: BatchSummary
    settings: dict[str, Any]
    workers: int = 0
    error: ElirError | None = field(default=None)  # the job stopped early (records so far are in summary)


def run_ray_batch(settings: RestoreSettings, items: "list[BatchItem] | StoragePlan", options: RayOptions, *,
                  log: Callable[[str], None] | None = None,
                  on_done: Callable[[PhotoRecord], None] | None = None,
                  worker_registry: str | None = None) -> RayBatchResult:
    """Restore ``items`` (a :func:`plan_batch` plan, or a :func:`plan_storage` plan for URL
    folders) on Ray; per-file failures are records.

    Ctrl-C stops the job and returns what was done, with ``summary.interrupted``.
    ``worker_registry`` names an actor that each model worker registers with
    (see :class:`RayModelWorker`).
    """
    say = log or (lambda message: None)
    done = on_done or (lambda record: None)
    started = time.perf_counter()
    restorer = PhotoRestorer(settings, log=say)
    stored = items if isinstance(items, StoragePlan) else None
    records: dict[int, PhotoRecord] = {}
    rows: list[dict[str, Any]] = []
    for index, skipped in _skips_and_rows(restorer, items, rows):
        records[index] = skipped
        done(skipped)
    total = len(records) + len(rows)
    summary = BatchSummary()
    result = RayBatchResult(summary=summary, settings={})
    decision = None
    if rows:
        ray = import_ray()  # before the weights: a missing extra fails at once
        weights_files = restorer.fetch_weights()
        with ray_session(options) as cluster:
            result.workers = cluster.workers(options)
            cluster.check_fits(options, result.workers)
            decision = decide_precision(settings, weights_files, options, log=say)
            worker_settings = settings if decision is None else replace(settings, precision=decision.precision)
            where = "a local Ray instance" if cluster.local else f"the Ray cluster at {cluster.address}"
            say(f"{total} images, {len(rows)} to restore on {result.workers} model workers "
                f"({options.cpus_per_worker:g} CPU, {options.gpus_per_worker:g} GPU each) on {where}"
                + ("" if decision is None else f", at {decision.precision} (--precision auto, decided once)"))
            dataset = ray.data.from_items(rows, override_num_blocks=min(len(rows), MAX_BLOCKS)).map_batches(
                RayModelWorker, batch_size=FILES_PER_CALL, batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=result.workers),
                num_cpus=options.cpus_per_worker, num_gpus=options.gpus_per_worker or None,
                fn_constructor_args=(worker_settings, {k: str(v.resolve()) for k, v in weights_files.items()}),
                fn_constructor_kwargs={"torch_threads": options.torch_threads, "cwd": os.getcwd(),
                                       "registry": worker_registry,
                                       "storage": None if stored is None else (stored.src, stored.dst)})
            try:
                for row in dataset.iter_rows():
                    index, record = record_from_row(row)
                    if index in records:  # a retried task's rows, already counted
                        continue
                    records[index] = record
                    done(record)
            except KeyboardInterrupt:
                summary.interrupted = True
            except ray.exceptions.RayError as exc:
                summary.interrupted = True
                first = first_line(exc)
                result.error = RayUnavailableError(
                    f"the Ray job stopped after {len(records)} of {total} files: {first}",
                    hint="the outputs written so far are kept; run the same command again to resume")
    summary.records = [records[i] for i in sorted(records)]
    summary.seconds = time.perf_counter() - started
    result.settings = restorer.describe()
    if decision is not None:  # what the workers ran, not what this process would resolve
        result.settings["device"] = decision.device
    if rows and result.settings.get("batch_size") is None:  # the workers' batch, as a local run reports its own
        from elir_cli.model.runtime import auto_batch_size

        result.settings["batch_size"] = auto_batch_size(workers_device(settings, options))
    return result


def plan_storage(src: str, dst: str, *, suffix: str = "") -> StoragePlan:
    """The plan of a batch whose input or output folder is a URL (s3://, gs://, ...)."""
    source, target = open_folder(src), open_folder(dst)
    return StoragePlan(src=source, dst=target, items=plan_folders(source, target, suffix=suffix))


def _skips_and_rows(restorer: PhotoRestorer, items: "list[BatchItem] | StoragePlan",
                    rows: list[dict[str, Any]]) -> Iterator[tuple[int, PhotoRecord]]:
    """The plan's finished outputs as skipped records; the rest appended to ``rows`` for the workers."""
    if isinstance(items, StoragePlan):
        src, dst = items.src, items.dst
        existing = set() if restorer.settings.overwrite else existing_outputs(dst)
        for index, item in enumerate(items.items):
            if (found := finished_output(item.output, existing)) is not None:
                yield index, PhotoRecord(input=src.show(item.relative), output=dst.show(found), status="skipped",
                                        hint=SKIPPED_HINT)
            else:
                faces_key = posixpath.join(posixpath.dirname(item.relative), posixpath.basename(item.output))
                rows.append({INDEX: index, SRC: item.relative, OUTPUT: item.output, EXACT: False,
                             FACES_KEY: faces_key})
        return
    for index, item in enumerate(items):
        if (found_path := restorer.kept_output(item.output)) is not None:
            yield index, PhotoRecord(input=str(item.src), output=str(found_path), status="skipped", hint=SKIPPED_HINT)
        else:
            rows.append({INDEX: index, SRC: str(item.src), OUTPUT: str(item.output.path), EXACT: item.output.exact,
                         FACES_KEY: (item.relative.parent / item.output.path.name).as_posix()})
