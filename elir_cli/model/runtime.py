"""Where and how the model runs: device, precision, threads, memory allocator.

Measured on a 2-core x86 CPU (see README "Performance"): channels-last
activations and a glibc allocator that keeps freed memory (no mmap/trim
churn for the ~64 MB activations) take bfr from ~3.9 s to ~2.5 s per face;
transparent huge pages for those activations (fewer TLB misses) give
another ~5 %.
``torch.compile`` took 34-79 s to compile bfr and gave no steady-state gain
here, so it is opt-in (:func:`compile_model`, ``--compile``).
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from elir_cli.errors import UsageError

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from .elir import ElirModel

DeviceName = Literal["auto", "cpu", "cuda", "mps"]
PrecisionName = Literal["auto", "fp32", "fp16", "bf16", "int8"]
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "fp16", "bf16", "int8")
# Who runs the networks: PyTorch, OpenVINO's CPU plugin (openvino_backend, an optional extra), or
# ONNX Runtime (onnxruntime_backend). auto: PyTorch, or OpenVINO where --precision auto picks int8.
BACKENDS: tuple[str, ...] = ("auto", "torch", "openvino", "onnxruntime")
TORCH = "torch"
INT8 = "int8"
OPENVINO = "openvino"
ONNXRUNTIME = "onnxruntime"
AUTO = "auto"

# glibc mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
TRIM_THRESHOLD_BYTES = 2**31 - 1

_allocator_tuned = False

# Read by PyTorch's CPU allocator once, at its first allocation: then every
# buffer of 2 MB or more is madvise(MADV_HUGEPAGE)d.
THP_ENV = "THP_MEM_ALLOC_ENABLE"
NO_THP_ENV = "ELIR_NO_THP"
NO_MALLOPT_ENV = "ELIR_NO_MALLOPT"


@dataclass(frozen=True)
class Runtime:
    """The resolved device and compute dtype (None: plain float32)."""

    device: "torch.device"
    compute_dtype: "torch.dtype | None"
    # True when the precision was chosen by ``auto``: a reduced one is then used
    # only once calibration has shown it safe for the weights (pipeline.calibration).
    auto: bool = False
    backend: str = TORCH
    provider: str | None = None  # ONNX Runtime's execution provider (the onnxruntime backend)
    # int8 on OpenVINO (model.int8): NNCF-quantized networks; compute_dtype is then None.
    int8: bool = False
    # --backend auto with --precision auto on the CPU: calibration may switch this runtime to
    # OpenVINO int8 where its record says int8 passes and pays (pipeline.calibration).
    int8_candidate: bool = False

    @property
    def precision(self) -> str:
        import torch

        if self.int8:
            return INT8
        return {None: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[self.compute_dtype]

    def describe(self) -> str:
        if self.backend == ONNXRUNTIME:
            return f"onnxruntime {self.provider} ({self.precision})"
        backend = ", openvino" if self.backend == OPENVINO else ""
        return f"{self.device.type} ({self.precision}{', auto' if self.auto else ''}{backend})"

    @property
    def calibration_kind(self) -> str:
        """The device kind calibration records are kept under: the device, and the backend
        when it is not PyTorch (OpenVINO's bf16 rounds differently from PyTorch's)."""
        return self.device.type if self.backend == TORCH else f"{self.device.type}-{self.backend}"


def resolve_device(name: str = "auto") -> "torch.device":
    """``auto`` picks CUDA, then MPS, then CPU; an unavailable device is a UsageError."""
    import torch

    if name not in DEVICES:
        raise UsageError(f"unknown device {name!r}", hint=f"choose one of: {', '.join(DEVICES)}")
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if name == "cuda" and not cuda:
        raise UsageError("CUDA was requested but no CUDA GPU is available",
                         hint="use --device cpu (or auto)")
    if name == "mps" and not mps:
        raise UsageError("MPS was requested but Apple's Metal backend is not available",
                         hint="use --device cpu (or auto)")
    return torch.device(name)


def cpu_supports_bf16() -> bool:
    import torch

    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check()) if check is not None else False


def supported_precisions(device: "torch.device") -> tuple[str, ...]:
    """The precisions ``device`` runs natively, fp32 first."""

    if device.type == "cpu":
        return ("fp32", "bf16") if cpu_supports_bf16() else ("fp32",)
    if device.type == "cuda":
        return ("fp32", "fp16", "bf16") if _cuda_bf16() else ("fp32", "fp16")
    if device.type == "mps":
        return ("fp32", "fp16")
    return ("fp32",)


def _cuda_bf16() -> bool:
    import torch

    try:
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    except (RuntimeError, AssertionError):  # no driver
        return False


def auto_precision(device: "torch.device") -> str:
    """What ``auto`` picks: bf16 on CPUs with native bf16 (AMX, AVX512-BF16), bf16 on
    CUDA GPUs that have it (same range as fp32, so no overflow) else fp16, fp32 elsewhere."""
    supported = supported_precisions(device)
    if device.type in ("cpu", "cuda") and "bf16" in supported:
        return "bf16"
    if device.type == "cuda":
        return "fp16"
    return "fp32"


def resolve_precision(name: str, device: "torch.device") -> "torch.dtype | None":
    """The compute dtype for ``name`` on ``device``; refuse what the device lacks.

    ``auto`` resolves to :func:`auto_precision`. An unsupported precision is a
    UsageError that names what the device supports.
    """
    import torch

    if name not in PRECISIONS:
        raise UsageError(f"unknown precision {name!r}", hint=f"choose one of: {', '.join(PRECISIONS)}")
    if name == AUTO:
        name = auto_precision(device)
    if name == INT8:  # quantized networks, not a dtype: OpenVINO runs them (_int8_runtime)
        raise UsageError("int8 runs on OpenVINO, not on PyTorch",
                         hint="use --backend auto (or openvino) with --precision int8")
    if name == "fp32":
        return None
    supported = supported_precisions(device)
    if name not in supported:
        what = {"cpu": "this CPU", "cuda": "this GPU", "mps": "Apple's MPS backend"}.get(device.type, device.type)
        raise UsageError(f"{name} is not supported on {what}, which supports: {', '.join(supported)}",
                         hint=f"use --precision auto (or {' / '.join(supported)})")
    return torch.float16 if name == "fp16" else torch.bfloat16


def resolve_runtime(device: str = "auto", precision: str = AUTO, backend: str = AUTO) -> Runtime:
    check_backend(backend, device)
    if backend == ONNXRUNTIME:
        return _onnxruntime_runtime(device, precision)
    if precision == INT8:
        return _int8_runtime(device, backend)
    dev = resolve_device("cpu" if backend == OPENVINO and device == AUTO else device)
    return _runtime(dev, precision, backend)


def runtime_for(device: "str | torch.device", precision: str = AUTO, backend: str = AUTO) -> Runtime:
    """Like :func:`resolve_runtime`, also for a ``torch.device`` (or ``"cuda:1"``) as given."""
    import torch

    if isinstance(device, str) and device in DEVICES:
        return resolve_runtime(device, precision, backend)
    dev = torch.device(device)
    check_backend(backend, dev.type)
    if backend == ONNXRUNTIME:
        return _onnxruntime_runtime(dev.type, precision)
    if precision == INT8:
        return _int8_runtime(dev.type, backend)
    return _runtime(dev, precision, backend)


def _runtime(dev: "torch.device", precision: str, backend: str) -> Runtime:
    """A PyTorch or OpenVINO runtime; ``backend`` auto is PyTorch, with int8 a candidate on the CPU."""
    from . import int8

    candidate = backend == AUTO and precision == AUTO and dev.type == "cpu" and int8.available()
    return Runtime(device=dev, compute_dtype=resolve_precision(precision, dev), auto=precision == AUTO,
                   backend=TORCH if backend == AUTO else backend, int8_candidate=candidate)


def _int8_runtime(device: str, backend: str) -> Runtime:
    """int8 runs on OpenVINO's CPU plugin: ``--backend auto`` or ``openvino``, on the CPU."""
    import torch

    from .int8 import require_nncf

    if backend not in (AUTO, OPENVINO):
        raise UsageError(f"int8 runs on OpenVINO, not on the {backend} backend",
                         hint="use --backend auto (or openvino) with --precision int8")
    if device not in (AUTO, "cpu"):
        raise UsageError(f"int8 runs on the CPU (OpenVINO), not on {device}",
                         hint="use --device cpu (or auto) with --precision int8")
    require_nncf()
    return Runtime(device=torch.device("cpu"), compute_dtype=None, backend=OPENVINO, int8=True)


