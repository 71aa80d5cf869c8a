"""What ``elir serve`` costs over calling the library, and whether it holds up under load.

Two parts, against a real ``elir serve`` (uvicorn) on a free 127.0.0.1 port:

- overhead: one photo restored ``--runs`` times through ``POST /v1/restore``
  (wall time at the client: upload, multipart parsing, the queue, the worker,
  the answer) and as many times directly in this process through the same
  library calls the worker makes (``read_image`` -> ``PhotoRestorer.restore_decoded``
  -> ``encode_image``), alternating, same seed and steps. Target: server
  median < direct median x 1.05 + 20 ms.
- sustained load: ``--clients`` threads post a small photo without pause
  for ``--seconds`` (default 120) against ``--queue`` slots, so the queue
  stays full; every answer is counted by status and the server's RSS is
  sampled each second. Targets: zero 5xx, RSS at the end within 5 % of RSS
  after warm-up.

The model is the bfr architecture at full size with random weights (its cost
is the real model's), unless ``--weights`` names a file.

    python benchmarks/bench_serve.py --runs 5 --seconds 120 --out serve.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the checkout: tests.helpers
PHOTO = ROOT / "examples" / "grace_hopper_degraded.jpg"
OVERHEAD_FACTOR, OVERHEAD_MS = 1.05, 20.0
RSS_GROWTH_LIMIT = 0.05


def random_weights(folder: Path, task: str) -> Path:
    import torch

    from elir_cli.model.checkpoint import save_safetensors
    from elir_cli.model.elir import ElirModel
    from elir_cli.registry.tasks import get_task

    torch.manual_seed(0)
    config = get_task(task).model
    return save_safetensors(folder / f"random_{task}.safetensors", ElirModel(config).state_dict(), config, task=task)


def direct_restorer(weights: Path, task: str, steps: int | None):  # type: ignore[no-untyped-def]
    from elir_cli.pipeline.restorer import PhotoRestorer
    from elir_cli.pipeline.settings import RestoreSettings

    restorer = PhotoRestorer(RestoreSettings(task=task, weights=str(weights), device="cpu", steps=steps, seed=0))
    restorer.prepare()
    return restorer


def direct_once(restorer, data: bytes) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    """Wall time and minor page faults of the worker's library calls, run here."""
    import resource

    from elir_cli.images.read import make_output, read_image
    from elir_cli.images.write import encode_image

    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    image = read_image(data)
    result = restorer.restore_decoded(image)
    encode_image(make_output(image, result.array), "auto", quality=95)
    return time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults


def minor_faults(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])


def server_once(base: str, data: bytes, fields: dict[str, str]) -> tuple[float, float]:
    """Wall time at the client, and the worker's own time (decode + restore + encode, from X-Elir-Seconds
    less the queue wait)."""
    from tests.helpers.serve_helpers import post_image

    start = time.perf_counter()
    answer = post_image(base, "/v1/restore", data, fields)
    elapsed = time.perf_counter() - start
    if answer.status != 200:
        raise SystemExit(f"server answered {answer.status}: {answer.body[:300]!r}")
    timing = dict(part.split(";dur=") for part in answer.headers["server-timing"].split(", "))
    inside = sum(float(v) for k, v in timing.items() if k != "queue") / 1000
    return elapsed, inside


def summary(values: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(values), "min_s": min(values), "max_s": max(values), "n": len(values)}


