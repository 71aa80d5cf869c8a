"""Where the bf16 path spends its time: torch profiler per op kind and per stage.

Profiles one restoration of a task at its native size on the path ``--precision
auto`` takes on a bf16 CPU (weights cast to bf16 once, channels-last, fused
oneDNN convs), after warm-up, and prints per op kind: time, share, calls,
and the convolutions' FLOPs and GFLOP/s against a bf16 matmul measured in
the same run, and the time in dtype conversions. Also each stage's time.

A shared machine preempts single ops for milliseconds, so every op instance
is timed in each of ``--runs`` identical restorations and its *minimum* is
kept (the op sequence is the same in every run): the sum of those minima
estimates the unloaded time, op by op. FLOPs are counted by kind
(convolutions, matmuls) with ``torch.utils.flop_counter`` on the plain ATen
path (``cpu_conv.plain_convs``), as ``bench_model.py`` counts them. Random
weights: speed does not depend on them.

Run: python benchmarks/profile_bf16.py [--task bfr] [--runs 2]
"""

from __future__ import annotations

import argparse
import collections
import time

from elir_cli.model.runtime import request_huge_pages

request_huge_pages()
import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from elir_cli.model.elir import ElirModel  # noqa: E402
from elir_cli.model.runtime import prepare_model, resolve_runtime  # noqa: E402
from elir_cli.registry.tasks import get_task  # noqa: E402

NATIVE_SIZE = {"bfr": 512, "sr": 256, "denoising": 256, "inpainting": 256, "bsr": 256}
MATMUL_N = 4096
MATMUL_TRIES = 10  # the best of these: a loaded machine only ever slows it


