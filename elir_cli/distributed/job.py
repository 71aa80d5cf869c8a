"""A batch on Ray Data: the local batch's plan, restored by a pool of model workers.

The plan is :func:`elir_cli.pipeline.batch.plan_batch`'s, so a folder gives
the same outputs under the same names on either engine. The driver skips the
outputs that exist (the local batch's rule), fetches the weights once through
the registry, and turns the rest of the plan into a dataset of small rows
(plan index, input path, output path); :class:`~.worker.ModelWorker` actors
restore them and write the outputs themselves. The status rows stream back
into the local batch's :class:`~elir_cli.pipeline.batch.BatchSummary`, in
plan order, so ``--report`` and the summary are the same.

A worker that dies loses only the file it was restoring: outputs are written
atomically as each file finishes, Ray retries the rest of its rows on another
worker (rows whose output appeared meanwhile are recorded as skipped), and a
rerun skips every finished output.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from elir_cli.errors import ElirError
from elir_cli.pipeline.batch import BatchItem, BatchSummary
from elir_cli.pipeline.files import FileRecord, FileRestorer, RestoreSettings
from .cluster import RayOptions, RayUnavailableError, import_ray, ray_session
from .worker import EXACT, FACES_KEY, INDEX, OUTPUT, SRC, ModelWorker, record_from_row

# One file per block up to this many files, so progress and retries are per file; beyond it
# files share blocks (Ray Data schedules every block as a task; millions of tasks cost more
# than they give).
MAX_BLOCKS = 10_000
# Files per model call: one, so a lost worker loses one file and progress moves per file.
FILES_PER_CALL = 1


@dataclass
class RayBatchResult:
    """The batch's summary and the settings a report records (as for a local batch)."""

    summary: BatchSummary
    settings: dict[str, Any]
    workers: int = 0
    error: ElirError | None = field(default=None)  # the job stopped early (records so far are in summary)


def run_ray_batch(settings: RestoreSettings, items: list[BatchItem], options: RayOptions, *,
                  log: Callable[[str], None] | None = None,
                  on_done: Callable[[FileRecord], None] | None = None,
                  worker_registry: str | None = None) -> RayBatchResult:
    """Restore ``items`` (a :func:`plan_batch` plan) on Ray; per-file failures are records.

    Ctrl-C stops the job and returns what was done, with ``summary.interrupted``.
    ``worker_registry`` names an actor that each model worker registers with
    (see :class:`ModelWorker`).
    """
    say = log or (lambda message: None)
    done = on_done or (lambda record: None)
    started = time.perf_counter()
    restorer = FileRestorer(settings, log=say)
    records: dict[int, FileRecord] = {}
    todo: list[int] = []
    for index, item in enumerate(items):
        if (existing := restorer.kept_output(item.output)) is not None:
            records[index] = FileRecord(input=str(item.src), output=str(existing), status="skipped",
                                        hint="output exists (use --overwrite to redo it)")
            done(records[index])
        else:
            todo.append(index)
    summary = BatchSummary()
    result = RayBatchResult(summary=summary, settings={})
    if todo:
        ray = import_ray()  # before the weights: a missing extra fails at once
        weights_files = {source: str(path.resolve()) for source, path in restorer.fetch_weights().items()}
        with ray_session(options) as cluster:
            result.workers = cluster.workers(options)
            cluster.check_fits(options, result.workers)
            where = "a local Ray instance" if cluster.local else f"the Ray cluster at {cluster.address}"
            say(f"{len(items)} images, {len(todo)} to restore on {result.workers} model workers "
                f"({options.cpus_per_worker:g} CPU, {options.gpus_per_worker:g} GPU each) on {where}")
            rows = [{INDEX: i, SRC: str(items[i].src), OUTPUT: str(items[i].output.path),
                     EXACT: items[i].output.exact,
                     FACES_KEY: (items[i].relative.parent / items[i].output.path.name).as_posix()} for i in todo]
            dataset = ray.data.from_items(rows, override_num_blocks=min(len(rows), MAX_BLOCKS)).map_batches(
                ModelWorker, batch_size=FILES_PER_CALL, batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=result.workers),
                num_cpus=options.cpus_per_worker, num_gpus=options.gpus_per_worker or None,
                fn_constructor_args=(settings, weights_files),
                fn_constructor_kwargs={"torch_threads": options.torch_threads, "cwd": os.getcwd(),
                                       "registry": worker_registry})
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
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
                result.error = RayUnavailableError(
                    f"the Ray job stopped after {len(records)} of {len(items)} files: {first}",
                    hint="the outputs written so far are kept; run the same command again to resume")
    summary.records = [records[i] for i in sorted(records)]
    summary.seconds = time.perf_counter() - started
    result.settings = restorer.describe()
    return result