def overhead(server, restorer, data: bytes, fields: dict[str, str], runs: int) -> dict[str, object]:  # type: ignore[no-untyped-def]
    server_once(server.base, data, fields)  # warm both up
    direct_once(restorer, data)
    direct, served, inside, direct_faults, server_faults = [], [], [], [], []
    for _ in range(runs):  # alternate, so that load from elsewhere falls on both
        seconds, faults = direct_once(restorer, data)
        direct.append(seconds)
        direct_faults.append(faults)
        before = minor_faults(server.proc.pid)
        wall, work = server_once(server.base, data, fields)
        server_faults.append(minor_faults(server.proc.pid) - before)
        served.append(wall)
        inside.append(work)
    d, s = statistics.median(direct), statistics.median(served)
    limit = d * OVERHEAD_FACTOR + OVERHEAD_MS / 1000
    # What HTTP adds (upload, multipart, queue hand-off, answer), free of the model's run-to-run noise:
    http = [w - i for w, i in zip(served, inside)]
    return {"direct": summary(direct), "server": summary(served), "server_worker": summary(inside),
            "overhead_ms": (s - d) * 1000, "overhead_ratio": s / d, "limit_s": limit, "ok": s < limit,
            "http_overhead_ms": statistics.median(http) * 1000,
            # load-independent: page faults per restoration, here and in the server's worker thread
            "minor_faults_direct": statistics.median(direct_faults),
            "minor_faults_server": statistics.median(server_faults),
            "http_ok": statistics.median(http) < (OVERHEAD_FACTOR - 1) * d + OVERHEAD_MS / 1000}


def sustained(server, data: bytes, fields: dict[str, str], seconds: float, clients: int) -> dict[str, object]:  # type: ignore[no-untyped-def]
    from tests.helpers.serve_helpers import post_image, rss_bytes

    for _ in range(3):
        server_once(server.base, data, fields)
    time.sleep(1.0)
    start_rss = rss_bytes(server.proc.pid)
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client() -> None:
        while time.monotonic() < stop:
            try:
                status = post_image(server.base, "/v1/restore", data, fields).status
            except OSError as exc:
                status = -1
                print(f"client error: {exc}", file=sys.stderr)
            with lock:
                statuses[status] += 1
            if status == 429:
                time.sleep(0.05)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    samples = []
    while any(t.is_alive() for t in threads):
        samples.append(rss_bytes(server.proc.pid))
        time.sleep(1.0)
    for t in threads:
        t.join()
    end_rss = rss_bytes(server.proc.pid)
    growth = (end_rss - start_rss) / start_rss
    five_xx = sum(n for s, n in statuses.items() if s >= 500 or s < 0)
    return {"seconds": seconds, "clients": clients, "statuses": dict(statuses), "five_xx": five_xx,
            "rss_start_mb": start_rss / 2**20, "rss_end_mb": end_rss / 2**20, "rss_max_mb": max(samples) / 2**20,
            "rss_growth": growth, "ok": five_xx == 0 and growth < RSS_GROWTH_LIMIT}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, help="weights file (default: random full-size bfr)")
    parser.add_argument("--task", default="bfr")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--queue", type=int, default=2)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--photo", type=Path, default=PHOTO)
    parser.add_argument("--load-photo-size", type=int, default=256, help="longest side of the load test's photo")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from PIL import Image
    from tests.helpers.serve_helpers import Server

    data = args.photo.read_bytes()
    small = Image.open(io.BytesIO(data))
    small.thumbnail((args.load_photo_size, args.load_photo_size))
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=90)
    fields = {"seed": "0", **({"steps": str(args.steps)} if args.steps else {})}
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights or random_weights(Path(tmp), args.task)
        server = Server(weights, Path(tmp) / "tmp", "--queue", str(args.queue), "--preload", task=args.task)
        try:
            restorer = direct_restorer(weights, args.task, args.steps)
            result = {"machine": {"cpus": os.cpu_count(), "load": os.getloadavg(), "python": platform.python_version()},
                      "photo": str(args.photo),
                      "overhead": overhead(server, restorer, data, fields, args.runs)}
            del restorer
            print(json.dumps(result["overhead"], indent=2), flush=True)
            result["sustained"] = sustained(server, buffer.getvalue(), fields, args.seconds, args.clients)
            print(json.dumps(result["sustained"], indent=2), flush=True)
        finally:
            server.stop()
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
