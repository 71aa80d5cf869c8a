"""``elir tune`` speed on this machine: training steps per second (default: bfr at 512 px, batch 4, CPU).

One step as ``elir tune`` takes it (:class:`elir_cli.tuning.loop.Tuner`): the batch made from
real photos (the three portraits of ``tests/data/photos/faces``, twice each under other names,
resized to ``--size``; bfr's LQ made on the fly with ``elir degrade``'s bfr-synthetic), noise and
times from the step's seed, the authors' objective (``l2_cfm_mse_loss``) with a frozen teacher,
backward, AdamW's step, the EMA's update; under the run's deterministic settings. The model
is the task's real architecture with random weights (speed does not depend on their values;
nothing is downloaded); the teacher is its own autoencoder (TAESD3's shapes).

Times, after ``--warmup`` untimed steps, ``--steps`` timed ones: the data (making the batch) and
the step (the rest), each as median / min / max, and steps/s; then what ``elir tune``'s
defaults (2000 steps) would take, and whether it would refuse the run on this CPU (more
than a day). Prints a table; ``--json FILE`` writes the numbers.

    python benchmarks/bench_tune.py                               # bfr, 512 px, batch 4, CPU: minutes
    python benchmarks/bench_tune.py --task sr --size 256 --batch-size 8
    python benchmarks/bench_tune.py --size 64 --steps 2 --warmup 1    # a quick dry run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
FACES = ROOT / "tests" / "data" / "photos" / "faces"
DEFAULT_STEPS = 5
DEFAULT_WARMUP = 1
RUN_STEPS = 2000  # elir tune's default
DAY_S = 24 * 3600.0


def photo_folder(folder: Path, copies: int) -> Path:
    """The real portraits, ``copies`` times each under other names (a batch needs that many images)."""
    for i in range(copies):
        for photo in sorted(FACES.iterdir()):
            if photo.suffix.lower() in (".png", ".jpg"):
                shutil.copy(photo, folder / f"{photo.stem}_{i}{photo.suffix}")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="bfr")
    parser.add_argument("--size", type=int, default=None, help="training size (default: the task's)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: elir tune's (4 for bfr, 8 otherwise)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import torch

    from elir_cli.model.elir import ElirModel
    from elir_cli.model.runtime import resolve_device
    from elir_cli.registry.tasks import get_task
    from elir_cli.tuning.data import (Geometry, ImageFolder, PairSource, TrainingSet, degradation, derived_seed,
                                      pair)
    from elir_cli.tuning.loop import deterministic
    from elir_cli.tuning.objectives import Teacher, draw_times, objective
    from elir_cli.tuning.settings import TuneSettings
    from elir_cli.tuning.trainable import ModelEMA, make_optimizer, set_trainable

    if args.threads:
        torch.set_num_threads(args.threads)
    task = get_task(args.task)
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        hq = photo_folder(Path(tmp), copies=2)
        s = TuneSettings(task=args.task, hq=str(hq), out=Path(tmp) / "run", batch_size=args.batch_size,
                         size=args.size, teacher="self")
        torch.manual_seed(0)
        model = ElirModel(task.model)
        teacher = Teacher.from_model(model).to(device)
        set_trainable(model, s.parts)
        model.to(device)
        optimizer = make_optimizer(model, s.learning_rate)
        ema = ModelEMA(model, decay=s.recipe.ema_decay)
        folder = ImageFolder(str(hq), what="--hq")
        items = pair(folder, None)
        data = TrainingSet(items, PairSource(folder, None, Geometry(task, s.crop)), batch_size=s.batch, seed=s.seed,
                           degrade=degradation(task))
        config = s.recipe.objective
        latent = (s.batch, model.config.latent_channels, s.crop // 8, s.crop // 8)
        data_s, step_s = [], []
        with deterministic(device):
            for step in range(args.warmup + args.steps):
                t0 = time.perf_counter()
                x_hq, x_lq = data.batch(step)
                t1 = time.perf_counter()
                generator = torch.Generator().manual_seed(derived_seed(s.seed, "noise", step))
                noise = torch.randn(latent, generator=generator)
                times = draw_times(s.batch, dt=config.dt, generator=generator)
                terms = objective(model, x_hq.to(device), x_lq.to(device), config, teacher=teacher,
                                  noise=noise.to(device), times=times.to(device))
                optimizer.zero_grad(set_to_none=True)
                terms.total.backward()
                optimizer.step()
                ema.update(model)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t2 = time.perf_counter()
                if step >= args.warmup:
                    data_s.append(t1 - t0)
                    step_s.append(t2 - t1)
                print(f"step {step + 1}: data {t1 - t0:.3f} s, step {t2 - t1:.3f} s, loss {float(terms.total.detach()):.4g}"
                      + (" (warm-up)" if step < args.warmup else ""), file=sys.stderr)

    total = [a + b for a, b in zip(data_s, step_s)]
    per_step = statistics.median(total)
    result = {
        "task": args.task, "size": s.crop, "batch_size": s.batch, "device": str(device),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "machine": platform.processor() or
        platform.machine(), "cpus": os.cpu_count(), "steps_timed": args.steps,
        "data_s": {"median": statistics.median(data_s), "min": min(data_s), "max": max(data_s)},
        "step_s": {"median": statistics.median(step_s), "min": min(step_s), "max": max(step_s)},
        "steps_per_s": 1.0 / per_step, "images_per_s": s.batch / per_step,
        "default_run_hours": RUN_STEPS * per_step / 3600, "refused_on_cpu": device.type == "cpu" and
        RUN_STEPS * per_step > DAY_S,
    }
    print(f"elir tune --task {args.task}: {s.crop} px, batch {s.batch}, {device} ({result['threads']} threads)")
    print(f"{'':14}{'median':>10}{'min':>10}{'max':>10}")
    for name in ("data_s", "step_s"):
        r = result[name]
        print(f"{name:14}{r['median']:>10.3f}{r['min']:>10.3f}{r['max']:>10.3f}")
    print(f"steps/s {result['steps_per_s']:.3f} ({result['images_per_s']:.2f} images/s); {RUN_STEPS} steps "
          f"(the default) would take {result['default_run_hours']:.1f} h"
          + ("; elir tune refuses that on a CPU without --force" if result["refused_on_cpu"] else ""))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
