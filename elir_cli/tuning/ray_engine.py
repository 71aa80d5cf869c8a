"""``elir tune --engine ray``: the same run on Ray Train workers (``ray.train.torch.TorchTrainer``).

The driver connects to the cluster (or starts a local Ray instance) as ``elir batch
--engine ray`` does (:func:`elir_cli.distributed.cluster.ray_session`), and starts N workers;
Ray Train joins them in one torch process group (gloo on CPUs, NCCL on GPUs). Each worker
runs :class:`~elir_cli.tuning.loop.Tuner` as one rank (:mod:`.parallel`): its slice of every
global batch, gradients averaged, rank 0 validating and writing the run folder. Worker 0
sends its progress and its one-line errors to the driver through a Ray queue; the driver
shows them and, at the end, registers the best weights in its own store.

Folders: ``--hq``/``--lq``/``--val`` may be URLs every worker reads (``s3://``, ``gs://``:
the folders ``elir batch`` reads); ``-o RUN`` must be a folder worker 0 can write and the
driver can read (the local disk with a local Ray instance, else a shared file system).
elir-cli must be installed on every node. Needs ``pip install "elir-cli[ray]"`` (Ray Train).
"""

from __future__ import annotations

import dataclasses
import json
import queue as queue_module
import shutil
import tempfile
import threading
from typing import TYPE_CHECKING, Any, Callable

from elir_cli import errors
from elir_cli.errors import ElirError

if TYPE_CHECKING:
    from elir_cli.distributed.cluster import RayOptions
    from .loop import TuneEvent, TuneResult
    from .settings import TuneSettings

POLL_S = 0.2
INSTALL_HINT = 'pip install "elir-cli[ray]"'


def _worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: one rank of the run (errors go to the driver as data, with their hint)."""
    import ray.train
    import ray.train.torch

    from .loop import Tuner
    from .parallel import from_process_group
    from .settings import settings_from_saved

    channel = config["queue"]
    context = ray.train.get_context()
    try:
        device = ray.train.torch.get_device()  # the GPU Ray Train gave this worker (its index among the visible)
        settings = settings_from_saved(config["settings"], **({"device": str(device)} if device.type == "cuda" else {}))
        dist = from_process_group(local_rank=context.get_local_rank())

        def send(event: TuneEvent) -> None:
            channel.put(("event", dataclasses.asdict(event)))

        tuner = Tuner(settings, resume=config["resume"], on_event=send,
                      log=lambda message: channel.put(("log", message)), distributed=dist, register=False)
        result = tuner.run()
        if dist.is_main:
            channel.put(("result", result.to_json()))
    except ElirError as exc:
        if context.get_world_rank() == 0:
            channel.put(("error", {"type": type(exc).__name__, "message": exc.message, "hint": exc.hint}))
        raise


def tune_on_ray(settings: "TuneSettings", options: "RayOptions", *, resume: bool = False,
                on_event: Callable[["TuneEvent"], None] | None = None, log: Callable[[str], None] | None = None,
                register: bool = True) -> "TuneResult":
    """Run ``settings`` on ``options.num_model_workers`` (default 1) Ray Train workers; see the module doc."""
    from pathlib import Path

    from elir_cli.distributed.cluster import RayUnavailableError, ray_session
    from .loop import TuneEvent, TuneResult

    try:
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer
        from ray.util.queue import Queue
    except ImportError as exc:
        raise RayUnavailableError(f"--engine ray needs Ray Train, which is not installed ({exc})",
                                  hint=INSTALL_HINT) from None
    from .export import write_json
    from .loop import SUMMARY_FILE, check_registration

    say = log or (lambda message: None)
    if register:
        check_registration(settings)
    workers = options.num_model_workers or 1
    if settings.batch % workers:
        raise errors.UsageError(f"the batch of {settings.batch} does not split evenly over {workers} workers",
                                option="batch_size", value=settings.batch,
                                hint=f"choose a {{batch_size}} that is a multiple of {workers}")
    storage = tempfile.mkdtemp(prefix="elir-tune-ray-")  # Ray Train's own records; nothing of ours
    try:
        with ray_session(options) as cluster:
            cluster.check_fits(options, workers)
            channel = Queue()
            data = {**settings.resolved(), "out": str(Path(settings.out).resolve())}
            trainer = TorchTrainer(
                _worker, train_loop_config={"settings": data, "queue": channel, "resume": resume},
                scaling_config=ScalingConfig(num_workers=workers, use_gpu=options.gpus_per_worker > 0,
                                             resources_per_worker={"CPU": options.cpus_per_worker,
                                                                   "GPU": options.gpus_per_worker}),
                run_config=RunConfig(storage_path=storage, name="elir-tune"))
            say(f"Ray Train: {workers} worker(s) on {cluster.address}")
            outcome: dict[str, Any] = {}
            thread = threading.Thread(target=_fit, args=(trainer, outcome), daemon=True)
            thread.start()
            result_json, error = None, None
            while thread.is_alive() or not channel.empty():
                try:
                    kind, payload = channel.get(timeout=POLL_S)
                except queue_module.Empty:
                    continue
                except Exception:  # the queue's actor is gone (the session ended)
                    break
                if kind == "event" and on_event is not None:
                    on_event(TuneEvent(**payload))
                elif kind == "log":
                    say(payload)
                elif kind == "result":
                    result_json = payload
                elif kind == "error":
                    error = payload
            thread.join()
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    if error is not None:
        raise getattr(errors, error["type"], ElirError)(error["message"], hint=error["hint"])
    if "error" in outcome or result_json is None:
        failure = outcome.get("error")
        raise RayUnavailableError(f"the Ray Train run failed: {errors.first_line(failure) if failure else 'no result'}",
                                  hint="run with --debug for the workers' traceback")
    result = TuneResult(**{**result_json, "out": Path(result_json["out"]), "weights": Path(result_json["weights"]),
                           "card": Path(result_json["card"])})
    if register:
        from elir_cli.registry.local import register_local_model

        model = register_local_model(settings.model_name, result.weights, task=settings.task, card=result.card,
                                     details={"steps": result.steps, "best_step": result.best_step,
                                              "best_by": result.best_by, "best": result.best,
                                              "run": str(result.out), "engine": "ray"},
                                     replace_origin=result.weights.resolve())
        result.name, result.registered = model.name, model.path
        summary = result.out / SUMMARY_FILE
        try:
            recorded = json.loads(summary.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            recorded = {}
        write_json(summary, {**recorded, "name": result.name, "registered": result.registered})
    return result


def _fit(trainer: Any, outcome: dict[str, Any]) -> None:
    try:
        outcome["result"] = trainer.fit()
    except Exception as exc:  # Ray wraps a worker's error; the worker sent ours already
        outcome["error"] = exc