def int8_runtime(runtime: Runtime) -> Runtime:
    """The runtime ``auto`` switches to when int8 is picked: OpenVINO int8 on the CPU."""
    return Runtime(device=runtime.device, compute_dtype=None, auto=runtime.auto, backend=OPENVINO, int8=True)


def _onnxruntime_runtime(device: str, precision: str) -> Runtime:
    """ONNX Runtime runs the networks on its provider; the sampler's tensors stay on the CPU. fp32 only."""
    import torch

    from .onnxruntime_backend import choose_provider

    if precision not in (AUTO, "fp32"):
        raise UsageError(f"the onnxruntime backend runs fp32, not {precision}",
                         hint="use --precision auto (or fp32), or --backend torch for bf16/fp16")
    return Runtime(device=torch.device("cpu"), compute_dtype=None, auto=precision == AUTO, backend=ONNXRUNTIME,
                   provider=choose_provider(device))


def check_backend(backend: str, device: str) -> None:
    """Refuse an unknown backend, OpenVINO on a device other than the CPU, or OpenVINO not installed."""
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}", hint=f"choose one of: {', '.join(BACKENDS)}")
    if backend == OPENVINO:
        if device not in (AUTO, "cpu"):
            raise UsageError(f"the openvino backend runs on the CPU, not {device}",
                             hint="use --device cpu (or auto), or --backend torch")
        from .openvino_backend import require_openvino

        require_openvino()
    if backend == ONNXRUNTIME:
        from .onnxruntime_backend import require_onnxruntime

        require_onnxruntime()


