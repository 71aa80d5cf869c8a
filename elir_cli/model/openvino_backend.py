"""The OpenVINO backend: ELIR's four networks run by OpenVINO's CPU plugin.

``--backend openvino`` (``pip install "elir-cli[openvino]"``). Each network of
the restorer (encoder ``enc``, coarse estimator ``mmse``, vector field
``fmir``, decoder ``dec``) is converted from the float32 PyTorch module to an
OpenVINO model with dynamic batch, height and width, and compiled for the
input shape it meets at the precision asked (``INFERENCE_PRECISION_HINT``:
``f32`` or ``bf16``). The Euler loop, the noise, ``steps``, ``fidelity`` and
the progress callback stay ElirModel's own (:meth:`ElirModel.forward`): only
the four networks are swapped, so both backends take the same inputs and
give the same kind of output.

Converting traces the PyTorch module (seconds per network) and compiling
takes about a second, so both are cached on disk when a ``cache_dir`` is
given (the store's per-weights folder, ``registry.store.openvino_cache_dir``):
the converted model as OpenVINO IR (``<stage>.xml``/``.bin``, any shape), and
each compiled model as an exported blob named for its precision and input
shape (``<stage>.<precision>.<BxCxHxW>.blob``). A second load of the same
weights imports the blob and neither traces nor compiles. The folder's name
carries the OpenVINO version, since a blob is only valid for the version that
wrote it. Writes are atomic; an unwritable cache only costs the time.

OpenVINO is imported only here, lazily; without it, :func:`require_openvino`
raises a ``UsageError`` with the install hint.
"""

from __future__ import annotations

import io
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from elir_cli.atomicwrite import write_bytes_atomic
from elir_cli.errors import ElirError, UsageError

from .cpu_conv import plain_convs
from .stages import check_float32_cpu, with_stages
from .stages import stages_of as _stages_of

if TYPE_CHECKING:
    from .elir import ElirModel

INSTALL_HINT = 'pip install "elir-cli[openvino]"'
# Our precision names -> OpenVINO's INFERENCE_PRECISION_HINT values. int8 networks (model.int8)
# compute their quantized layers in int8 and the layers accuracy control kept in float32.
OV_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
INT8 = "int8"


def require_openvino() -> Any:
    """The ``openvino`` module, or a one-line UsageError with the install hint."""
    try:
        import openvino
    except ImportError:
        raise UsageError("the openvino backend needs OpenVINO, which is not installed",
                         hint=INSTALL_HINT) from None
    return openvino


def cache_folder(root: Path) -> Path:
    """The version-specific folder under ``root`` (a weights file's OpenVINO cache)."""
    return root / f"ov-{require_openvino().__version__.split('-')[0]}"


def _shape_key(shapes: tuple[tuple[int, ...], ...]) -> str:
    return "_".join("x".join(str(d) for d in shape) for shape in shapes)


