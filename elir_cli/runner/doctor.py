"""``elir doctor``: what this machine is and what elir-cli will do on it, in one report.

For bug reports and for "why is it slow here": the CPU's instruction sets
(AVX2, AVX-512, VNNI, AMX) as the kernel lists them and as PyTorch dispatches,
the GPUs and drivers PyTorch sees, the optional backends installed (OpenVINO,
ONNX Runtime with its execution providers, spandrel), what ``--precision
auto`` picks on each device and, per task, whether the cached weights have a
calibration record that lets it, the store and caches with their sizes, and
(unless ``timing=False``) the time of one face at ``auto``: the first call and
the steady state. Every probe that fails says so in its field; the report
itself never fails.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

# The x86 flags that decide elir-cli's speed, as /proc/cpuinfo spells them.
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")
TIMING_TASK = "bfr"
STEADY_RUNS = 3


def _cpuinfo() -> dict[str, Any]:
    """The CPU's model name and speed-relevant flags (Linux: /proc/cpuinfo; elsewhere what platform says)."""
    info: dict[str, Any] = {"model": platform.processor() or platform.machine(), "flags": None}
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return info
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and info["model"] in ("", platform.machine(), platform.processor()):
            info["model"] = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
    info["flags"] = {flag: flag in flags for flag in CPU_FLAGS}
    return info