def fp32_runtime(runtime: Runtime) -> Runtime:
    """The same device and backend in float32 (what a failed calibration falls back to)."""
    return Runtime(device=runtime.device, compute_dtype=None, auto=runtime.auto, backend=runtime.backend,
                   provider=runtime.provider)


def torch_fp32_runtime(runtime: Runtime) -> Runtime:
    """The same device in float32 on PyTorch: the reference calibration compares with."""
    return Runtime(device=runtime.device, compute_dtype=None, auto=runtime.auto)


# Faces per model call when the user does not say. On the CPU a batch is not
# faster per face (bfr 512, 2 cores: 2.10 / 2.03 / 2.06 s per face at batch
# 1 / 2 / 4) and each extra face holds ~0.26 GB more activations; GPUs gain.
CPU_BATCH_SIZE = 1
GPU_BATCH_SIZE = 4


def auto_batch_size(device: "str | torch.device") -> int:
    """The default batch size on ``device``: 1 on the CPU, 4 on CUDA/MPS."""
    kind = device if isinstance(device, str) else device.type
    return CPU_BATCH_SIZE if kind == "cpu" else GPU_BATCH_SIZE


def request_huge_pages() -> bool:
    """Ask PyTorch to back large CPU tensors with transparent huge pages (Linux).

    A 512 face's activations are 64 MB each; with 4 KB pages the big convs
    miss the TLB constantly (measured: a 64-channel 3x3 conv at 512x512 runs at
    ~225 GFLOP/s with 4 KB pages and ~285 with huge pages, same run). PyTorch
    reads ``THP_MEM_ALLOC_ENABLE`` at its first CPU allocation only, so the
    ``elir`` command calls this first thing, and a Python program should call
    it before it imports torch (or set the variable itself). A value the user
    set is kept, and ``ELIR_NO_THP=1`` turns it off. Returns whether the
    request is in place.
    """
    if not sys.platform.startswith("linux") or os.environ.get(NO_THP_ENV) == "1":
        return False
    os.environ.setdefault(THP_ENV, "1")
    return os.environ[THP_ENV] == "1"


