"""ELIR speed on this machine: eager reference vs our optimised path, per task.

Times, in one run (medians of --runs after a warm-up, with min and max):

- a large float32 matmul into a preallocated output, as the machine's
  practical peak (GFLOP/s);
- the plain eager reference forward (tests/helpers/reference_elir.py: NCHW, no
  allocator tuning, PyTorch's default settings), per task at its native size;
- the GFPGAN v1.4 architecture (spandrel's GFPGANv1Clean, random weights) on a
  512 face, which users compare us with: as its users run it (PyTorch's
  defaults), and with our process settings (architecture against
  architecture);
- our optimised path (as the CLI runs it: huge pages, tuned allocator,
  channels-last, inference mode), per task, with its stages (encoder, coarse
  estimator, one vector-field step, decoder), FLOPs and GFLOP/s against the
  matmul peak, the largest difference to the reference output, and bf16.

The machine is shared and its speed drifts by tens of percent within
minutes, so the contenders are timed round-robin: each round runs the
matmul, ours, the eager reference and GFPGAN once, one after the other, so
a slow period slows all of them. The eager reference and the default-settings
GFPGAN run in a child process started with PyTorch's defaults (no huge pages,
glibc's default allocator), driven in lockstep by this one: the settings a
user of the authors' code or of GFPGAN gets, which one process cannot have
next to ours (both are process-wide and fixed at start-up). The parent waits
while the child runs.

"%peak" is the median run against the best matmul of the whole benchmark
(the conservative figure); "paired" is the median over rounds of each run's
rate against that round's matmul. Both are given twice: with the FLOPs our
path executes, and with the FLOPs of the authors' graph (the model's FLOPs;
ours does fewer, the decoder's upsample being a transposed conv).

The default path (``--precision auto``) is timed in the same rounds, twice:
as ``elir_cli.load_model(path)`` gives it to a Python program (the API
default) and as the ``elir`` command loads it (``PhotoRestorer``), with a bf16
matmul in every round for its peak. Its first load calibrates (PSNR and
seconds reported), into a fresh temporary store. ``--onnx`` also exports
each task (``elir export``) and times onnxruntime in the rounds.
``--openvino`` also times the OpenVINO backend in the rounds, as
``elir_cli.load_model(path, backend="openvino")`` gives it (auto: bf16 once
its own calibration against PyTorch fp32 passes) and at fp32, with its first
load (convert, compile, calibrate) and its second (from the cache) timed.

Random weights: speed does not depend on their values. Prints a table and
writes JSON (--json). Run: python benchmarks/bench_model.py [--tasks bfr]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Callable

from elir_cli.model.runtime import request_huge_pages

request_huge_pages()  # first, as the CLI does: before torch allocates anything
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout: tests.helpers

from tests.helpers.reference_elir import reference_forward  # noqa: E402

from elir_cli.model.cpu_conv import plain_convs  # noqa: E402
from elir_cli.model.elir import ElirModel  # noqa: E402
from elir_cli.model.runtime import cpu_supports_bf16, prepare_model, resolve_runtime  # noqa: E402
from elir_cli.registry.tasks import get_task, task_names  # noqa: E402
from elir_cli.model.checkpoint import save_safetensors  # noqa: E402

NATIVE_SIZE = {"bfr": 512, "sr": 256, "denoising": 256, "inpainting": 256, "bsr": 256}
MATMUL_N = 4096
EQUAL_TOL = 1e-4
Stats = dict[str, object]


def stats_of(times: list[float]) -> Stats:
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "runs": times}


def timed(fn: Callable[[], object], runs: int, warmup: int = 1) -> Stats:
    for _ in range(warmup):
        fn()
    return stats_of([once(fn) for _ in range(runs)])


def once(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class MatmulProbe:
    """A large matmul into a preallocated output: the machine's practical peak.

    ``rate()`` times one product (GFLOP/s); ``best`` is the best rate seen,
    since a shared machine only ever slows it down.
    """

    def __init__(self, dtype: torch.dtype = torch.float32) -> None:
        self.a = torch.randn(MATMUL_N, MATMUL_N).to(dtype)
        self.b = torch.randn(MATMUL_N, MATMUL_N).to(dtype)
        self.out = torch.empty(MATMUL_N, MATMUL_N, dtype=dtype)
        self.rates: list[float] = []
        for _ in range(2):
            torch.matmul(self.a, self.b, out=self.out)

    def rate(self) -> float:
        rate = 2 * MATMUL_N**3 / once(lambda: torch.matmul(self.a, self.b, out=self.out)) / 1e9
        self.rates.append(rate)
        return rate

    @property
    def best(self) -> float:
        return max(self.rates)


def task_inputs(task: str) -> tuple[ElirModel, torch.Tensor, torch.Tensor]:
    """The task's full-size model with seeded random weights, and a seeded input and noise."""
    size = NATIVE_SIZE[task]
    torch.manual_seed(0)
    model = ElirModel(get_task(task).model).eval()
    gen = torch.Generator().manual_seed(1)
    return model, torch.rand(1, 3, size, size, generator=gen), torch.randn(1, 16, size // 8, size // 8, generator=gen)


# -- the eager reference and GFPGAN, in a child process with PyTorch's defaults --------

def defaults_worker(conn: Connection, tasks: list[str], threads: int) -> None:
    """Serve ``("run", name)`` -> seconds and ``("output", task)`` -> y until ``None``.

    Names: each task (its eager reference) and ``gfpgan`` when spandrel is installed.
    """
    torch.set_num_threads(threads)
    runs: dict[str, Callable[[], object]] = {}
    gfpgan = gfpgan_v14() if "bfr" in tasks else None  # GFPGAN is compared with bfr only
    if gfpgan is not None:
        runs["gfpgan"] = gfpgan
    for task in tasks:
        model, x, noise = task_inputs(task)
        sd = {k: v.detach() for k, v in model.state_dict().items()}
        cfg = model.config
        runs[task] = lambda sd=sd, x=x, noise=noise, cfg=cfg: reference_forward(
            sd, x, noise, k_steps=cfg.k_steps, sigma_s=cfg.sigma_s)
    conn.send(sorted(runs))
    with torch.inference_mode():
        while (request := conn.recv()) is not None:
            kind, task = request
            conn.send(once(runs[task]) if kind == "run" else runs[task]())


class DefaultsProcess:
    """The lockstep child: PyTorch's defaults, not this process's tuned allocator or huge pages."""

    def __init__(self, tasks: list[str], threads: int) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        saved = {k: os.environ.get(k) for k in ("THP_MEM_ALLOC_ENABLE", "ELIR_NO_THP")}
        os.environ.update({"THP_MEM_ALLOC_ENABLE": "0", "ELIR_NO_THP": "1"})  # inherited at spawn
        try:
            self.process = ctx.Process(target=defaults_worker, args=(child, tasks, threads), daemon=True)
            self.process.start()
            child.close()  # only the child holds its end now: if it dies, recv() raises EOFError, not hangs
        finally:
            for key, value in saved.items():
                os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
        self.names: list[str] = self.conn.recv()

    def run(self, name: str) -> float:
        self.conn.send(("run", name))
        return self.conn.recv()

    def output(self, task: str) -> torch.Tensor:
        self.conn.send(("output", task))
        return self.conn.recv()

    def close(self) -> None:
        try:
            self.conn.send(None)
        except OSError:  # the child is gone already (its error is what the caller is reporting)
            pass
        self.process.join(timeout=30)


# -- contenders in this process -------------------------------------------------------

def gfpgan_v14() -> Callable[[], object] | None:
    try:
        from spandrel.architectures.GFPGAN.__arch.gfpganv1_clean_arch import GFPGANv1Clean
    except ImportError:
        return None
    net = GFPGANv1Clean(out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None,
                        fix_decoder=False, num_mlp=8, input_is_latent=True, different_w=True, narrow=1,
                        sft_half=True).eval()
    x = torch.rand(1, 3, 512, 512) * 2 - 1
    return lambda: net(x, return_rgb=False)


def flops_of(fn: Callable[[], object]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bf16_run(model: ElirModel, x: torch.Tensor, noise: torch.Tensor, y: torch.Tensor, runs: int) -> Stats | None:
    """bf16 autocast timing and its largest difference to the fp32 output (None without CPU bf16)."""
    if not cpu_supports_bf16():
        return None
    model.compute_dtype = torch.bfloat16
    try:
        stats = timed(lambda: model(x, noise=noise), runs)
        stats["max_abs_diff_vs_fp32"] = (model(x, noise=noise) - y).abs().max().item()
    finally:
        model.compute_dtype = None
    return stats


def auto_models(task: str, model: ElirModel, folder: Path) -> tuple[ElirModel, ElirModel, dict[str, object]]:
    """The model at ``--precision auto`` as the API and as the command load it, and the calibration."""
    import elir_cli
    from elir_cli.pipeline.restorer import PhotoRestorer
    from elir_cli.pipeline.settings import RestoreSettings

    path = save_safetensors(folder / f"{task}.safetensors", model.state_dict(), model.config, task=task)
    messages: list[str] = []
    started = time.perf_counter()
    api = elir_cli.load_model(path, device="cpu", log=messages.append)  # the README's call, defaults
    load_s = time.perf_counter() - started
    command = PhotoRestorer(RestoreSettings(task=task, weights=str(path), device="cpu")).model
    from elir_cli.registry.store import read_calibration, sha256_file

    record = read_calibration(sha256_file(path), "bf16", "cpu")
    calib = {"precision": api.precision, "command_precision": command.precision, "load_s": load_s,
             "messages": messages, "record": None if record is None else {
                 "psnr_db": record.psnr_db, "per_image_db": record.per_image_db, "seconds": record.seconds,
                 "passed": record.passed, "images": record.images}}
    return api, command, calib


def onnx_contender(task: str, folder: Path, threads: int, x: torch.Tensor, noise: torch.Tensor
                   ) -> tuple[Callable[[], float], dict[str, object]]:
    """Export the task's weights with ``elir export``'s library call; time onnxruntime on x, noise."""
    import onnxruntime as ort

    from elir_cli.export.onnx import export_task

    started = time.perf_counter()
    result = export_task(task, folder / f"{task}.onnx", weights=str(folder / f"{task}.safetensors"))
    export_s = time.perf_counter() - started
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(result.path), options, providers=["CPUExecutionProvider"])
    feed = {"image": x.numpy(), "noise": noise.numpy()}
    info = {"bytes": result.card["bytes"], "parity_max_abs_diff": result.card["parity"]["max_abs_diff"],
            "export_s": export_s, "session": session, "feed": feed}
    return (lambda: once(lambda: session.run(["restored"], feed))), info


def openvino_models(task: str, folder: Path) -> tuple[ElirModel, ElirModel, dict[str, object]]:
    """The OpenVINO backend at auto (calibrated bf16) and fp32, as the API loads them, with load times."""
    import elir_cli
    from elir_cli.registry.store import read_calibration, sha256_file

    path = folder / f"{task}.safetensors"  # written by auto_models
    messages: list[str] = []
    started = time.perf_counter()
    auto = elir_cli.load_model(path, device="cpu", backend="openvino", log=messages.append)
    x = torch.rand(1, 3, NATIVE_SIZE[task], NATIVE_SIZE[task])
    with torch.inference_mode():
        auto(x)  # the first call at this shape compiles (or imports the cached blob)
    first_s = time.perf_counter() - started
    started = time.perf_counter()
    again = elir_cli.load_model(path, device="cpu", backend="openvino", log=messages.append)
    with torch.inference_mode():
        again(x)
    second_s = time.perf_counter() - started
    del again
    fp32 = elir_cli.load_model(path, device="cpu", precision="fp32", backend="openvino")
    record = read_calibration(sha256_file(path), auto.precision, "cpu-openvino")
    info = {"precision": auto.precision, "first_load_s": first_s, "cached_load_s": second_s, "messages": messages,
            "calibration_db": None if record is None else record.psnr_db,
            "calibration_s": None if record is None else record.seconds}
    return auto, fp32, info


def bench_task(task: str, defaults: DefaultsProcess, probe: MatmulProbe, gfpgan: Callable[[], object] | None,
               runs: int, bf16_probe: "MatmulProbe | None" = None, folder: Path | None = None,
               with_onnx: bool = False, threads: int = 2, with_openvino: bool = False) -> dict[str, object]:
    """Round-robin rounds (matmuls, ours fp32, auto via API and command, reference, GFPGAN both
    ways for bfr, onnxruntime), then stages, FLOPs and bf16."""
    model, x, noise = task_inputs(task)
    auto_api = auto_cmd = calib = onnx_info = None
    if folder is not None:
        auto_api, auto_cmd, calib = auto_models(task, model, folder)
    model = prepare_model(model, resolve_runtime("cpu", "fp32"))
    ours = lambda: model(x, noise=noise)  # noqa: E731
    contenders: dict[str, Callable[[], float]] = {"ours": lambda: once(ours), "reference": lambda: defaults.run(task)}
    if auto_api is not None:
        contenders["auto_api"] = lambda: once(lambda: auto_api(x, noise=noise))
        contenders["auto_command"] = lambda: once(lambda: auto_cmd(x, noise=noise))
    if with_onnx and folder is not None:
        contenders["onnxruntime"], onnx_info = onnx_contender(task, folder, threads, x, noise)
    ov_info = None
    if with_openvino and folder is not None:
        ov_auto, ov_fp32, ov_info = openvino_models(task, folder)
        contenders["openvino_auto"] = lambda: once(lambda: ov_auto(x, noise=noise))
        contenders["openvino_fp32"] = lambda: once(lambda: ov_fp32(x, noise=noise))
    if task == "bfr" and gfpgan is not None and "gfpgan" in defaults.names:
        contenders["gfpgan"] = lambda: defaults.run("gfpgan")
        contenders["gfpgan_our_settings"] = lambda: once(gfpgan)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    probe_rates = []
    bf16_rates: list[float] = []
    with torch.inference_mode():
        for timer in contenders.values():  # warm-up
            timer()
        for _ in range(runs):
            probe_rates.append(probe.rate())
            if bf16_probe is not None:
                bf16_rates.append(bf16_probe.rate())
            for name, timer in contenders.items():
                times[name].append(timer())
        y = ours()
        auto_diff = None
        if auto_api is not None:
            auto_diff = {"max_abs_diff_vs_fp32": (auto_api(x, noise=noise) - y).abs().max().item(),
                         "api_vs_command": (auto_api(x, noise=noise) - auto_cmd(x, noise=noise)).abs().max().item()}
        if onnx_info is not None:
            got = onnx_info.pop("session").run(["restored"], onnx_info.pop("feed"))[0]
            onnx_info["max_abs_diff_vs_ours"] = float((torch.from_numpy(got) - y.clamp(0, 1)).abs().max())
        if ov_info is not None:
            ov_info["max_abs_diff_fp32_vs_ours"] = (ov_fp32(x, noise=noise) - y).abs().max().item()
            ov_info["max_abs_diff_auto_vs_ours"] = (ov_auto(x, noise=noise) - y).abs().max().item()
        xc = x.contiguous(memory_format=torch.channels_last)
        z = model.encode(xc)
        zm = model.coarse(z)
        stages = {
            "encoder": timed(lambda: model.encode(xc), runs),
            "coarse": timed(lambda: model.coarse(z), runs),
            "vector_field_step": timed(lambda: model.velocity(zm, 0.5), runs),
            "decoder": timed(lambda: model.decode(zm), runs),
        }
        with plain_convs():  # the FLOP counter sees ATen convs only, not oneDNN's fused ones
            flops = flops_of(ours)
        # The model's FLOPs as the authors' graph computes them (nearest-x2 upsample, then a 3x3
        # conv at the larger size); ours executes fewer (the transposed-conv upsample).
        sd = {k: v.detach() for k, v in model.state_dict().items()}
        model_flops = flops_of(lambda: reference_forward(sd, x, noise, k_steps=model.config.k_steps,
                                                         sigma_s=model.config.sigma_s))
        bf16 = bf16_run(model, x, noise, y, runs)
    diff = (y - defaults.output(task)).abs().max().item()
    assert diff <= EQUAL_TOL, f"{task}: optimised output differs from the reference by {diff}"
    return {"task": task, "size": NATIVE_SIZE[task], "optimised": stats_of(times["ours"]),
            "reference": stats_of(times["reference"]),
            "gfpgan_v1.4": stats_of(times["gfpgan"]) if "gfpgan" in times else None,
            "gfpgan_v1.4_our_settings": stats_of(times["gfpgan_our_settings"]) if "gfpgan" in times else None,
            "probe_gflops": probe_rates, "gflop": flops / 1e9, "model_gflop": model_flops / 1e9,
            "stages": stages, "max_abs_diff": diff,
            "peak_rss_mb": peak_rss_mb(), "bf16_autocast": bf16,
            "auto_api": stats_of(times["auto_api"]) if "auto_api" in times else None,
            "auto_command": stats_of(times["auto_command"]) if "auto_command" in times else None,
            "auto_diff": auto_diff, "calibration": calib, "bf16_probe_gflops": bf16_rates,
            "onnxruntime": stats_of(times["onnxruntime"]) if "onnxruntime" in times else None,
            "onnx": onnx_info,
            "openvino_auto": stats_of(times["openvino_auto"]) if "openvino_auto" in times else None,
            "openvino_fp32": stats_of(times["openvino_fp32"]) if "openvino_fp32" in times else None,
            "openvino": ov_info}


def summarise(row: dict[str, object], peak: float) -> None:
    ours, gflop = row["optimised"], row["gflop"]
    row["ratio"] = ours["median"] / row["reference"]["median"]
    row["paired_ratio"] = statistics.median(o / r for o, r in zip(ours["runs"], row["reference"]["runs"]))
    row["gflops_per_s"] = gflop / ours["median"]
    row["peak_fraction"] = gflop / ours["median"] / peak
    row["best_peak_fraction"] = gflop / ours["min"] / peak
    row["paired_peak_fraction"] = statistics.median(gflop / t / rate for t, rate in zip(ours["runs"], row["probe_gflops"]))
    model_gflop = row["model_gflop"]  # the same fractions counting the authors' graph's FLOPs
    row["model_peak_fraction"] = model_gflop / ours["median"] / peak
    row["model_paired_peak_fraction"] = statistics.median(
        model_gflop / t / rate for t, rate in zip(ours["runs"], row["probe_gflops"]))


def report(rows: list[dict[str, object]], peak: float, n_probes: int, bf16_peak: float | None) -> None:
    print(f"\n{'task':<11}{'size':>5}{'eager s':>9}{'ours s':>8}{'min-max':>14}{'ratio':>7}{'GFLOP':>7}"
          f"{'GFLOP/s':>9}{'%peak':>7}{'max|d|':>9}")
    for r in rows:
        o = r["optimised"]
        print(f"{r['task']:<11}{r['size']:>5}{r['reference']['median']:>9.3f}{o['median']:>8.3f}"
              f"{o['min']:>7.2f}-{o['max']:<6.2f}{r['ratio']:>7.2f}{r['gflop']:>7.0f}{r['gflops_per_s']:>9.1f}"
              f"{100 * r['peak_fraction']:>6.0f}%{r['max_abs_diff']:>9.1e}")
    print(f"(peak: the best of {n_probes} fp32 matmuls spread over the benchmark, {peak:.1f} GFLOP/s; "
          f"%peak: the median run against it)")
    for r in rows:
        print(f"{r['task']:<11} paired by round: ratio {r['paired_ratio']:.2f}, {100 * r['paired_peak_fraction']:.0f}% "
              f"of that round's matmul; best run {100 * r['best_peak_fraction']:.0f}% of the peak")
    for r in rows:
        print(f"{r['task']:<11} counting the authors' graph ({r['model_gflop']:.0f} GFLOP, {r['gflop']:.0f} executed): "
              f"{100 * r['model_peak_fraction']:.0f}% of the peak, paired {100 * r['model_paired_peak_fraction']:.0f}%")
    print()
    for r in rows:
        s = r["stages"]
        print(f"{r['task']:<11} encoder {s['encoder']['median']:.3f} s, coarse {s['coarse']['median']:.3f} s, "
              f"one vector-field step {s['vector_field_step']['median']:.3f} s, decoder {s['decoder']['median']:.3f} s")
    for r in rows:
        b = r["bf16_autocast"]
        if b:
            rate = r["gflop"] / b["median"]
            print(f"{r['task']:<11} --precision bf16: {b['median']:.3f} s ({r['optimised']['median'] / b['median']:.1f}x "
                  f"fp32, {rate:.0f} GFLOP/s = {100 * rate / bf16_peak:.0f}% of the best bf16 matmul, "
                  f"{bf16_peak:.0f}), max |fp32 - bf16| {b['max_abs_diff_vs_fp32']:.3f}")
    for r in rows:
        for key, how in (("gfpgan_v1.4", "as its users run it"), ("gfpgan_v1.4_our_settings", "with our settings")):
            g = r.get(key)
            if g:
                print(f"{r['task']} per face {r['optimised']['median']:.2f} s vs GFPGAN v1.4 {how} {g['median']:.2f} s "
                      f"({g['median'] / r['optimised']['median']:.2f}x; paired by round "
                      f"{statistics.median(gg / o for gg, o in zip(g['runs'], r['optimised']['runs'])):.2f}x)")
    auto_report(rows)
    openvino_report(rows)
    print(f"peak RSS {peak_rss_mb():.0f} MB")


def paired(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b))


