"""``elir export --format onnx``: the whole restorer as one static-size ONNX graph.

The graph is free of randomness and Python control flow: the input image
(1,3,S,S) at the task's size S and the flow's starting noise (1,latent,S/8,S/8)
are its two inputs, the K Euler steps are unrolled with their times (and so
their time embeddings) constant, and the output is the restored image clamped
to [0,1]. Opset 17; the dynamo exporter when ``onnxscript`` is installed,
else (or when it fails) the TorchScript-based one. After export the graph is
run by onnxruntime on a fixed input and compared with PyTorch in float32; a
difference above :data:`PARITY_TOL` is an error and nothing is written. A
model card (JSON) is written beside the graph. Both files are written
atomically, and an existing output is refused unless ``overwrite``.

onnx and onnxruntime are optional (``pip install "elir-cli[onnx]"``).
"""

from __future__ import annotations

import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from elir_cli._version import __version__
from elir_cli.atomicwrite import check_destination, write_bytes_atomic
from elir_cli.errors import ElirError, UsageError, first_line

if TYPE_CHECKING:
    import torch

    from elir_cli.model.elir import ElirModel

OPSET = 17
PARITY_TOL = 1e-4
PARITY_SEED = 0
INPUT_NAMES = ("image", "noise")
OUTPUT_NAME = "restored"
FORMATS = ("onnx",)
INSTALL_HINT = 'pip install "elir-cli[onnx]"'


class ExportError(ElirError):
    """The exported graph could not be made or does not match PyTorch."""


@dataclass(frozen=True)
class ExportResult:
    path: Path
    card_path: Path
    card: dict[str, Any]


def card_path_for(path: Path) -> Path:
    """The model card beside ``path``: ``model.onnx`` -> ``model.json``."""
    return path.with_suffix(".json")


def _require_onnx() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise UsageError(f"ONNX export needs onnx and onnxruntime ({exc.name} is not installed)",
                         hint=INSTALL_HINT) from None
    return onnx, onnxruntime


def unrolled(model: "ElirModel", *, steps: int | None = None, fidelity: float = 1.0) -> "torch.nn.Module":
    """``(image, noise) -> restored``: encoder, coarse estimate + sigma_s * noise, the Euler
    steps unrolled with constant times, decoder, clamp. Same arithmetic as ``model.restore``."""
    import torch

    from elir_cli.model.sampler import euler_steps

    k_steps = model.config.k_steps if steps is None else int(steps)
    schedule = euler_steps(k_steps, fidelity)

    class Unrolled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.elir = model

        def forward(self, image: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
            elir = self.elir
            z = elir.coarse(elir.encode(image)) + elir.config.sigma_s * noise  # (1,latent,S/8,S/8)
            for t, dt in schedule:  # unrolled: K copies of the vector field, t constant
                z = z + dt * elir.velocity(z, t)
            return elir.decode(z).clamp(0.0, 1.0)

    return Unrolled().eval()


def _export_bytes(module: "torch.nn.Module", args: tuple["torch.Tensor", ...]) -> tuple[bytes, str]:
    """The ONNX graph as bytes, and which exporter made it."""
    import importlib.util
    import warnings

    import torch

    common = dict(input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME], opset_version=OPSET)
    if importlib.util.find_spec("onnxscript") is not None:
        try:
            program = torch.onnx.export(module, args, dynamo=True, **common)  # type: ignore[arg-type]
            return program.model_proto.SerializeToString(), "dynamo"  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001 - the legacy exporter is the documented fallback
            pass
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the times are constants on purpose; the legacy exporter is deprecated
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(module, args, buffer, dynamo=False, do_constant_folding=True, **common)
    return buffer.getvalue(), "torchscript"