class OpenVinoStage(nn.Module):
    """One of ELIR's networks run by OpenVINO; called like the PyTorch module it replaces.

    ``loaded_from`` records, per input shape, where its compiled model came
    from: ``"blob"`` (the disk cache: nothing converted or compiled),
    ``"compiled"`` (compiled now from the IR on disk) or ``"converted"``
    (traced from PyTorch now).
    """

    def __init__(self, name: str, module: nn.Module, precision: str, *, example: tuple[torch.Tensor, ...],
                 cache_dir: Path | None, threads: int, converted: Any = None) -> None:
        super().__init__()
        if precision not in OV_PRECISION:
            raise ValueError(f"precision must be one of {sorted(OV_PRECISION)}, got {precision!r}")
        self.name = name
        self.precision = precision
        self.cache_dir = cache_dir
        self.threads = threads
        # Not a registered submodule: the state dict and .to() must not see a second copy.
        self.__dict__["_torch_module"] = module
        # An empty float32 CPU parameter: callers read a model's device and input dtype from
        # next(model.parameters()) (pipeline.photo.model_restorer, video), and OpenVINO takes float32.
        self.anchor = nn.Parameter(torch.empty(0), requires_grad=False)
        self._example = example
        # the converted model (any shape), on first need; at int8 the quantized one (model.int8)
        self._ov_model = converted
        # int8: which quantization this stage holds (a digest of its IR's weights), in its blobs' names,
        # so a process still holding an older quantization never hands its blobs to a newer one
        self._quantization: str | None = None
        if converted is not None and cache_dir is not None:  # a new quantization: its old blobs are stale
            for stale in cache_dir.glob(f"{name}.{precision}.*.blob"):
                stale.unlink(missing_ok=True)
            _save_ir(converted, self._ir_path())
            if precision == INT8:
                self._quantization = _digest(self._ir_path().with_suffix(".bin"))
        self._compiled: dict[tuple[tuple[int, ...], ...], Any] = {}
        self.loaded_from: dict[str, str] = {}

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.precision == INT8 and _too_small_for_int8(self.name, inputs[0]):
            return self._float32_stage()(*inputs)
        shapes = tuple(tuple(t.shape) for t in inputs)
        return run_compiled(self._compiled.get(shapes) or self._compile(shapes), *inputs)

    def _float32_stage(self) -> "OpenVinoStage":
        """This network at fp32 on OpenVINO (for inputs :func:`_too_small_for_int8`), made on first need."""
        if "_fp32" not in self.__dict__:
            self.__dict__["_fp32"] = OpenVinoStage(self.name, self._torch_module, "fp32", example=self._example,
                                                   cache_dir=self.cache_dir, threads=self.threads)
        return self.__dict__["_fp32"]

    # -- converting, compiling, caching ------------------------------------
    def _config(self) -> dict[str, Any]:
        return {"INFERENCE_PRECISION_HINT": OV_PRECISION[self.precision], "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_NUM_THREADS": self.threads}

    def _compile(self, shapes: tuple[tuple[int, ...], ...]) -> Any:
        ov = require_openvino()
        core = ov.Core()
        blob = self._blob_path(shapes)
        key = _shape_key(shapes)
        if blob is not None and blob.is_file():
            try:
                compiled = core.import_model(blob.read_bytes(), "CPU", self._config())
                self.loaded_from[key] = "blob"
                self._compiled[shapes] = compiled
                return compiled
            except RuntimeError:  # a damaged or foreign blob: compile afresh and replace it
                pass
        model = self._converted().clone()
        model.reshape({i: list(shape) for i, shape in enumerate(shapes)})
        compiled = core.compile_model(model, "CPU", self._config())
        self.loaded_from.setdefault(key, "compiled")
        if blob is not None:
            try:
                stream = io.BytesIO()
                compiled.export_model(stream)
                write_bytes_atomic(blob, stream.getvalue(), overwrite=True)
            except (ElirError, OSError):  # a read-only cache: compile again next time
                pass
        self._compiled[shapes] = compiled
        return compiled

    def _blob_path(self, shapes: tuple[tuple[int, ...], ...]) -> Path | None:
        """Where the compiled model for ``shapes`` is cached (None: not cached)."""
        if self.cache_dir is None:
            return None
        precision = self.precision
        if precision == INT8:
            if self._quantization is None:  # read from the cache: the quantization on disk now
                self._quantization = _digest(self._ir_path().with_suffix(".bin"))
            if self._quantization is None:
                return None
            precision = f"{INT8}.{self._quantization}"
        return self.cache_dir / f"{self.name}.{precision}.t{self.threads}.{_shape_key(shapes)}.blob"

    def _ir_path(self) -> Path:
        from .int8 import ir_path

        assert self.cache_dir is not None
        return ir_path(self.cache_dir, self.name) if self.precision == INT8 else self.cache_dir / f"{self.name}.xml"

    def _converted(self) -> Any:
        if self._ov_model is not None:
            return self._ov_model
        ov = require_openvino()
        xml = None if self.cache_dir is None else self._ir_path()
        if xml is not None and xml.is_file() and xml.with_suffix(".bin").is_file():
            try:
                self._ov_model = ov.Core().read_model(str(xml))
                return self._ov_model
            except RuntimeError:
                if self.precision == INT8:  # damaged: removed, so the next int8 run quantizes afresh
                    xml.unlink(missing_ok=True)
                    xml.with_suffix(".bin").unlink(missing_ok=True)
        if self.precision == INT8:  # quantizing needs a calibration set: pipeline.calibration does it
            raise ElirError(f"the int8 {self.name} network of these weights is not in the OpenVINO cache "
                            "(or could not be read)",
                            hint="run with --precision int8 once to quantize it (or elir models verify --precision)")
        self._ov_model = convert(self._torch_module, self._example)
        self.loaded_from["ir"] = "converted"
        if xml is not None:
            _save_ir(self._ov_model, xml)
        return self._ov_model


