"""The GPU check: one short, prepared run on a machine with a GPU, writing one JSON.

For a session that is lent a GPU for a few minutes (and for anyone who wants
to know what their card does). In order, each part bounded so that the whole
stays under 8 minutes on a current data-centre GPU:

1. the device-dependent tests (``tests/test_runtime.py``, ``test_determinism.py``,
   ``test_model_api.py``, ``test_calibration.py``) on this device;
2. every task at every precision the device supports (fp32, bf16, fp16), at
   the real model size with random weights (speed does not depend on their
   values): milliseconds per image at batch 1 (median of --runs, after a warm-up);
3. bfr faces per second at batch 1, 4 and 8, at ``auto``'s precision;
4. a 1080p clip made here from a real photo (``--video-seconds``), through
   ``restore_video``: frames per second;
5. peak memory: the GPU's (``torch.cuda.max_memory_allocated``) per part, and
   the process's resident peak.

    python benchmarks/gpu_check.py --out gpu_check.json           # on the GPU machine
    python benchmarks/gpu_check.py --device cpu --quick            # a dry run of the script itself

The JSON names the card, the driver, torch and CUDA versions with every figure.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TESTS = ("tests/test_runtime.py", "tests/test_determinism.py", "tests/test_model_api.py", "tests/test_calibration.py")
TASKS = ("bfr", "sr", "denoising", "inpainting", "bsr")
BATCHES = (1, 4, 8)
PHOTO = ROOT / "tests" / "data" / "photos" / "faces" / "astronaut.png"


def device_info(device: str) -> dict:
    import torch

    info = {"device": device, "torch": torch.__version__, "cuda": torch.version.cuda, "python": sys.version.split()[0],
            "platform": platform.platform()}
    if device.startswith("cuda"):
        p = torch.cuda.get_device_properties(torch.device(device))
        info.update(name=p.name, capability=f"{p.major}.{p.minor}", memory_gb=round(p.total_memory / 2**30, 1))
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            info["driver"] = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
        except (OSError, subprocess.TimeoutExpired):
            info["driver"] = None
    else:
        info["name"] = platform.processor() or platform.machine()
        info["torch_isa"] = torch.backends.cpu.get_cpu_capability()
    return info


def run_tests(timeout: float) -> dict:
    started = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS],
                              cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "seconds": timeout}
    tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr.strip()[-300:]
    return {"status": "passed" if done.returncode == 0 else "failed", "summary": tail,
            "seconds": round(time.perf_counter() - started, 1)}


def _sync(device) -> None:  # type: ignore[no-untyped-def]
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_reset(device) -> None:  # type: ignore[no-untyped-def]
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device) -> float | None:  # type: ignore[no-untyped-def]
    import torch

    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None


def median_seconds(model, x, device, runs: int) -> float:  # type: ignore[no-untyped-def]
    """Median wall time of restoring ``x``, after one warm-up call (kernels chosen, memory allocated)."""
    from elir_cli.pipeline.photo import model_restorer

    restore = model_restorer(model, seed=0)
    _peak_reset(device)
    restore(x)
    _sync(device)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        restore(x)
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def time_tasks(device_name: str, runs: int, tasks: tuple[str, ...]) -> list[dict]:
    import torch

    from elir_cli.model.elir import ElirModel
    from elir_cli.model.runtime import prepare_model, runtime_for, supported_precisions
    from elir_cli.registry.tasks import get_task

    device = torch.device(device_name)
    rows = []
    for task in tasks:
        spec = get_task(task)
        size = 512 if spec.kind == "image" else spec.input_size  # bsr: one 512 tile of the tiler
        x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
        for precision in supported_precisions(device):
            torch.manual_seed(0)
            model = prepare_model(ElirModel(spec.model).eval(), runtime_for(device, precision))
            ms = median_seconds(model, x, device, runs) * 1000
            rows.append({"task": task, "size": size, "precision": precision, "ms": round(ms, 2),
                         "images_per_s": round(1000 / ms, 2), "peak_mb": _peak_mb(device)})
            print(f"{task:11} {size:4} {precision:5} {ms:9.1f} ms  {1000 / ms:7.2f}/s", flush=True)
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def faces_per_second(device_name: str, runs: int) -> list[dict]:
    import torch

    from elir_cli.model.elir import ElirModel
    from elir_cli.model.runtime import prepare_model, runtime_for
    from elir_cli.registry.tasks import get_task

    device = torch.device(device_name)
    torch.manual_seed(0)
    model = prepare_model(ElirModel(get_task("bfr").model).eval(), runtime_for(device, "auto"))
    rows = []
    for batch in BATCHES:
        x = torch.rand(batch, 3, 512, 512, generator=torch.Generator().manual_seed(batch))
        rate = batch / median_seconds(model, x, device, runs)
        rows.append({"batch": batch, "precision": model.precision, "faces_per_s": round(rate, 2),
                     "peak_mb": _peak_mb(device)})
        print(f"bfr batch {batch}: {rate:.2f} faces/s ({model.precision})", flush=True)
    return rows


def video_fps(device_name: str, seconds: float, precision: str) -> dict:
    """A 1080p clip (a slow zoom over a real photo, 25 fps) through restore_video with bfr at auto."""
    import numpy as np
    import torch
    from PIL import Image

    import av

    from elir_cli.model.checkpoint import save_safetensors
    from elir_cli.model.elir import ElirModel
    from elir_cli.pipeline.restorer import PhotoRestorer
    from elir_cli.pipeline.settings import RestoreSettings
    from elir_cli.registry.tasks import get_task
    from elir_cli.video.stream import VideoOptions, restore_video

    width, height, fps = 1920, 1080, 25
    frames = max(1, int(seconds * fps))
    photo = np.asarray(Image.open(PHOTO).convert("RGB"))
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "clip.mp4", Path(tmp) / "out.mp4"
        with av.open(str(src), "w") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            for i in range(frames):
                zoom = 1.0 + 0.002 * i
                side = int(height / zoom)
                canvas = np.zeros((height, width, 3), np.uint8)
                face = np.asarray(Image.fromarray(photo).resize((side, side)))
                top, left = (height - side) // 2, (width - side) // 2
                canvas[top:top + side, left:left + side] = face
                for packet in stream.encode(av.VideoFrame.from_ndarray(canvas, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        config = get_task("bfr").model
        torch.manual_seed(0)
        weights = save_safetensors(Path(tmp) / "bfr_random.safetensors", ElirModel(config).state_dict(), config,
                                   task="bfr")  # random weights of the real size
        settings = RestoreSettings(task="bfr", weights=str(weights), device=device_name, seed=0, precision=precision)
        restorer = PhotoRestorer(settings)
        device = torch.device(device_name)
        _peak_reset(device)
        record = restore_video(src, dst, files=restorer, settings=settings, options=VideoOptions())
    print(f"1080p video: {record.fps} frames/s over {record.frames} frames", flush=True)
    return {"width": width, "height": height, "frames": record.frames, "fps": record.fps, "precision": precision,
            "faces_per_frame": max(record.faces_per_frame, default=0), "peak_mb": _peak_mb(device)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--video-seconds", type=float, default=4.0)
    parser.add_argument("--tests-timeout", type=float, default=180.0)
    parser.add_argument("--quick", action="store_true", help="a dry run: bfr only, 1 run, a 0.2 s clip, no tests")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    result: dict = {"machine": device_info(args.device), "quick": args.quick}
    runs = 1 if args.quick else args.runs
    result["tests"] = None if args.quick else run_tests(args.tests_timeout)
    result["tasks"] = time_tasks(args.device, runs, ("bfr",) if args.quick else TASKS)
    result["batches"] = faces_per_second(args.device, runs)
    result["video"] = video_fps(args.device, 0.2 if args.quick else args.video_seconds,
                                "fp32" if args.quick else "auto")
    result["process_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["seconds"] = round(time.perf_counter() - started, 1)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out} in {result['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