def bf16_peak_fraction(row: dict[str, object], runs: list[float]) -> float:
    """Median over rounds of a run's executed GFLOP/s against that round's bf16 matmul."""
    rates = row["bf16_probe_gflops"] or [float("nan")]
    return statistics.median(row["gflop"] / t / rate for t, rate in zip(runs, rates))


def auto_report(rows: list[dict[str, object]]) -> None:
    """The default path (--precision auto) against the eager reference, the bf16 peak, the command."""
    rows = [r for r in rows if r.get("auto_api")]
    if not rows:
        return
    print(f"\n{'task':<11}{'size':>5}{'eager s':>9}{'auto s':>8}{'x eager':>8}{'paired':>8}{'%bf16pk':>8}"
          f"{'cmd s':>7}{'api/cmd':>8}{'prec':>6}{'calib dB':>9}{'calib s':>8}{'max|d|':>8}")
    for r in rows:
        api, cmd, ref = r["auto_api"], r["auto_command"], r["reference"]
        peak_frac = bf16_peak_fraction(r, api["runs"])
        c = r["calibration"]
        rec = c["record"] or {}
        print(f"{r['task']:<11}{r['size']:>5}{ref['median']:>9.3f}{api['median']:>8.3f}"
              f"{api['median'] / ref['median']:>8.2f}{paired(api['runs'], ref['runs']):>8.2f}{100 * peak_frac:>7.0f}%"
              f"{cmd['median']:>7.3f}{paired(api['runs'], cmd['runs']):>8.2f}{c['precision']:>6}"
              f"{rec.get('psnr_db', float('nan')):>9.1f}{rec.get('seconds', float('nan')):>8.1f}"
              f"{r['auto_diff']['max_abs_diff_vs_fp32']:>8.3f}")
    print("(auto s: elir_cli.load_model(path) with its defaults; cmd s: the model the elir command loads; "
          "paired: median of per-round ratios; %bf16pk: executed GFLOP/s against that round's bf16 matmul; "
          "calib: lowest PSNR of the calibration set, bf16 vs fp32, and its one-time cost)")
    for r in rows:
        o = r.get("onnxruntime")
        if o:
            info = r["onnx"]
            print(f"{r['task']:<11} ONNX {info['bytes'] / 1e6:.1f} MB, exported in {info['export_s']:.1f} s, "
                  f"max |ort - ours fp32| {info['max_abs_diff_vs_ours']:.1e}; onnxruntime {o['median']:.3f} s "
                  f"vs ours fp32 {r['optimised']['median']:.3f} s (paired {paired(o['runs'], r['optimised']['runs']):.2f}x), "
                  f"vs auto {paired(o['runs'], r['auto_api']['runs']):.2f}x, vs eager {paired(o['runs'], r['reference']['runs']):.2f}x")


