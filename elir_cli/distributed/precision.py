"""``--precision auto`` for a distributed batch: the driver decides once, the workers are told.

Left to themselves, model workers would each calibrate (or read their own
node's store) and could choose differently, so that one batch mixed bf16 and
fp32 outputs. Instead the driver resolves ``auto`` for the workers' device
kind (CPU, or CUDA when each worker has a GPU) as the local engine would: the
calibration recorded in the driver's store, or a calibration run on the driver
and recorded there. The workers receive the concrete precision.

A driver that lacks the workers' device (a CPU head node of a GPU cluster)
runs the same decision in one Ray task with a model worker's resources.
Reduced precision is used only when every model of the run (the task's and
``--bg-task``'s) passed calibration; otherwise all run in float32, as one
precision is what the workers are given.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Mapping

from elir_cli.errors import ElirError, UsageError
from elir_cli.pipeline.restorer import PhotoRestorer
from elir_cli.pipeline.settings import RestoreSettings
from .cluster import RayOptions, import_ray

AUTO = "auto"
FP32 = "fp32"


@dataclass(frozen=True)
class Decision:
    """The precision the workers run at, and the device description a report records."""

    precision: str
    device: str  # as PhotoRestorer.device_description() says it: "cpu (bf16, auto)"


def workers_device(settings: RestoreSettings, options: RayOptions) -> str:
    """The device the model workers resolve: Ray hides GPUs from workers that asked for none."""
    if settings.device != AUTO:
        return settings.device
    return "cuda" if options.gpus_per_worker > 0 else "cpu"


def decide_precision(settings: RestoreSettings, weights_files: Mapping[str, Path], options: RayOptions, *,
                     log: Callable[[str], None] | None = None) -> Decision | None:
    """The concrete precision for ``--precision auto`` (None: a precision was given; the workers use it)."""
    if settings.precision != AUTO:
        return None
    from elir_cli.model.runtime import resolve_device

    device = workers_device(settings, options)
    try:
        resolve_device(device)
    except UsageError:  # the driver has no such device: decide where a model worker would run
        ray = import_ray()
        task = ray.remote(num_cpus=options.cpus_per_worker, num_gpus=options.gpus_per_worker or None)(decide_here)
        try:
            return ray.get(task.remote(settings, {k: str(v) for k, v in weights_files.items()}, device))
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, ElirError):  # the worker's one-line error, as the driver's would be
                raise exc.cause from None
            raise
    return decide_here(settings, weights_files, device, log=log)


def decide_here(settings: RestoreSettings, weights_files: Mapping[str, "Path | str"], device: str, *,
                log: Callable[[str], None] | None = None) -> Decision:
    """Resolve ``auto`` on ``device`` in this process: the store's record, else a calibration (recorded)."""
    from elir_cli.model.runtime import resolve_runtime

    say = log or (lambda message: None)
    runtime = resolve_runtime(device, AUTO)  # a UsageError when this process lacks the device
    if runtime.compute_dtype is None:  # auto is float32 here: nothing to calibrate
        return Decision(FP32, runtime.describe())
    files = {source: Path(path) for source, path in weights_files.items()}
    # the workers get a torch precision: calibrate that one here, not the int8 that --backend auto may use
    backend = "torch" if settings.backend == "auto" else settings.backend
    restorer = PhotoRestorer(replace(settings, device=device, backend=backend), log=say, weights_files=files)
    recorded = _recorded(settings, restorer.fetch_weights(), runtime.precision, runtime.device.type)
    if recorded is not None:
        chosen = recorded
        if chosen == FP32:
            say(f"Note: float32: {runtime.precision} failed the calibration recorded for these weights")
    else:  # load the models: each calibrates (or reads its record) as it loads
        say(f"Choosing the precision for the model workers ({runtime.precision} or fp32) on this machine...")
        precisions = {restorer.model.precision}
        if settings.bg_task:
            precisions.add(restorer.bg_model.precision)
        # the torch precision the models ended at (int8 on OpenVINO is not handed to workers by auto:
        # they then run auto's torch precision only where it was calibrated, else fp32)
        chosen = runtime.precision if precisions == {runtime.precision} else FP32
    return Decision(chosen, f"{runtime.device.type} ({chosen}, auto)")


def _recorded(settings: RestoreSettings, files: Mapping[str, Path], precision: str, device_kind: str) -> str | None:
    """The precision the store's calibration records give every model of the run, or None if one is missing."""
    from elir_cli.registry.store import read_calibration, recorded_sha256

    models = [(settings.weights or settings.task, settings.task)]
    if settings.bg_task:
        models.append((settings.bg_task, settings.bg_task))
    passed = []
    for source, task in models:
        record = read_calibration(recorded_sha256(files[source], task), precision, device_kind)
        if record is None:
            return None
        passed.append(record.passed)
    return precision if all(passed) else FP32
