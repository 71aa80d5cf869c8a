"""ELIR speed on this machine: eager reference vs our optimised path, per task.

Times, in one process and one run (medians of --runs after a warm-up, with
min and max):

- a large float32 matmul, as the machine's practical peak (GFLOP/s);
- the plain eager reference forward (tests/reference_elir.py: NCHW, no
  allocator tuning), per task at its native size;
- the GFPGAN v1.4 architecture (spandrel's GFPGANv1Clean, random weights) on a
  512 face, which users compare us with;
- our optimised path (runtime.prepare_model: channels-last, tuned allocator,
  inference mode), per task, with its stages (encoder, coarse estimator, one
  vector-field step, decoder), FLOPs and GFLOP/s against the matmul peak,
  and the largest difference to the reference output.

Random weights: speed does not depend on their values. Prints a table and
writes JSON (--json). Run: python benchmarks/bench_model.py [--tasks bfr]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from reference_elir import reference_forward  # noqa: E402

from elir_cli.model import ElirModel  # noqa: E402
from elir_cli.runtime import cpu_supports_bf16, prepare_model, resolve_runtime, tune_cpu_allocator  # noqa: E402
from elir_cli.tasks import get_task, task_names  # noqa: E402

NATIVE_SIZE = {"bfr": 512, "sr": 256, "denoising": 256, "inpainting": 256, "bsr": 256}
MATMUL_N = 4096
EQUAL_TOL = 1e-4


def timed(fn: Callable[[], object], runs: int, warmup: int = 1) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def matmul_peak(runs: int) -> float:
    """The best rate of a large fp32 matmul: the practical peak (a shared machine only slows it)."""
    a, b = torch.randn(MATMUL_N, MATMUL_N), torch.randn(MATMUL_N, MATMUL_N)
    t = timed(lambda: a @ b, runs=max(runs, 5), warmup=2)
    return 2 * MATMUL_N**3 / t["min"] / 1e9


def flops_of(fn: Callable[[], object]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def gfpgan_v14(runs: int) -> dict[str, float] | None:
    try:
        from spandrel.architectures.GFPGAN.__arch.gfpganv1_clean_arch import GFPGANv1Clean
    except ImportError:
        return None
    net = GFPGANv1Clean(out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None,
                        fix_decoder=False, num_mlp=8, input_is_latent=True, different_w=True, narrow=1,
                        sft_half=True).eval()
    x = torch.rand(1, 3, 512, 512) * 2 - 1
    with torch.inference_mode():
        return timed(lambda: net(x, return_rgb=False), runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=task_names(), choices=task_names())
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/model.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict[str, object] = {
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
                    "torch": torch.__version__, "python": platform.python_version()},
    }
    peak = matmul_peak(args.runs)
    results["matmul_gflops"] = peak
    print(f"matmul peak (best of {MATMUL_N}^3 fp32, {args.threads} threads): {peak:.1f} GFLOP/s")

    inputs, models, reference = {}, {}, {}
    gen = torch.Generator().manual_seed(0)
    for task in args.tasks:
        size = NATIVE_SIZE[task]
        torch.manual_seed(0)
        models[task] = ElirModel(get_task(task).model).eval()
        x = torch.rand(1, 3, size, size, generator=gen)
        noise = torch.randn(1, 16, size // 8, size // 8, generator=gen)
        inputs[task] = (x, noise)
        sd = {k: v.detach() for k, v in models[task].state_dict().items()}
        cfg = models[task].config
        with torch.inference_mode():
            run = lambda sd=sd, x=x, noise=noise, cfg=cfg: reference_forward(  # noqa: E731
                sd, x, noise, k_steps=cfg.k_steps, sigma_s=cfg.sigma_s)
            reference[task] = {"time": timed(run, args.runs), "y": run()}
        print(f"eager reference {task} {size}: {reference[task]['time']['median']:.3f} s")

    tuned = tune_cpu_allocator()
    results["allocator_tuned"] = tuned
    gfp = gfpgan_v14(args.runs)
    results["gfpgan_v1.4_512"] = gfp
    if gfp:
        print(f"GFPGAN v1.4 architecture 512: {gfp['median']:.3f} s")

    runtime = resolve_runtime("cpu", "fp32")
    rows = []
    for task in args.tasks:
        x, noise = inputs[task]
        model = prepare_model(models[task], runtime)
        with torch.inference_mode():
            full = timed(lambda: model(x, noise=noise), args.runs)
            y = model(x, noise=noise)
            xc = x.contiguous(memory_format=torch.channels_last)
            z = model.encode(xc)
            zm = model.coarse(z)
            stages = {
                "encoder": timed(lambda: model.encode(xc), args.runs),
                "coarse": timed(lambda: model.coarse(z), args.runs),
                "vector_field_step": timed(lambda: model.velocity(zm, 0.5), args.runs),
                "decoder": timed(lambda: model.decode(zm), args.runs),
            }
            flops = flops_of(lambda: model(x, noise=noise))
        bf16 = None
        if cpu_supports_bf16():
            model.compute_dtype = torch.bfloat16
            with torch.inference_mode():
                bf16 = timed(lambda: model(x, noise=noise), args.runs)
                bf16["max_abs_diff_vs_fp32"] = (model(x, noise=noise) - y).abs().max().item()
            model.compute_dtype = None
        diff = (y - reference[task]["y"]).abs().max().item()
        ref_t = reference[task]["time"]["median"]
        row = {
            "task": task, "size": NATIVE_SIZE[task], "reference": reference[task]["time"], "optimised": full,
            "ratio": full["median"] / ref_t, "max_abs_diff": diff, "gflop": flops / 1e9,
            "gflops_per_s": flops / 1e9 / full["median"], "peak_fraction": flops / 1e9 / full["median"] / peak,
            "best_peak_fraction": flops / 1e9 / full["min"] / peak,
            "stages": stages, "peak_rss_mb": peak_rss_mb(), "bf16_autocast": bf16,
        }
        rows.append(row)
        assert diff <= EQUAL_TOL, f"{task}: optimised output differs from the reference by {diff}"
    results["tasks"] = rows

    print()
    header = f"{'task':<11}{'size':>5}{'eager s':>9}{'ours s':>8}{'min-max':>14}{'ratio':>7}{'GFLOP':>7}{'GFLOP/s':>9}{'%peak':>7}{'max|d|':>9}"
    print(header)
    for r in rows:
        o = r["optimised"]
        print(f"{r['task']:<11}{r['size']:>5}{r['reference']['median']:>9.3f}{o['median']:>8.3f}"
              f"{o['min']:>7.2f}-{o['max']:<6.2f}{r['ratio']:>7.2f}{r['gflop']:>7.0f}{r['gflops_per_s']:>9.1f}"
              f"{100 * r['peak_fraction']:>6.0f}%{r['max_abs_diff']:>9.1e}")
    print("(%peak: the median run against the best matmul run; best run against it:",
          ", ".join(f"{r['task']} {100 * r['best_peak_fraction']:.0f}%" for r in rows) + ")")
    print()
    for r in rows:
        s = r["stages"]
        print(f"{r['task']:<11} encoder {s['encoder']['median']:.3f} s, coarse {s['coarse']['median']:.3f} s, "
              f"one vector-field step {s['vector_field_step']['median']:.3f} s, decoder {s['decoder']['median']:.3f} s")
    for r in rows:
        if r["bf16_autocast"]:
            b = r["bf16_autocast"]
            print(f"{r['task']:<11} --precision bf16 (AMX/AVX512-BF16): {b['median']:.3f} s "
                  f"({r['optimised']['median'] / b['median']:.1f}x fp32), max |fp32 - bf16| {b['max_abs_diff_vs_fp32']:.3f}")
    if gfp and any(r["task"] == "bfr" for r in rows):
        bfr = next(r for r in rows if r["task"] == "bfr")
        print(f"\nbfr per face {bfr['optimised']['median']:.2f} s vs GFPGAN v1.4 {gfp['median']:.2f} s "
              f"({gfp['median'] / bfr['optimised']['median']:.2f}x)")
    print(f"peak RSS {peak_rss_mb():.0f} MB")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