def openvino_report(rows: list[dict[str, object]]) -> None:
    """The OpenVINO backend against our auto path, our fp32 and the eager reference, same rounds."""
    rows = [r for r in rows if r.get("openvino_auto")]
    if not rows:
        return
    print(f"\n{'task':<11}{'ov auto s':>10}{'prec':>6}{'x eager':>8}{'vs auto':>8}{'%bf16pk':>8}{'ov fp32 s':>10}"
          f"{'vs fp32':>8}{'|d|fp32':>9}{'|d|auto':>8}{'calib dB':>9}{'1st load':>9}{'cached':>7}")
    for r in rows:
        ova, ovf, info = r["openvino_auto"], r["openvino_fp32"], r["openvino"]
        peak_frac = bf16_peak_fraction(r, ova["runs"])
        calib = info["calibration_db"]
        print(f"{r['task']:<11}{ova['median']:>10.3f}{info['precision']:>6}{paired(ova['runs'], r['reference']['runs']):>8.2f}"
              f"{paired(ova['runs'], r['auto_api']['runs']):>8.2f}{100 * peak_frac:>7.0f}%{ovf['median']:>10.3f}"
              f"{paired(ovf['runs'], r['optimised']['runs']):>8.2f}{info['max_abs_diff_fp32_vs_ours']:>9.1e}"
              f"{info['max_abs_diff_auto_vs_ours']:>8.3f}{float('nan') if calib is None else calib:>9.1f}"
              f"{info['first_load_s']:>8.1f}s{info['cached_load_s']:>6.1f}s")
    print("(ov auto: elir_cli.load_model(path, backend='openvino'), calibrated against PyTorch fp32; x eager, vs auto "
          "(our torch auto path), vs fp32 (our torch fp32): medians of per-round ratios, < 1 = OpenVINO faster; "
          "|d|: max |OpenVINO - our torch fp32|; 1st load: convert + compile + calibrate + first call; "
          "cached: a second load and first call from the cache)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=task_names(), choices=task_names())
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/model.json"))
    parser.add_argument("--no-auto", action="store_true", help="skip the --precision auto paths")
    parser.add_argument("--onnx", action="store_true", help="also export each task and time onnxruntime")
    parser.add_argument("--openvino", action="store_true",
                        help="also time the OpenVINO backend (auto and fp32; pip install 'elir-cli[openvino]')")
    parser.add_argument("--no-gfpgan", action="store_true", help="skip the GFPGAN comparison")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    defaults = DefaultsProcess(args.tasks, args.threads)
    probe = MatmulProbe()
    for _ in range(3):
        probe.rate()
    print(f"fp32 matmul ({MATMUL_N}^3, {args.threads} threads): {probe.best:.1f} GFLOP/s at the start")
    gfpgan = gfpgan_v14() if "bfr" in args.tasks and not args.no_gfpgan else None  # compared with bfr only
    if gfpgan is None and "bfr" in args.tasks:
        print("GFPGAN comparison skipped: pip install -e '.[bench]' adds spandrel")
    import tempfile

    scratch = tempfile.TemporaryDirectory(prefix="elir-bench-")
    os.environ["ELIR_CACHE"] = scratch.name  # a fresh store: the first auto load calibrates
    folder = None if args.no_auto else Path(scratch.name)
    bf16_probe = MatmulProbe(torch.bfloat16) if cpu_supports_bf16() else None
    try:
        rows = []
        for task in args.tasks:
            rows.append(bench_task(task, defaults, probe, gfpgan, args.runs, bf16_probe=bf16_probe, folder=folder,
                                   with_onnx=args.onnx, threads=args.threads, with_openvino=args.openvino))
            print(f"{task}: ours {rows[-1]['optimised']['median']:.3f} s, eager {rows[-1]['reference']['median']:.3f} s")
    finally:
        defaults.close()
    bf16_peak = None
    if bf16_probe is not None:
        bf16_peak = max([bf16_probe.rate() for _ in range(3)] + bf16_probe.rates)
    peak = probe.best
    for row in rows:
        summarise(row, peak)
    report(rows, peak, len(probe.rates), bf16_peak)
    results = {
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
                    "torch": torch.__version__, "python": platform.python_version(),
                    "huge_pages": os.environ.get("THP_MEM_ALLOC_ENABLE")},
        "matmul_gflops": peak, "matmul_gflops_all": probe.rates, "bf16_matmul_gflops": bf16_peak, "tasks": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
