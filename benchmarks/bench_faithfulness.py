"""The faithfulness score, guard and colour fix: what they cost and what they do, on real photos.

Two parts:

- ``cost``: one aligned 512 face restored by bfr at the real model size
  (random weights, fp32 or --precision, K = 5), against the work added per
  face: the colour fix (wavelet and AdaIN), the score (64 x 64 low-pass PSNR
  and CIEDE2000), and the ArcFace identity (random weights: the same
  arithmetic). Medians of --runs, interleaved, in one process.
- ``colour``: the real face photos of tests/data/photos/faces, aligned at
  512, each degraded --degradations times with the paper's bfr degradation
  (``elir degrade``'s code, seeded). Without the trained weights, two
  stand-in restorations with a known answer: the ground truth itself (a
  perfect restorer) and the ground truth with a colour cast (a restorer that
  drifts). For each colour fix: the mean CIEDE2000 to the truth's colours
  (64 x 64 low-pass), the PSNR to the truth (what the fix costs a perfect
  restoration: the input's degraded low frequencies brought back), and the
  score a perfect restoration gets against its degraded input (where a guard
  threshold would start to touch correct faces).

    python benchmarks/bench_faithfulness.py                 # both parts
    python benchmarks/bench_faithfulness.py --part colour --degradations 40 --out faithfulness.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PHOTOS = ROOT / "tests" / "data" / "photos" / "faces"
CAST = np.array([0.06, 0.0, -0.05], np.float32)  # a warm cast: about 5 mean CIEDE2000 on skin
FIXES = ("none", "wavelet", "adain")


def aligned_faces(size: int = 512) -> list[tuple[str, np.ndarray]]:
    from PIL import Image

    from elir_cli.faces.alignment import align_face, alignment_matrix
    from elir_cli.faces.detection import FaceDetector

    detector = FaceDetector()
    faces = []
    for path in sorted(PHOTOS.iterdir()):
        rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
        found = detector.detect(rgb)
        if found:
            faces.append((path.name, align_face(rgb, alignment_matrix(found[0].landmarks, size), size)))
    return faces


def cpu_name() -> str:
    import torch

    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor()
    return f"{model}, torch ISA {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads"


def part_cost(runs: int, precision: str) -> dict:
    import torch

    from elir_cli.faces.identity import build_arcface
    from elir_cli.model.elir import ElirModel
    from elir_cli.model.runtime import prepare_model, runtime_for
    from elir_cli.pipeline.faithfulness import color_fix, measure
    from elir_cli.pipeline.photo import model_restorer
    from elir_cli.registry.tasks import get_task

    torch.manual_seed(0)
    model = prepare_model(ElirModel(get_task("bfr").model).eval(), runtime_for("cpu", precision, "torch"))
    arcface = build_arcface().eval()
    name, crop = aligned_faces()[0]
    x = torch.from_numpy(crop).permute(2, 0, 1)[None]

    def identity(a: np.ndarray, b: np.ndarray) -> float:
        import cv2

        grey = [cv2.resize(np.clip(im, 0, 1) @ np.array([0.299, 0.587, 0.114], np.float32) * 255, (128, 128))
                for im in (a, b)]
        with torch.inference_mode():
            e = arcface(torch.from_numpy((np.stack(grey) - 127.5) / 127.5)[:, None].float()).double().numpy()
        return float(e[0] @ e[1] / np.linalg.norm(e[0]) / np.linalg.norm(e[1]))

    steps = {
        "restore (bfr 512, K=5)": lambda: model_restorer(model, seed=0)(x),
        "colour fix, wavelet": lambda: color_fix(crop, crop, "wavelet"),
        "colour fix, adain": lambda: color_fix(crop, crop, "adain"),
        "score (low-pass PSNR + CIEDE2000)": lambda: measure("bfr", crop, crop),
        "identity (ArcFace, 2 faces)": lambda: identity(crop, crop),
    }
    for step in steps.values():  # warm-up
        step()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(runs):
        for label, step in steps.items():
            t = time.perf_counter()
            step()
            times[label].append(time.perf_counter() - t)
    median = {k: statistics.median(v) for k, v in times.items()}
    face = median["restore (bfr 512, K=5)"]
    print(f"\nCost per face ({name}, {model.precision}; {cpu_name()}; median of {runs})")
    print(f"{'step':40} {'ms':>9} {'of a face':>10}")
    for label, seconds in median.items():
        print(f"{label:40} {seconds * 1000:9.1f} {seconds / face:10.1%}")
    always_on = median["score (low-pass PSNR + CIEDE2000)"]
    print(f"always on (the score): {always_on / face:.2%} of a face's restoration")
    return {"photo": name, "precision": model.precision, "runs": runs,
            "median_s": {k: round(v, 6) for k, v in median.items()}, "score_share": always_on / face}


def part_colour(degradations: int, seed: int) -> dict:
    from elir_cli.evaluation.degrade import degrade_bfr_synthetic
    from elir_cli.pipeline.faithfulness import color_fix, low_pass, mean_delta_e, measure, psnr

    rows: dict[str, dict[str, list[float]]] = {}
    perfect_scores: list[float] = []
    rng = np.random.default_rng(seed)
    for name, gt in aligned_faces():
        gt8 = np.round(gt * 255).astype(np.uint8)
        for _ in range(degradations):
            lq = degrade_bfr_synthetic(gt8, rng).lq.astype(np.float32) / 255.0
            perfect_scores.append(measure("bfr", lq, gt).db)
            for restorer, restored in (("perfect", gt), ("colour cast", np.clip(gt + CAST, 0, 1))):
                for fix in FIXES:
                    out = color_fix(restored, lq, fix)
                    row = rows.setdefault(f"{restorer}, {fix}", {"delta_e": [], "psnr": [], "score": []})
                    row["delta_e"].append(mean_delta_e(low_pass(gt), low_pass(out)))
                    row["psnr"].append(psnr(out, gt))
                    row["score"].append(measure("bfr", lq, out).db)
    print(f"\nColour fix on {len(perfect_scores)} degraded faces (paper's bfr degradation, seed {seed})")
    print(f"{'restoration, fix':28} {'dE00 to truth':>14} {'PSNR to truth':>14} {'score vs input':>15}")
    summary = {}
    for label, row in rows.items():
        means = {k: float(np.mean(v)) for k, v in row.items()}
        summary[label] = means
        print(f"{label:28} {means['delta_e']:14.2f} {means['psnr']:14.2f} {means['score']:15.2f}")
    q = np.percentile(perfect_scores, [0, 5, 50])
    print(f"score of a perfect restoration against its degraded input: min {q[0]:.1f}, 5th percentile {q[1]:.1f}, "
          f"median {q[2]:.1f} dB")
    return {"faces": len(perfect_scores), "seed": seed, "rows": summary,
            "perfect_score_db": {"min": q[0], "p5": q[1], "median": q[2]}}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("cost", "colour", "both"), default="both")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--degradations", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    results = {"cpu": cpu_name()}
    if args.part in ("cost", "both"):
        results["cost"] = part_cost(args.runs, args.precision)
    if args.part in ("colour", "both"):
        results["colour"] = part_colour(args.degradations, args.seed)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