# The smallest latent side the int8 networks run at. OpenVINO 2026.4's int8 kernels crashed
# the process (a segmentation fault, which nothing can catch) on a 64 x 64 image (8 x 8 latent,
# 2 x 2 inside the vector field) with oneDNN limited to AVX2 (ONEDNN_MAX_CPU_ISA=AVX2, on an
# AVX-512 CPU); 128 x 128 (16 x 16) and larger ran. Smaller inputs, rare for ELIR (faces are 256
# or 512; bsr tiles are 512), run that network at fp32 instead: a little slower, never a crash.
INT8_MIN_LATENT_SIDE = 16
LATENT_FACTOR = 8  # the encoder's input is the image: 8 times the latent's side


def run_compiled(compiled: Any, *inputs: torch.Tensor) -> torch.Tensor:
    """One call of an OpenVINO compiled model on torch tensors (float32, on the CPU); a tensor of its own."""
    arrays = [t.detach().to("cpu", torch.float32).contiguous().numpy() for t in inputs]
    return torch.from_numpy(compiled(arrays)[0].copy())  # the request reuses its output buffer at the next call


def _digest(path: Path) -> str | None:
    """A short digest of a file (None when it cannot be read)."""
    import hashlib

    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    except OSError:
        return None


def _too_small_for_int8(stage: str, x: torch.Tensor) -> bool:
    side = min(x.shape[-2:]) // (LATENT_FACTOR if stage == "enc" else 1)
    return x.ndim == 4 and side < INT8_MIN_LATENT_SIDE


def convert(module: nn.Module, example: tuple[torch.Tensor, ...]) -> Any:
    """Trace ``module`` (float32) into an OpenVINO model with dynamic batch, height and width.

    Traced here rather than by OpenVINO, to skip ``torch.jit.trace``'s check
    run (a second forward pass: a fifth of the conversion time); the graph has
    no data-dependent control flow for the check to catch.
    """
    import warnings

    ov = require_openvino()
    inputs = [ov.PartialShape([-1, t.shape[1], -1, -1]) if t.ndim == 4 else ov.PartialShape([-1]) for t in example]
    with torch.no_grad(), plain_convs(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's TracerWarnings: shapes are dynamic inputs here
        traced = torch.jit.trace(module, example, check_trace=False)
        return ov.convert_model(traced, example_input=example, input=inputs)


def _save_ir(model: Any, xml: Path) -> None:
    """Save the IR atomically: into a temporary folder beside it, then moved (.bin first)."""
    ov = require_openvino()
    temp = xml.parent / f".tmp-{secrets.token_hex(6)}"
    try:
        temp.mkdir(parents=True)
        ov.save_model(model, str(temp / xml.name), compress_to_fp16=False)  # keep float32 weights
        os.replace(temp / xml.with_suffix(".bin").name, xml.with_suffix(".bin"))
        os.replace(temp / xml.name, xml)
    except (OSError, RuntimeError):  # a read-only cache: convert again next time
        pass
    finally:
        if temp.exists():
            for leftover in temp.iterdir():
                leftover.unlink()
            temp.rmdir()


def to_openvino(model: "ElirModel", precision: str, *, cache_dir: Path | None = None,
                threads: int | None = None, quantized: "dict[str, Any] | None" = None) -> "ElirModel":
    """An ElirModel whose four networks run on OpenVINO at ``precision`` (``fp32``/``bf16``/``int8``).

    ``model`` must hold float32 weights on the CPU; it is not changed (the
    new model keeps a reference to its modules, for shapes it has not yet
    converted). ``cache_dir``: the folder for this weights file's converted
    and compiled models (None: nothing cached). ``threads``: OpenVINO's
    inference threads (default: PyTorch's). ``quantized``: at int8, the
    quantized OpenVINO model of each network (model.int8), saved to the cache;
    without it they are read from the cache, where a missing one is an error.
    """
    require_openvino()
    if precision not in OV_PRECISION:
        raise UsageError(f"the openvino backend runs fp32, bf16 or int8, not {precision}",
                         hint="use --precision auto, fp32, bf16 or int8")
    check_float32_cpu(model, "to_openvino")
    folder = None if cache_dir is None else cache_folder(cache_dir)
    threads = threads or torch.get_num_threads()
    given = quantized or {}
    return with_stages(model, "openvino", precision, lambda name, module, example: OpenVinoStage(
        name, module, precision, example=example, cache_dir=folder, threads=threads, converted=given.get(name)))


def stages_of(model: "ElirModel") -> list[OpenVinoStage]:
    """The OpenVINO stages of a model from :func:`to_openvino` ([] for a PyTorch one)."""
    return _stages_of(model, OpenVinoStage)