def export_onnx(model: "ElirModel", output: str | os.PathLike[str], *, weights_sha256: str | None,
                steps: int | None = None, fidelity: float = 1.0, overwrite: bool = False,
                size: int | None = None, log: Callable[[str], None] | None = None) -> ExportResult:
    """Export ``model`` (float32, its ``task`` set) to ``output``, check it, write its card."""
    onnx, ort = _require_onnx()
    import numpy as np
    import torch

    from elir_cli.model.cpu_conv import plain_convs
    from elir_cli.registry.tasks import get_task

    say = log or (lambda message: None)
    path = check_destination(output, overwrite=overwrite, source_path=None)
    card_path = check_destination(card_path_for(path), overwrite=overwrite, source_path=None)
    if model.task is None:
        raise UsageError("the weights do not say their task", hint="pass --task")
    spec = get_task(model.task)
    size = size or spec.input_size
    if size % model.config.pad_multiple:
        raise UsageError(f"the export size {size} is not a multiple of {model.config.pad_multiple}")
    model = model.float().eval().requires_grad_(False)
    model.compute_dtype = None
    module = unrolled(model, steps=steps, fidelity=fidelity)
    latent = (1, model.config.latent_channels, size // 8, size // 8)
    generator = torch.Generator().manual_seed(PARITY_SEED)
    image = torch.rand(1, 3, size, size, generator=generator)
    noise = torch.randn(latent, generator=generator)
    started = time.perf_counter()
    with plain_convs(), torch.no_grad():  # ATen convs only: what the exporters know
        data, exporter = _export_bytes(module, (image, noise))
        expected = module(image, noise).numpy()
    say(f"Exported with the {exporter} exporter in {time.perf_counter() - started:.1f} s; checking with onnxruntime")
    try:
        onnx.checker.check_model(onnx.load_from_string(data))
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        got = session.run([OUTPUT_NAME], {INPUT_NAMES[0]: image.numpy(), INPUT_NAMES[1]: noise.numpy()})[0]
    except Exception as exc:  # noqa: BLE001 - onnx/onnxruntime raise their own types
        raise ExportError(f"onnxruntime could not run the exported graph: {first_line(exc)}") from exc
    diff = float(np.abs(got - expected).max())
    if not diff <= PARITY_TOL:
        raise ExportError(f"the ONNX graph differs from PyTorch by {diff:.2e} (max |diff|, limit {PARITY_TOL:g})",
                          hint="rerun with --debug and report it")
    card = {
        "format": "onnx", "opset": OPSET, "exporter": exporter, "elir_cli": __version__,
        "task": spec.name, "title": spec.title, "steps": len(euler_steps_of(model, steps, fidelity)),
        "k_steps": model.config.k_steps if steps is None else int(steps), "fidelity": fidelity,
        "sigma_s": model.config.sigma_s,
        "inputs": {INPUT_NAMES[0]: {"shape": [1, 3, size, size], "dtype": "float32",
                                    "meaning": "RGB image, NCHW, values in [0,1]" + (
                                        ", the face aligned to the FFHQ template" if spec.kind == "face" else "")},
                   INPUT_NAMES[1]: {"shape": list(latent), "dtype": "float32",
                                    "meaning": "standard normal noise (the flow's start); fix it for repeatable output"}},
        "output": {OUTPUT_NAME: {"shape": [1, 3, size, size], "dtype": "float32", "meaning": "restored RGB in [0,1]"}},
        "weights_sha256": weights_sha256,
        "parity": {"runtime": f"onnxruntime {ort.__version__}", "max_abs_diff": diff, "tolerance": PARITY_TOL,
                   "seed": PARITY_SEED},
        "bytes": len(data),
    }
    write_bytes_atomic(path, data, overwrite=overwrite)
    write_bytes_atomic(card_path, (json.dumps(card, indent=2) + "\n").encode(), overwrite=overwrite)
    return ExportResult(path=path, card_path=card_path, card=card)


def euler_steps_of(model: "ElirModel", steps: int | None, fidelity: float) -> list[tuple[float, float]]:
    from elir_cli.model.sampler import euler_steps

    return euler_steps(model.config.k_steps if steps is None else int(steps), fidelity)


def export_task(task: str, output: str | os.PathLike[str], *, weights: str | None = None, fmt: str = "onnx",
                steps: int | None = None, overwrite: bool = False,
                log: Callable[[str], None] | None = None) -> ExportResult:
    """Export a task's model (its registry weights, or ``weights``) in ``fmt``."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}", hint=f"choose one of: {', '.join(FORMATS)}, safetensors")
    _require_onnx()  # before loading anything
    path = Path(output)
    check_destination(path, overwrite=overwrite, source_path=None)
    check_destination(card_path_for(path), overwrite=overwrite, source_path=None)
    from elir_cli.registry.loading import load_float32_model, weights_path
    from elir_cli.registry.store import recorded_sha256

    file = weights_path(weights or task)
    model = load_float32_model(file, task=task)
    if model.task and model.task != task:
        raise UsageError(f"the weights {file} are for task {model.task!r}, not {task!r}")
    model.task = task
    return export_onnx(model, path, weights_sha256=recorded_sha256(file, task), steps=steps,
                       overwrite=overwrite, log=log)


__all__ = ["ExportError", "ExportResult", "export_onnx", "export_task", "unrolled"]
