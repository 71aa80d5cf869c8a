"""Benchmark ``elir eval``: the time spent outside the restoration; prints numbers.

    python benchmarks/bench_eval.py [--images 100] [--size 256] [--task sr] [--model-images 3]

Target (issue 15): over 100 images at 256 px with PSNR, SSIM and consistency,
the time outside the restoration is under 10 % of the whole run.

What is measured, all in this one run:

1. ``elir degrade`` of the HQ set (reported, not part of the target).
2. The evaluation with an identity restorer (the pipeline runs, the model
   does not): set-up (pyiqa import, metric creation, pairing), reading,
   the pipeline's own work, metrics, consistency, PNGs of the restored
   images, the JSON/Markdown/HTML outputs. The restorer calls are timed
   apart; everything else is "outside the restoration".
3. The evaluation of ready-made files (``--restored``): metrics only.
4. The real restoration cost: the task's full-size ELIR (random weights;
   speed does not depend on their values) on ``--model-images`` aligned
   inputs, per image, times the number of images.

The fraction is outside / (outside + real restoration). The HQ images are
crops of the test photos (tests/data/photos/faces), varied in position,
scale and mirroring so that no two are the same.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from elir_cli.model.runtime import request_huge_pages

request_huge_pages()
import torch  # noqa: E402

from elir_cli.evaluation.degrade import degrade_folder  # noqa: E402
from elir_cli.evaluation.evaluate import EvalSettings, Evaluator  # noqa: E402
from elir_cli.evaluation.images import encode_png, read_uint8, resize_bicubic_uint8  # noqa: E402
from elir_cli.model.elir import ElirModel  # noqa: E402
from elir_cli.pipeline.photo import model_restorer  # noqa: E402
from elir_cli.pipeline.restorer import restore_array
from elir_cli.registry.tasks import get_task  # noqa: E402

PHOTOS = Path(__file__).resolve().parent.parent / "tests" / "data" / "photos" / "faces"


def make_hq(folder: Path, count: int, size: int) -> None:
    rng = np.random.default_rng(0)
    photos = [read_uint8(p) for p in sorted(PHOTOS.iterdir())]
    folder.mkdir(parents=True)
    for i in range(count):
        photo = photos[i % len(photos)]
        side = int(rng.integers(min(photo.shape[:2]) // 2, min(photo.shape[:2]) + 1))
        y = int(rng.integers(0, photo.shape[0] - side + 1))
        x = int(rng.integers(0, photo.shape[1] - side + 1))
        crop = photo[y:y + side, x:x + side]
        if i % 2:
            crop = crop[:, ::-1]
        (folder / f"{i:04d}.png").write_bytes(encode_png(resize_bicubic_uint8(np.ascontiguousarray(crop), (size, size))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--task", default="sr", choices=["sr", "denoising", "inpainting"])
    parser.add_argument("--model-images", type=int, default=3, help="images the full-size model restores")
    args = parser.parse_args()
    metrics = "psnr,ssim,consistency"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.images} images at {args.size}, "
          f"task {args.task}, metrics {metrics}")
    root = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    try:
        make_hq(root / "hq", args.images, args.size)
        t0 = time.perf_counter()
        degrade_folder(args.task, root / "hq", root / "lq", size=args.size)
        print(f"degrade: {time.perf_counter() - t0:.2f} s ({(time.perf_counter() - t0) / args.images * 1000:.1f} ms/image)")

        calls: list[float] = []

        def identity(x: torch.Tensor) -> torch.Tensor:
            t = time.perf_counter()
            y = x.clone()
            calls.append(time.perf_counter() - t)
            return y

        t0 = time.perf_counter()
        evaluator = Evaluator(EvalSettings(task=args.task, lq_dir=root / "lq", gt_dir=root / "hq", out_dir=root / "out",
                                           metrics=metrics, device="cpu"), restorer=identity)
        setup = time.perf_counter() - t0
        result = evaluator.run()
        timing = result["timing"]
        pipeline = timing["restore_s"] - sum(calls)  # restore_array's own work around the restorer
        outside = setup + timing["total_s"] - sum(calls)
        print(f"eval, identity restorer: set-up {setup:.2f} s, run {timing['total_s']:.2f} s, of which "
              f"restore_array {timing['restore_s']:.2f} s (restorer calls {sum(calls):.3f} s, pipeline {pipeline:.2f} s), "
              f"metrics/IO/report {timing['other_s']:.2f} s")
        print(f"  outside the restoration: {outside:.2f} s ({outside / args.images * 1000:.1f} ms/image)")

        t0 = time.perf_counter()
        Evaluator(EvalSettings(task=args.task, lq_dir=root / "lq", gt_dir=root / "hq", out_dir=root / "out2",
                               restored_dir=root / "out" / "restored", metrics=metrics, device="cpu")).run()
        print(f"eval --restored (metrics only): {time.perf_counter() - t0:.2f} s")

        spec = get_task(args.task)
        torch.manual_seed(0)
        model = ElirModel(spec.model).eval()
        lq_files = sorted((root / "lq").glob("*.png"))[:args.model_images]
        per_image = []
        for path in lq_files:
            lq = read_uint8(path).astype(np.float32) / 255.0
            t = time.perf_counter()
            restore_array(lq, task=args.task, restorer=model_restorer(model, seed=2025), aligned=True, upscale=1)
            per_image.append(time.perf_counter() - t)
        rest = per_image[1:] or per_image  # the first includes the warm-up
        real = statistics.median(rest) * args.images
        print(f"full-size {args.task} ELIR (K={spec.model.k_steps}): {', '.join(f'{t:.2f}' for t in per_image)} s per image "
              f"(first includes warm-up); median {statistics.median(rest):.2f} s -> {real:.0f} s for {args.images} images")
        fraction = outside / (outside + real)
        print(f"time outside the restoration: {outside:.1f} s of {outside + real:.1f} s = {100 * fraction:.1f} % "
              f"(target < 10 %): {'met' if fraction < 0.10 else 'NOT met'}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
