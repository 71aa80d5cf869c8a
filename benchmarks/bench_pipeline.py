"""Benchmark the whole pipeline (restore_array) on a many-face collage; prints numbers.

    python benchmarks/bench_pipeline.py --faces 24 --full [--upscale 2] [--batch-size 4]
    python benchmarks/bench_pipeline.py --bsr-photo 512 --full      # whole-photo bsr tiling, x4

Times detection, the model (all restorer calls) and everything else (alignment,
paste, tiling, copies) inside one real ``restore_array`` call, and the peak
memory of the process.

The collage repeats the test photos' faces (tests/data/photos/faces) in a
grid. The restorer is a randomly initialised ELIR model: tiny by default,
full-size with ``--full`` (the task's real configuration, random weights), so
the model time is what a real run costs on this machine.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

from elir_cli.model.runtime import request_huge_pages

request_huge_pages()  # first, as the CLI does: before torch allocates anything
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from elir_cli.faces.detection import FaceDetector  # noqa: E402
from elir_cli.model.elir import ElirModel  # noqa: E402
from elir_cli.pipeline.photo import model_restorer  # noqa: E402
from elir_cli.pipeline.restorer import restore_array
from elir_cli.model.runtime import auto_batch_size, prepare_model, resolve_runtime  # noqa: E402
from elir_cli.registry.tasks import get_task  # noqa: E402
from elir_cli.model.config import ModelConfig

PHOTOS = Path(__file__).resolve().parent.parent / "tests" / "data" / "photos" / "faces"
TINY = ModelConfig(k_steps=2, sigma_s=0.1, hid_channels=32, n_mid_blocks=1, rrdb_c_hid=16, n_rrdb=1)
CELL = 200  # px per face cell in the collage


def many_face_collage(n_faces: int, detector: FaceDetector) -> np.ndarray:
    patches = []
    for name in ("astronaut.png", "grace_hopper.jpg"):
        rgb = np.asarray(Image.open(PHOTOS / name).convert("RGB"), dtype=np.float32) / 255
        x0, y0, x1, y1 = detector.detect(rgb)[0].box
        cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, 0.9 * max(x1 - x0, y1 - y0)
        patch = rgb[int(max(0, cy - half)):int(cy + half), int(max(0, cx - half)):int(cx + half)]
        patches.append(cv2.resize(patch, (CELL, CELL), interpolation=cv2.INTER_AREA))
    cols = int(np.ceil(np.sqrt(n_faces * 4 / 3)))
    rows = int(np.ceil(n_faces / cols))
    canvas = np.full((rows * CELL, cols * CELL, 3), 0.5, np.float32)
    for i in range(n_faces):
        r, c = divmod(i, cols)
        canvas[r * CELL:(r + 1) * CELL, c * CELL:(c + 1) * CELL] = patches[i % 2]
    return canvas


class Timed:
    """Wraps a callable and adds up the wall time spent in it."""

    def __init__(self, fn):  # type: ignore[no-untyped-def]
        self.fn, self.seconds, self.calls = fn, 0.0, 0

    def __call__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=48)
    parser.add_argument("--task", default="bfr")
    parser.add_argument("--full", action="store_true", help="full-size model (random weights)")
    parser.add_argument("--upscale", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the library's (1 on the CPU)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--bsr-photo", type=int, default=0,
                        help="instead: restore a photo of this width (4:3) with bsr tiling at x4")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    task = "bsr" if args.bsr_photo else args.task
    spec = get_task(task)
    torch.manual_seed(0)
    model = prepare_model(ElirModel(spec.model if args.full else TINY), resolve_runtime("cpu", "fp32"))
    restorer = Timed(model_restorer(model, seed=0))
    detector = FaceDetector()
    if args.bsr_photo:
        width = args.bsr_photo
        rgb = np.random.default_rng(0).random((width * 3 // 4, width, 3), dtype=np.float32)
    else:
        rgb = many_face_collage(args.faces, detector)
    detector.detect(rgb[:256, :256])  # warm-up
    detector.detect = Timed(detector.detect)  # type: ignore[method-assign]

    start = time.perf_counter()
    result = restore_array(rgb, task=task, restorer=restorer, detector=detector, batch_size=args.batch_size,
                           upscale=args.upscale if not args.bsr_photo else None)
    total = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n = max(1, len(result.faces))
    t_detect = detector.detect.seconds  # type: ignore[attr-defined]
    overhead = total - restorer.seconds
    print(f"photo {rgb.shape[1]}x{rgb.shape[0]} -> {result.array.shape[1]}x{result.array.shape[0]}, task {task} "
          f"({'full-size' if args.full else 'tiny'} random model, {sum(p.numel() for p in model.parameters()):,} "
          f"parameters), batch {args.batch_size or auto_batch_size('cpu')}, {torch.get_num_threads()} threads")
    if not args.bsr_photo:
        print(f"faces            {len(result.faces)}/{args.faces} found")
        print(f"detection        {t_detect * 1000:9.1f} ms")
    print(f"model            {restorer.seconds * 1000:9.1f} ms  ({restorer.calls} batches"
          + ("" if args.bsr_photo else f", {restorer.seconds / n * 1000:.1f} ms/face") + ")")
    print(f"everything else  {(overhead - t_detect) * 1000:9.1f} ms  (alignment, paste, tiling, copies"
          + ("" if args.bsr_photo else f"; {(overhead - t_detect) / n * 1000:.2f} ms/face") + ")")
    print(f"total            {total * 1000:9.1f} ms; not model: {100 * overhead / total:.2f} % of total "
          f"(without detection {100 * (overhead - t_detect) / total:.2f} %)")
    print(f"peak memory (ru_maxrss): {peak_mb:.0f} MB")


if __name__ == "__main__":
    sys.exit(main())
