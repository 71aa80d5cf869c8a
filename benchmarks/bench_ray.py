"""Throughput of ``elir batch``: the local engine against the Ray engine, same photos, same machine.

    python benchmarks/bench_ray.py

prints, in one run of under six minutes on an idle 2-core machine, the local
engine's and the Ray engine's throughput (files/s) on the same photos and
Ray's overhead in per cent (target: under 15 %). It restores ``--files``
copies of a one-face photo (bfr at the real model size, random weights: the
work per file is the real work) with

- the local engine (one process, torch on every core),
- the Ray engine on a local Ray instance: ``--workers`` model workers with
  ``cores / workers`` CPUs each (default: one worker per core, one thread
  each); ``--one-big-worker`` adds one worker with every core,

through the library calls the command makes (``run_batch``,
``run_ray_batch``), in one process, one after the other, for ``--rounds``
rounds with the order rotated (the load of a shared machine drifts, so each
Ray run is compared with the local run of its own round). Before the rounds,
the precision is decided once (``--precision auto``: the calibration runs
and is recorded, as on a first real run), so no engine pays for it.

For each run it reports the steady throughput (files/s once the model
workers are ready, their models loaded, to the last file, so start-up is
left out; see ``timed``), the wall time including
start-up (Ray's start, the workers' imports and model loads) and the mean
time restoring one file (its record's ``seconds``). Ray's overhead is
``1 - steady(ray) / steady(local)``, the median over rounds. When the
per-file times of the engines differ (on a loaded machine a process with two
OpenMP threads loses far more to other jobs than two one-thread workers), the
difference comes from the machine, not from Ray; there, compare thread for
thread, where only Ray's machinery differs:

    python benchmarks/bench_ray.py --workers 1 --worker-cpus 1 --local-threads 1

A round that would not fit in ``--budget-s`` (estimated from the rounds so
far) is not started.

Timings on a machine shared with other jobs are noisy: compare the ratios
of one run, and rerun when the load changes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "tests" / "data" / "photos" / "faces" / "grace_hopper.jpg"
TARGET_OVERHEAD = 0.15
DEFAULT_FILES = 24
DEFAULT_ROUNDS = 3
DEFAULT_BUDGET_S = 330.0  # the whole run, under six minutes on an idle 2-core machine


def random_weights(folder: Path, task: str) -> Path:
    """Full-size random weights for ``task`` (the real amount of work per face)."""
    import torch

    from elir_cli.model.checkpoint import save_safetensors
    from elir_cli.model.elir import ElirModel
    from elir_cli.registry.tasks import get_task

    torch.manual_seed(0)
    config = get_task(task).model
    return save_safetensors(folder / f"random_{task}.safetensors", ElirModel(config).state_dict(), config, task=task)


def make_folder(folder: Path, files: int) -> Path:
    for i in range(files):
        sub = folder / f"part{i % 2}"
        sub.mkdir(parents=True, exist_ok=True)
        shutil.copy(PHOTO, sub / f"photo{i:03d}{PHOTO.suffix}")
    return folder


def timed(run: Callable[[Callable[[object], None]], list[float]]) -> dict[str, float]:
    """Run ``run(on_done)``, which returns when each of its model workers was ready (``time.time()``).

    Reports the wall time (start-up included), the steady rate and the mean time
    restoring one file (each record's ``seconds``). The steady rate leaves start-up
    (Ray's start, the workers' imports and model loads) out: each worker counts
    from the moment its model was loaded to the last file done, and the rate is
    ``files x workers / (sum of those spans)``, i.e. the files per second one
    ready worker gave, times the workers. It needs no per-file times at the
    driver, where Ray Data hands rows over in bursts. The tail (a worker idle
    while the last file finishes elsewhere) counts against Ray: up to half a
    file's time per worker, about 4 % with 24 files and 2 workers.
    """
    stamps: list[float] = []
    seconds: list[float] = []
    started = time.time()

    def done(record: object) -> None:
        stamps.append(time.time())
        seconds.append(float(getattr(record, "seconds") or 0.0))

    ready = run(done)
    wall = time.time() - started
    spans = sum(stamps[-1] - t for t in ready)
    steady = len(stamps) * len(ready) / spans if spans > 0 else 0.0
    # The share of a ready worker's time spent inside restoring files; the rest is the engine's
    # own cost (scheduling, rows, waiting for work), whatever the machine's load does to a file.
    busy = steady * (sum(seconds) / len(seconds)) / len(ready)
    return {"files": len(stamps), "wall_s": round(wall, 2), "ready_s": [round(t - started, 2) for t in ready],
            "busy": round(busy, 4),
            "steady_files_per_s": round(steady, 4), "end_to_end_files_per_s": round(len(stamps) / wall, 4),
            "seconds_per_file": round(sum(seconds) / len(seconds), 3)}


def registry_class():  # type: ignore[no-untyped-def]
    """A Ray actor that notes when each model worker is ready (RayModelWorker registers after loading)."""
    import ray

    @ray.remote(num_cpus=0)
    class Registry:
        def __init__(self) -> None:
            self.times: list[float] = []

        def register(self, handle: object, ready_at: float) -> None:
            self.times.append(ready_at)

        def ready_times(self) -> list[float]:
            return self.times

    return Registry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=DEFAULT_FILES)
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--task", default="bfr")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--one-big-worker", action="store_true", help="also: one Ray worker with every core")
    parser.add_argument("--local-threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads of the local engine (default: every core, as elir batch uses)")
    parser.add_argument("--worker-cpus", type=float, default=None,
                        help="CPUs (and torch threads) of each Ray worker (default: cores / --workers); "
                             "--workers 1 --worker-cpus 1 --local-threads 1 compares the engines thread for thread")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                        help="start no round that would end after this many seconds")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.files <= args.workers:
        parser.error(f"--files must be more than --workers ({args.workers}) to measure a steady rate")

    from elir_cli.model.runtime import request_huge_pages

    request_huge_pages()  # as the elir command does, before torch is imported (Ray's workers inherit it)
    from elir_cli.distributed import RayOptions, run_ray_batch
    from elir_cli.distributed.cluster import LOCAL_OBJECT_STORE_BYTES, BACKEND_LOG_LEVEL, BACKEND_LOG_LEVEL_ENV
    from elir_cli.distributed.cluster import _quiet_ray_data as quiet_ray_data

    os.environ.setdefault(BACKEND_LOG_LEVEL_ENV, BACKEND_LOG_LEVEL)  # as ray_session does
    from elir_cli.pipeline.batch import plan_batch, run_batch
    from elir_cli.pipeline.restorer import PhotoRestorer
    from elir_cli.pipeline.settings import RestoreSettings

    cores = os.cpu_count() or 1
    bench_started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="elir-bench-ray-") as temp:
        work = Path(temp)
        weights = random_weights(work, args.task)
        src = make_folder(work / "in", args.files)
        settings = RestoreSettings(task=args.task, weights=str(weights), seed=0, device="cpu", suffix="")
        warm = PhotoRestorer(settings, log=lambda message: print(message, flush=True))
        warm.prepare()  # --precision auto: calibrated and recorded once, here, for every engine below
        print(f"precision: {warm.device_description()}", flush=True)
        del warm

        def local(out: Path) -> Callable[[Callable[[object], None]], list[float]]:
            def run(on_done: Callable[[object], None]) -> list[float]:
                import torch

                torch.set_num_threads(args.local_threads)
                restorer = PhotoRestorer(settings)
                restorer.prepare()
                ready = time.time()
                summary = run_batch(restorer, plan_batch(src, out), on_done=on_done)
                assert summary.count("restored") == args.files, summary.to_json({})
                return [ready]
            return run

        def on_ray(out: Path, workers: int, cpus: float) -> Callable[[Callable[[object], None]], list[float]]:
            def run(on_done: Callable[[object], None]) -> list[float]:
                import ray
                # The instance run_ray_batch would start, started here so that a registry actor
                # can note when the workers are ready (run_ray_batch uses a running instance).
                with tempfile.TemporaryDirectory(prefix="elir-bench-ray-session-") as session:
                    ray.init(num_cpus=cores, include_dashboard=False, object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                             _temp_dir=session, logging_level="ERROR", log_to_driver=False)
                    try:
                        quiet_ray_data()
                        registry = registry_class().options(name="elir-bench-registry").remote()
                        ray.get(registry.ready_times.remote())  # up before the workers report to it
                        result = run_ray_batch(settings, plan_batch(src, out),
                                               RayOptions(num_model_workers=workers, cpus_per_worker=cpus),
                                               on_done=on_done, worker_registry="elir-bench-registry")
                        assert result.error is None and result.summary.count("restored") == args.files, result.error
                        times = ray.get(registry.ready_times.remote())
                        assert len(times) >= workers, times
                        return times[:workers]
                    finally:
                        ray.shutdown()
            return run

        worker_cpus = args.worker_cpus or cores / args.workers
        engines = {f"local engine (1 process, {args.local_threads} threads)": lambda out: local(out),
                   f"ray engine ({args.workers} workers x {worker_cpus:g} CPU)":
                       lambda out: on_ray(out, args.workers, worker_cpus)}
        if args.one_big_worker:
            engines[f"ray engine (1 worker x {cores} CPU)"] = lambda out: on_ray(out, 1, float(cores))
        names = list(engines)
        rounds: list[dict[str, dict[str, float]]] = []
        for r in range(args.rounds):  # rotate the order: the load on a shared machine drifts
            elapsed = time.perf_counter() - bench_started
            per_round = (elapsed / r) if r else 0.0
            if r and elapsed + per_round > args.budget_s:
                print(f"round {r + 1} not started: it would end after the {args.budget_s:.0f} s budget", flush=True)
                break
            results: dict[str, dict[str, float]] = {}
            for k in range(len(names)):
                name = names[(r + k) % len(names)]
                results[name] = timed(engines[name](work / f"out_{r}_{k}"))
                results[name]["loadavg_1min"] = round(os.getloadavg()[0], 2)
                print(f"round {r + 1}: {name}: {json.dumps(results[name])}", flush=True)
            rounds.append(results)

    local_name = names[0]
    print(f"\n{args.files} files, task {args.task}, {cores} cores, {platform.processor() or platform.machine()}, "
          f"{len(rounds)} rounds (order rotated), {time.perf_counter() - bench_started:.0f} s in all, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'engine':<36} {'steady files/s per round':>26} {'vs local':>14} {'s per file':>12} {'wall s':>10}")
    summary: dict[str, dict[str, object]] = {}
    for name in names:
        rates = [rd[name]["steady_files_per_s"] for rd in rounds]
        overheads = [1 - rd[name]["steady_files_per_s"] / rd[local_name]["steady_files_per_s"] for rd in rounds]
        walls = [rd[name]["wall_s"] for rd in rounds]
        per_file = [rd[name]["seconds_per_file"] for rd in rounds]
        busy = [rd[name]["busy"] for rd in rounds]
        summary[name] = {"steady_files_per_s": rates, "overhead_vs_local": [round(o, 4) for o in overheads],
                         "median_overhead": round(statistics.median(overheads), 4), "wall_s": walls,
                         "seconds_per_file": per_file, "busy": busy}
        print(f"{name:<36} {' '.join(f'{x:.3f}' for x in rates):>26} {' '.join(f'{o:+.0%}' for o in overheads):>14} "
              f"{' '.join(f'{x:.1f}' for x in per_file):>12} {' '.join(f'{w:.0f}' for w in walls):>10}")
    for name in names[1:]:
        overhead = summary[name]["median_overhead"]
        local_rate = statistics.median(summary[local_name]["steady_files_per_s"])
        ray_rate = statistics.median(summary[name]["steady_files_per_s"])
        verdict = "meets" if overhead < TARGET_OVERHEAD else "misses"
        print(f"{name}: {ray_rate:.3f} files/s against the local engine's {local_rate:.3f} files/s: "
              f"Ray's overhead {overhead:+.1%} (median over rounds; negative: Ray was faster), "
              f"{verdict} the target of {TARGET_OVERHEAD:.0%}")
    print("s per file is the time inside restoring a file, to tell Ray's cost from the machine's")
    for name in names:
        outside = 1 - statistics.median(summary[name]["busy"])
        print(f"{name}: {outside:.1%} of a ready worker's time outside restoring files (median; the engine's own "
              "cost, independent of how fast the machine restores a file)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"files": args.files, "task": args.task, "cores": cores,
                                        "rounds": rounds, "summary": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