def cpu_report() -> dict[str, Any]:
    import torch

    from elir_cli.model.runtime import cpu_supports_bf16

    info = _cpuinfo()
    return {**info, "torch_isa": torch.backends.cpu.get_cpu_capability(), "native_bf16": cpu_supports_bf16(),
            "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "forced_isa": {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if k in os.environ}}


def gpu_report() -> dict[str, Any]:
    import torch

    cuda: dict[str, Any] = {"available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda,
                            "devices": []}
    if cuda["available"]:
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            cuda["devices"].append({"name": p.name, "capability": f"{p.major}.{p.minor}",
                                    "memory_gb": round(p.total_memory / 2**30, 1)})
        try:
            cuda["driver"] = torch.cuda.driver_version() if hasattr(torch.cuda, "driver_version") else None
        except RuntimeError:
            cuda["driver"] = None
    mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    xpu = bool(getattr(torch, "xpu", None)) and torch.xpu.is_available()
    return {"cuda": cuda, "mps": mps, "xpu": xpu}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def backends_report() -> dict[str, Any]:
    """The optional runtimes installed, with what each can run on."""
    report: dict[str, Any] = {"torch": _version("torch")}
    openvino: dict[str, Any] = {"version": _version("openvino")}
    if openvino["version"]:
        try:
            import openvino as ov

            openvino["devices"] = list(ov.Core().available_devices)
        except Exception as exc:  # a broken install: say so, keep reporting
            openvino["error"] = f"{type(exc).__name__}: {exc}"[:200]
    report["openvino"] = openvino
    onnxruntime: dict[str, Any] = {"version": _version("onnxruntime") or _version("onnxruntime-gpu")
                                   or _version("onnxruntime-directml") or _version("onnxruntime-openvino")}
    if onnxruntime["version"]:
        try:
            import onnxruntime as ort

            onnxruntime["providers"] = list(ort.get_available_providers())
        except Exception as exc:
            onnxruntime["error"] = f"{type(exc).__name__}: {exc}"[:200]
    report["onnxruntime"] = onnxruntime
    report["spandrel"] = _version("spandrel")
    return report


def precision_report() -> dict[str, Any]:
    """What ``auto`` picks per device, and per task whether the cached weights' calibration allows it."""
    import torch

    from elir_cli.model.runtime import auto_precision, supported_precisions
    from elir_cli.registry.inventory import task_status
    from elir_cli.registry.store import read_calibration
    from elir_cli.registry.tasks import task_names

    from elir_cli.model import int8

    int8_ready = int8.available()
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    if bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available():
        devices.append(torch.device("mps"))
    report: dict[str, Any] = {}
    for device in devices:
        auto = auto_precision(device)
        tasks = {}
        for task in task_names():
            status = task_status(task)
            sha = status.record.sha256 if status.record else None
            if auto == "fp32":
                tasks[task] = {"auto": "fp32", "why": "no faster precision on this device"}
            elif status.path is None:
                tasks[task] = {"auto": None, "why": f"weights not cached; {auto} if calibration passes on first use"}
            else:
                record = read_calibration(sha, auto, device.type) if sha else None
                if record is None:
                    tasks[task] = {"auto": None, "why": f"not calibrated yet; {auto} if it passes on first use"}
                else:
                    tasks[task] = {"auto": auto if record.passed else "fp32",
                                   "why": f"{record.psnr_db:.1f} dB vs fp32 (needs {record.threshold_db:g})"}
            if device.type == "cpu" and int8_ready:
                tasks[task] = _with_int8(tasks[task], sha if status.path is not None else None, auto)
        report[device.type] = {"supported": list(supported_precisions(device)), "auto": auto, "tasks": tasks}
    return report


def _with_int8(answer: dict[str, Any], sha256: str | None, auto: str) -> dict[str, Any]:
    """The CPU's answer for one task, with int8 (OpenVINO) where its calibration record lets auto use it."""
    from elir_cli.pipeline.calibration import INT8_KIND, int8_verdict
    from elir_cli.registry.store import read_calibration

    record = read_calibration(sha256, "int8", INT8_KIND) if sha256 else None
    if record is None:
        return {**answer, "int8": "not calibrated: elir models verify --precision (or --precision int8 once)"}
    uses, why = int8_verdict(record, answer["auto"] or auto)
    return {"auto": "int8", "why": why} if uses else {**answer, "int8": why}


def _size(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += (Path(root) / name).stat().st_size
            except OSError:
                pass
    return total


def store_report() -> dict[str, Any]:
    from elir_cli.registry.store import elir_cache_dir, hub_cache_dir
    from elir_cli.registry.inventory import task_status
    from elir_cli.registry.tasks import task_names

    store, hub = elir_cache_dir(), hub_cache_dir()
    parts = {"store": store, "openvino cache": store / "openvino", "calibration records": store / "records",
             "hub cache": hub}
    return {"folders": {name: {"path": str(path), "exists": path.exists(), "bytes": _size(path) if path.exists() else 0}
                        for name, path in parts.items()},
            "weights": {task: (str(s.path) if (s := task_status(task)).path else None) for task in task_names()},
            "offline": os.environ.get("HF_HUB_OFFLINE") not in (None, "", "0")}


def time_one_face(runs: int = STEADY_RUNS) -> dict[str, Any]:
    """One aligned 512 face through bfr at ``auto`` on the default device: first call and steady median (ms).

    The cached weights are used when there are; else random weights of the
    real size (the time is the network's, whatever its values), at the
    precision ``auto`` would reach after a passing calibration.
    """
    import numpy as np
    import torch

    from elir_cli.model.elir import ElirModel
    from elir_cli.model.runtime import prepare_model, runtime_for
    from elir_cli.pipeline.photo import model_restorer
    from elir_cli.registry.inventory import task_status
    from elir_cli.registry.loading import load_float32_model
    from elir_cli.registry.tasks import get_task

    runtime = runtime_for("auto", "auto")
    path = task_status(TIMING_TASK).path
    if path is not None:
        model, weights = load_float32_model(path, task=TIMING_TASK), str(path)
    else:
        torch.manual_seed(0)
        model, weights = ElirModel(get_task(TIMING_TASK).model).eval(), "random (not cached)"
    precision = "auto"
    if runtime.auto and runtime.compute_dtype is not None:  # the precision auto reaches once calibrated
        runtime = runtime_for(runtime.device, runtime.precision)
        precision = runtime.precision
    model = prepare_model(model, runtime)
    size = get_task(TIMING_TASK).input_size
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((1, 3, size, size), dtype=np.float32))
    restore = model_restorer(model, seed=0)

    def once() -> float:
        t = time.perf_counter()
        restore(x)
        if runtime.device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t) * 1000

    first = once()
    steady = statistics.median(once() for _ in range(runs))
    return {"task": TIMING_TASK, "device": runtime.device.type, "precision": model.precision,
            "requested": precision, "weights": weights, "first_ms": round(first, 1), "steady_ms": round(steady, 1),
            "runs": runs}


def _safely(probe: Callable[[], Any]) -> Any:
    try:
        return probe()
    except Exception as exc:  # a report for bug reports: a failing probe is itself the finding
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}


def diagnose(*, timing: bool = True) -> dict[str, Any]:
    """The whole report as JSON-ready data (each probe's failure reported in its place)."""
    from elir_cli._version import __version__

    report = {
        "elir_cli": __version__, "python": sys.version.split()[0], "platform": platform.platform(),
        "cpu": _safely(cpu_report), "gpus": _safely(gpu_report), "backends": _safely(backends_report),
        "precision": _safely(precision_report), "storage": _safely(store_report),
    }
    report["one_face"] = _safely(time_one_face) if timing else None
    return report
