"""Benchmark the face pipeline on a many-face collage; prints numbers, asserts nothing.

    python benchmarks/bench_pipeline.py --faces 48 [--task bfr] [--upscale 2] [--batch-size 4]

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

import cv2
import numpy as np
import torch
from PIL import Image

from elir_cli.alignment import alignment_matrix
from elir_cli.detection import FaceDetector
from elir_cli.model import ElirModel
from elir_cli.paste import Canvas, crop_to_output, paste_box, resize_background, union_box
from elir_cli.pipeline import _model_input, model_restorer
from elir_cli.tasks import ModelConfig, get_task

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=48)
    parser.add_argument("--task", default="bfr")
    parser.add_argument("--full", action="store_true", help="full-size model (random weights)")
    parser.add_argument("--upscale", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = get_task(args.task)
    torch.manual_seed(0)
    model = ElirModel(spec.model if args.full else TINY).eval()
    restorer = model_restorer(model, seed=0)
    detector = FaceDetector()
    rgb = many_face_collage(args.faces, detector)
    detector.detect(rgb[:256, :256])  # warm-up

    t = time.perf_counter()
    faces = detector.detect(rgb)
    t_detect = time.perf_counter() - t
    size = spec.input_size
    background = resize_background(rgb, args.upscale)
    matrices = [alignment_matrix(f.landmarks, size) for f in faces]
    to_out = [crop_to_output(m, args.upscale) for m in matrices]
    canvas = Canvas(background, union_box([paste_box(m, size, background.shape[:2]) for m in to_out]))
    t_align = t_model = t_paste = 0.0
    for start in range(0, len(faces), args.batch_size):
        t = time.perf_counter()
        crops = np.stack([_model_input(rgb, m, spec, None) for m in matrices[start:start + args.batch_size]])
        t_align += time.perf_counter() - t
        t = time.perf_counter()
        x = torch.from_numpy(crops).permute(0, 3, 1, 2)
        y = restorer(x).permute(0, 2, 3, 1).numpy()
        t_model += time.perf_counter() - t
        t = time.perf_counter()
        for crop, m in zip(y, to_out[start:start + args.batch_size]):
            canvas.paste(crop, m)
        t_paste += time.perf_counter() - t
    t = time.perf_counter()
    canvas.result()
    t_paste += time.perf_counter() - t
    n = max(1, len(faces))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"photo {rgb.shape[1]}x{rgb.shape[0]}, {len(faces)}/{args.faces} faces found, task {args.task} "
          f"({'full-size' if args.full else 'tiny'} random model, {sum(p.numel() for p in model.parameters()):,} "
          f"parameters), crop {size}, upscale {args.upscale}, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads")
    print(f"detection        {t_detect * 1000:9.1f} ms")
    print(f"alignment        {t_align * 1000:9.1f} ms  ({t_align / n * 1000:.2f} ms/face)")
    print(f"restoration      {t_model * 1000:9.1f} ms  ({t_model / n * 1000:.1f} ms/face)")
    print(f"paste            {t_paste * 1000:9.1f} ms  ({t_paste / n * 1000:.2f} ms/face)")
    print(f"align+paste / model time: {100 * (t_align + t_paste) / max(t_model, 1e-9):.2f} %")
    print(f"peak memory (ru_maxrss): {peak_mb:.0f} MB")


if __name__ == "__main__":
    sys.exit(main())