def bf16_matmul_rate() -> float:
    a = torch.randn(MATMUL_N, MATMUL_N).bfloat16()
    b = torch.randn(MATMUL_N, MATMUL_N).bfloat16()
    out = torch.empty(MATMUL_N, MATMUL_N, dtype=torch.bfloat16)
    torch.matmul(a, b, out=out)
    best = 0.0
    for _ in range(MATMUL_TRIES):
        start = time.perf_counter()
        torch.matmul(a, b, out=out)
        best = max(best, 2 * MATMUL_N**3 / (time.perf_counter() - start) / 1e9)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="bfr", choices=sorted(NATIVE_SIZE))
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--top", type=int, default=18)
    args = parser.parse_args()
    size = NATIVE_SIZE[args.task]
    torch.manual_seed(0)
    model = prepare_model(ElirModel(get_task(args.task).model), resolve_runtime("cpu", "bf16"))
    x = torch.rand(1, 3, size, size)
    noise = torch.randn(1, model.config.latent_channels, size // 8, size // 8)
    peak = bf16_matmul_rate()
    with torch.inference_mode():
        model(x, noise=noise)  # warm-up: packs the weights
        start = time.perf_counter()
        for _ in range(args.runs):
            model(x, noise=noise)
        whole = (time.perf_counter() - start) / args.runs
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True, with_flops=False) as prof:
            for _ in range(args.runs):
                model(x, noise=noise)
        xc = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            z = model.encode(xc)
            zm = model.coarse(z)
            stages = {}
            for name, fn in (("encoder", lambda: model.encode(xc)), ("coarse", lambda: model.coarse(z)),
                             ("vector field step", lambda: model.velocity(zm.float(), 0.5)),
                             ("decoder", lambda: model.decode(zm))):
                fn()
                start = time.perf_counter()
                fn()
                stages[name] = time.perf_counter() - start
    events = [e for e in prof.events() if e.cpu_parent is None]
    per_run = len(events) // args.runs
    if per_run * args.runs != len(events):
        raise SystemExit(f"the {args.runs} runs did not record the same ops ({len(events)} top-level events)")
    events.sort(key=lambda e: e.time_range.start)
    runs = [events[i * per_run:(i + 1) * per_run] for i in range(args.runs)]
    totals: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0, 0.0])
    conversions = 0.0
    for i, first in enumerate(runs[0]):
        names = {run[i].name for run in runs}
        if len(names) != 1:
            raise SystemExit(f"op {i} differs between runs: {names}")
        seconds = min(op_seconds(run[i]) for run in runs)
        entry = totals[first.name]
        entry[0] += seconds
        entry[1] += 1
        if first.name in ("aten::to", "aten::_to_copy", "aten::copy_"):
            conversions += seconds
    total = sum(t for t, _, _ in totals.values())
    flop_by_kind = counted_flops(model, x, noise)
    flops = sum(flop_by_kind.values())
    conv_seconds = sum(totals[name][0] for name in CONV_OPS if name in totals)
    mm_seconds = sum(totals[name][0] for name in MM_OPS if name in totals)
    print(f"{args.task} {size}: {whole:.3f} s per restoration (unprofiled, median of loaded runs); "
          f"sum of per-op minima {total:.3f} s; bf16 matmul {peak:.0f} GFLOP/s (best of {MATMUL_TRIES})")
    print(f"at the per-op minima: {flops / 1e9:.0f} GFLOP in {total:.3f} s = {flops / total / 1e9:.0f} GFLOP/s = "
          f"{100 * flops / total / 1e9 / peak:.0f}% of that matmul")
    print("stages (one run each): " + ", ".join(f"{k} {v:.3f} s" for k, v in stages.items()))
    print(f"\n{'op (top level, min over runs)':<44}{'s':>8}{'share':>7}{'calls':>7}")
    for name, (seconds, calls, _) in sorted(totals.items(), key=lambda kv: -kv[1][0])[:args.top]:
        print(f"{name[:43]:<44}{seconds:>8.3f}{100 * seconds / total:>6.1f}%{calls:>7}")
    print(f"{'(all)':<44}{total:>8.3f}   dtype conversions: {conversions * 1e3:.1f} ms")
    conv_fl, mm_fl = flop_by_kind.get("convolution", 0.0), flop_by_kind.get("mm", 0.0)
    print(f"\nby kind: convolutions (oneDNN fused + transposed) {conv_seconds:.3f} s "
          f"({100 * conv_seconds / total:.0f}%), {conv_fl / 1e9:.0f} GFLOP = "
          f"{100 * conv_fl / conv_seconds / 1e9 / peak:.0f}% of the bf16 matmul; matmuls {mm_seconds * 1e3:.1f} ms, "
          f"{mm_fl / 1e9:.2f} GFLOP; everything else {total - conv_seconds - mm_seconds:.3f} s "
          f"({100 * (total - conv_seconds - mm_seconds) / total:.0f}%, no FLOPs counted)")


CONV_OPS = ("mkldnn::_convolution_pointwise", "aten::conv_transpose2d", "aten::_convolution", "aten::conv2d",
            "aten::convolution", "aten::mkldnn_convolution")
MM_OPS = ("aten::addmm", "aten::linear", "aten::mm", "aten::matmul")


def counted_flops(model: ElirModel, x: torch.Tensor, noise: torch.Tensor) -> dict[str, float]:
    """FLOPs of one restoration by kind (``convolution``, ``mm``), counted on ATen's plain ops."""
    from torch.utils.flop_counter import FlopCounterMode

    from elir_cli.model.cpu_conv import plain_convs

    with torch.inference_mode(), plain_convs(), FlopCounterMode(display=False) as counter:
        model(x, noise=noise)
    kinds: dict[str, float] = collections.defaultdict(float)
    for op, count in counter.get_flop_counts()["Global"].items():
        name = str(op)
        kinds["convolution" if "conv" in name else "mm" if "mm" in name else name] += count
    return dict(kinds)


def op_seconds(event: object) -> float:
    """Inclusive CPU time of a top-level op (its children are its own kernels)."""
    return event.cpu_time_total / 1e6  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
