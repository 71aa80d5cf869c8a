"""How far outputs move between CPU instruction sets, and that they do not move within one.

The README's determinism contract says what is byte-identical on one machine
and by how much outputs may differ between CPU families. This measures the
second line, and checks the first, on the machine it runs on:

- each task's full-size model (seeded random weights; the size of the
  sums, not their values, decides the rounding) is written once as the
  authors' ``.pth`` and as our ``.safetensors``;
- child processes restore the task's seeded input at its native size with
  the task's K steps, in float32, through ``elir_cli.registry.loading.load_float32_model``:
  natively, natively again from the other format, and with oneDNN and ATen
  forced to their AVX2 code (``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2``),
  each at 1 and at 2 threads;
- it prints, against the native ``.pth`` run at the same thread count, the
  largest and mean absolute difference of the float output (before the
  clamp to [0, 1]) and how many 8-bit pixels differ, by how many levels;
  and the native runs at 2 threads against 1 (oneDNN splits some sums by
  thread, so the thread count is part of the contract).

On an AVX2-only CPU the "forced AVX2" rows compare AVX2 with AVX2 (all zero).

Run: python benchmarks/bench_isa_drift.py [--tasks bfr denoising] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

AVX2_ONLY = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
NATIVE_SIZE = {"bfr": 512, "sr": 512, "denoising": 512, "inpainting": 256, "bsr": 256}
THREADS = (1, 2)

CHILD = """
import sys, numpy as np, torch
from elir_cli.registry.loading import load_float32_model
from elir_cli.registry.tasks import get_task
weights, task, size, threads, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
torch.set_num_threads(threads)
model = load_float32_model(weights, task=task)
gen = torch.Generator().manual_seed(1)
x = torch.rand(1, 3, size, size, generator=gen)
with torch.inference_mode():
    y = model(x, generator=torch.Generator().manual_seed(7))
np.save(out, y.numpy())
print(torch.backends.cpu.get_cpu_capability())
"""


def write_weights(task: str, folder: Path) -> dict[str, Path]:
    import torch

    from elir_cli.model.checkpoint import save_safetensors
    from elir_cli.model.elir import ElirModel
    from elir_cli.registry.tasks import get_task

    torch.manual_seed(0)
    config = get_task(task).model
    state = ElirModel(config).state_dict()
    pth = folder / f"{task}.pth"
    torch.save(state, pth)
    return {"pth": pth, "safetensors": save_safetensors(folder / f"{task}.safetensors", state, config, task=task)}


def run_child(weights: Path, task: str, threads: int, env: dict[str, str], out: Path) -> str:
    done = subprocess.run([sys.executable, "-c", CHILD, str(weights), task, str(NATIVE_SIZE[task]), str(threads),
                           str(out)], env={**os.environ, **env}, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    return done.stdout.strip()


def compare(a: np.ndarray, b: np.ndarray) -> dict[str, float | int]:
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    levels = np.abs(np.rint(np.clip(a, 0, 1) * 255).astype(np.int16) - np.rint(np.clip(b, 0, 1) * 255).astype(np.int16))
    return {"max_abs": float(diff.max()), "mean_abs": float(diff.mean()), "pixels_differ": int((levels > 0).sum()),
            "values": int(levels.size), "max_levels": int(levels.max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["bfr"], choices=sorted(NATIVE_SIZE))
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    import torch

    print(f"CPU capability: {torch.backends.cpu.get_cpu_capability()}; torch {torch.__version__}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for task in args.tasks:
            files = write_weights(task, folder)
            native_by_threads = {}
            for threads in THREADS:
                outs = {}
                for name, weights, env in (("native .pth", files["pth"], {}),
                                           ("native .pth, again", files["pth"], {}),
                                           ("native .safetensors", files["safetensors"], {}),
                                           ("forced AVX2 .safetensors", files["safetensors"], AVX2_ONLY)):
                    path = folder / f"{task}-{threads}-{len(outs)}.npy"
                    isa = run_child(weights, task, threads, env, path)
                    outs[name] = (isa, np.load(path))
                reference = outs.pop("native .pth")[1]
                native_by_threads[threads] = reference
                for name, (isa, out) in outs.items():
                    row = {"task": task, "threads": threads, "run": name, "isa": isa, **compare(out, reference)}
                    rows.append(row)
                    print(f"{task:10s} {threads} thr  {name:26s} ({isa:6s}) vs native .pth: max |diff| "
                          f"{row['max_abs']:.3g}, mean {row['mean_abs']:.3g}; 8-bit values that differ "
                          f"{row['pixels_differ']}/{row['values']}, by up to {row['max_levels']}")
            first, *others = THREADS
            for threads in others:
                row = {"task": task, "threads": threads, "run": f"native .pth vs {first} thread(s)", "isa": "native",
                       **compare(native_by_threads[threads], native_by_threads[first])}
                rows.append(row)
                print(f"{task:10s} {threads} thr  against {first} thread: max |diff| {row['max_abs']:.3g}; 8-bit values "
                      f"that differ {row['pixels_differ']}/{row['values']}, by up to {row['max_levels']}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