@functools.lru_cache(maxsize=None)
def _glibc_function(name: str):  # type: ignore[no-untyped-def]
    """glibc's function ``name`` through ctypes, looked up once (None off Linux or without it)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import ctypes.util

    library = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(library), name) if library else None
    except (OSError, AttributeError):
        return None


def tune_cpu_allocator() -> bool:
    """Keep freed memory in glibc's heap instead of unmapping it after each layer.

    Large activations otherwise go through mmap/munmap every time, costing
    hundreds of thousands of page faults per face. Every thread allocates from
    the main heap (one arena): glibc gives other threads arenas whose heaps
    are at most 64 MB, too small for a face's activations, so a model run in a
    worker thread (the server's worker, video's restore stage) faulted its
    memory in afresh at every layer (~4,400 page faults per bfr face, measured
    in the server). Only on Linux with glibc; returns whether the settings
    were applied. Idempotent.
    """
    global _allocator_tuned
    if _allocator_tuned:
        return True
    if os.environ.get(NO_MALLOPT_ENV) == "1":
        return False
    import ctypes  # here, not at the top: the CLI imports this module at every start

    mallopt = _glibc_function("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = (mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
          and mallopt(M_ARENA_MAX, 1) == 1)
    _allocator_tuned = ok
    return ok


def trim_cpu_heap() -> bool:
    """Give the heap's free pages back to the system (glibc ``malloc_trim(0)``).

    With :func:`tune_cpu_allocator`'s settings nothing is ever trimmed, so
    free blocks stay resident; a long run that frees and allocates large
    buffers in changing places (a video's encoder, opened again for every
    segment) fragments the heap, and its resident size grows with the run's
    length. Call this between units of work (a video segment), not per
    frame: the next allocations fault their pages in again. Only on Linux with
    glibc; returns whether memory was released.
    """
    import ctypes

    trim = _glibc_function("malloc_trim")
    if trim is None:
        return False
    trim.argtypes = (ctypes.c_size_t,)
    trim.restype = ctypes.c_int
    return trim(0) == 1


def prepare_model(model: "ElirModel", runtime: Runtime, *, compile: bool = False,
                  openvino_cache: "Path | None" = None, quantized: "dict[str, object] | None" = None) -> "ElirModel":
    """Inference-ready: eval, no grads, on the device, channels-last, at the runtime's precision.

    On the openvino backend the networks are handed to OpenVINO
    (:func:`.openvino_backend.to_openvino`), on the onnxruntime backend to
    ONNX Runtime (:func:`.onnxruntime_backend.to_onnxruntime`), cached in
    ``openvino_cache`` (the weights file's folder in the store for that
    backend; None: not cached); ``model`` stays the float32 PyTorch model it was.
    At int8, ``quantized`` holds the networks NNCF quantized (model.int8), or
    None to read them from ``openvino_cache``.

    On the CPU the allocator is tuned (:func:`tune_cpu_allocator`) and a bf16
    model gets its weights cast to bf16 once: under autocast they were cast
    again at every call (a fifth of the time) and the convs could not fuse
    their ReLU/SiLU/residual add (``cpu_conv``); measured 0.53x autocast's
    time at sr 256, same results within bf16 rounding. Elsewhere the weights
    stay float32 under autocast. ``compile=True`` also applies :func:`compile_model`.
    """
    import torch

    if runtime.device.type == "cpu":
        tune_cpu_allocator()
    if runtime.backend == ONNXRUNTIME:
        from .onnxruntime_backend import to_onnxruntime

        assert runtime.provider is not None
        return to_onnxruntime(model.eval().requires_grad_(False), runtime.provider, cache_dir=openvino_cache)
    if runtime.backend == OPENVINO:
        if compile:
            raise UsageError("--compile is for the torch backend; the openvino backend compiles its own way",
                             hint="drop --compile, or use --backend torch")
        from .openvino_backend import to_openvino

        return to_openvino(model.eval().requires_grad_(False), runtime.precision, cache_dir=openvino_cache,
                           quantized=quantized)
    model = model.eval().requires_grad_(False).to(runtime.device)
    if runtime.device.type == "cpu" and runtime.compute_dtype == torch.bfloat16:
        model = model.to(torch.bfloat16)
    elif next(model.parameters()).dtype != torch.float32:
        raise ValueError("prepare_model needs the float32 weights (this model's were cast to "
                         f"{next(model.parameters()).dtype}); keep a float32 copy to prepare at another precision")
    model = model.to(memory_format=torch.channels_last)
    model.compute_dtype = runtime.compute_dtype
    return compile_model(model) if compile else model


FORCED_ISA_ENV = "ATEN_CPU_CAPABILITY"
INDUCTOR_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


def separate_inductor_cache_for_forced_isa() -> None:
    """Give a process whose ATen code is forced (``ATEN_CPU_CAPABILITY=avx2``) its own Inductor cache.

    Inductor's on-disk cache does not key its entries by that setting (torch
    2.14): a model compiled under ``ATEN_CPU_CAPABILITY=avx2`` and then
    again without it, on the same AVX-512 machine, loaded the first one's
    kernels and crashed ("double free or corruption"), twice out of two from
    an empty cache. Such a process now caches in a subfolder named for the
    setting, so the two never meet. Inductor itself reads the folder from
    this environment variable (and writes it there).
    """
    forced = os.environ.get(FORCED_ISA_ENV, "").strip().lower()
    if not forced:
        return
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    except ImportError:  # another PyTorch's layout: leave its cache as it is
        return
    base = os.environ.get(INDUCTOR_CACHE_ENV) or default_cache_dir()
    if os.path.basename(base) != f"aten-{forced}":
        os.environ[INDUCTOR_CACHE_ENV] = os.path.join(base, f"aten-{forced}")


def compile_model(model: "ElirModel") -> "ElirModel":
    """``torch.compile`` the encoder, coarse estimator, vector field and decoder, in place.

    Opt-in: on the 2-core CPU of the README it took 34-79 s at the first face
    and was no faster afterwards; on a GPU it can pay over a long batch. The
    first call for each input shape compiles (a batch's last, smaller group
    compiles once more). Where compiling fails (Inductor needs a C++ compiler
    on the CPU), that part runs uncompiled: dynamo's ``suppress_errors``,
    which this turns on for the process. The module names and the
    ``state_dict`` keys stay as they were.
    """
    import logging

    import torch

    torch._dynamo.config.suppress_errors = True
    separate_inductor_cache_for_forced_isa()
    # Inductor's C++ build warns "No CUDA runtime is found" on every CPU-only machine.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    for part in (model.enc, model.mmse, model.fmir, model.dec):
        part.compile(dynamic=False)
    return model
