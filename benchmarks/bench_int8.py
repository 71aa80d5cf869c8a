"""int8 on this CPU: the authors' eager code vs fp32, bf16 and int8 (OpenVINO + NNCF), paired rounds.

For one task (default bfr at 512) with seeded random weights, in a fresh
temporary store:

1. ``--precision int8`` is loaded once: the quantization (NNCF, with
   accuracy control where plain int8 misses 45 dB), its time, its record
   (dB against fp32 on the calibration set, tensors kept in fp32, the
   speeds it measured) and what ``auto`` then picks with it.
2. Round-robin rounds time one restore of the same input by: the authors'
   eager code (tests/helpers/reference_elir.py, in a child process with
   PyTorch's default settings, as bench_model.py runs it), our PyTorch fp32,
   PyTorch bf16 where the CPU has it natively, int8, and ``auto`` (what a
   user gets: ``elir_cli.load_model(path)``). Ratios are medians over rounds
   of each run against that round's eager run (a slow minute slows all).
3. int8's output against PyTorch fp32 on the benchmark input (PSNR, max |diff|).

Random weights: speed does not depend on their values, but quality does;
the dB here says the quantization works, not what trained weights give
(which ``elir models info`` reports per weights file once calibrated).

Run: python benchmarks/bench_int8.py [--task bfr] [--rounds 5] [--json out.json]
On an AVX-512 machine, ``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2``
times the AVX2 paths (both PyTorch's oneDNN and OpenVINO's CPU plugin obey
the first).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from elir_cli.model.runtime import request_huge_pages

request_huge_pages()  # first, as the CLI does
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout: benchmarks, tests.helpers

from benchmarks.bench_model import DefaultsProcess, once, task_inputs  # noqa: E402

import elir_cli  # noqa: E402
from elir_cli.model.checkpoint import save_safetensors  # noqa: E402
from elir_cli.model.runtime import cpu_supports_bf16  # noqa: E402
from elir_cli.pipeline.calibration import INT8_KIND, int8_verdict, psnr_db  # noqa: E402
from elir_cli.registry.store import read_calibration, sha256_file  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="bfr")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    threads = torch.get_num_threads()
    store = Path(tempfile.mkdtemp(prefix="elir-int8-bench-"))
    os.environ["ELIR_CACHE"] = str(store)
    model, x, noise = task_inputs(args.task)
    path = save_safetensors(store / f"{args.task}.safetensors", model.state_dict(), model.config, task=args.task)
    print(f"CPU: {torch.backends.cpu.get_cpu_capability()} (PyTorch dispatch), ONEDNN_MAX_CPU_ISA="
          f"{os.environ.get('ONEDNN_MAX_CPU_ISA', '-')}, native bf16: {cpu_supports_bf16()}, threads {threads}")

    said: list[str] = []
    started = time.perf_counter()
    int8 = elir_cli.load_model(path, device="cpu", precision="int8", log=said.append)
    quantize_s = time.perf_counter() - started
    record = read_calibration(sha256_file(path), "int8", INT8_KIND)
    assert record is not None
    print(f"int8 quantization: {quantize_s:.1f} s; " + " | ".join(said))
    fp32 = elir_cli.load_model(path, device="cpu", precision="fp32", backend="torch")
    contenders = {"fp32": fp32, "int8": int8}
    if cpu_supports_bf16():
        contenders["bf16"] = elir_cli.load_model(path, device="cpu", precision="bf16", backend="torch")
    auto_said: list[str] = []
    auto = elir_cli.load_model(path, device="cpu", log=auto_said.append)
    contenders["auto"] = auto
    alternative = "bf16" if cpu_supports_bf16() else "fp32"
    uses, why = int8_verdict(record, alternative)
    print(f"auto picks {auto.precision} ({auto.backend}): {why}")

    with torch.inference_mode():
        reference = fp32.restore(x, noise=noise)
        quantized = int8.restore(x, noise=noise)
    quality = {"psnr_db": round(psnr_db(reference, quantized), 2),
               "max_abs_diff": float((reference - quantized).abs().max())}

    eager = DefaultsProcess([args.task], threads)
    times: dict[str, list[float]] = {name: [] for name in ["eager", *contenders]}
    try:
        for name, model_ in contenders.items():  # warm-up: each compiles or allocates for this shape once
            model_.restore(x, noise=noise)
        eager.run(args.task)
        for r in range(args.rounds):
            times["eager"].append(eager.run(args.task))
            for name, model_ in contenders.items():
                times[name].append(once(lambda m=model_: m.restore(x, noise=noise)))
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
    finally:
        eager.close()
    rows = {}
    for name, runs in times.items():
        ratio = statistics.median(t / e for t, e in zip(runs, times["eager"]))
        rows[name] = {"median_s": round(statistics.median(runs), 3), "min_s": round(min(runs), 3),
                      "vs_eager_paired": round(ratio, 3), "runs": [round(t, 3) for t in runs]}
    print(f"\n{'path':<8}{'median s':>10}{'min s':>8}{'x eager':>9}")
    for name, row in rows.items():
        print(f"{name:<8}{row['median_s']:>10.3f}{row['min_s']:>8.3f}{row['vs_eager_paired']:>9.2f}")
    print(f"\nint8 vs fp32 on this input: {quality['psnr_db']} dB, max |diff| {quality['max_abs_diff']:.4f}; "
          f"calibration set: {record.psnr_db} dB (min of {record.images}), {record.reverted} of "
          f"{(record.quantized or 0) + (record.reverted or 0)} quantized tensors kept in fp32")
    result = {"task": args.task, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"), "native_bf16": cpu_supports_bf16(),
              "threads": threads, "quantize_s": round(quantize_s, 1), "record": record.__dict__,
              "auto": {"precision": auto.precision, "backend": auto.backend, "why": why, "uses_int8": uses},
              "quality_on_input": quality, "timings": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
