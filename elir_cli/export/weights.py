"""``elir export --format safetensors``: one task's weights as our ``.safetensors``, task recorded.

For files other tools load: spandrel (and so ComfyUI, chaiNNer) keeps only a
file's tensors, and the authors' sr, denoising and inpainting ``.pth`` files
hold the same tensors, so only a file that records its task in our header
tensor (:data:`elir_cli.model.checkpoint.HEADER_KEY`) says which it is. The
weights are checked against the task's network before anything is written,
the write is atomic, and the source file is never replaced.
"""

from __future__ import annotations

import os
from pathlib import Path

from elir_cli.atomicwrite import check_destination
from elir_cli.errors import UsageError


def export_safetensors(task: str, output: str | os.PathLike[str], *, weights: str | None = None,
                       overwrite: bool = False) -> Path:
    """Write the weights of ``task`` (its registry file, or ``weights``) to ``output`` as our safetensors."""
    from elir_cli.model.checkpoint import read_checkpoint, save_safetensors
    from elir_cli.registry.fit import build_task_model, check_task_fit
    from elir_cli.registry.loading import weights_path

    path = Path(output)
    if path.suffix.lower() != ".safetensors":
        raise UsageError(f"the output {path} does not end in .safetensors", option="output", value=str(path),
                         hint="name it e.g. elir_sr.safetensors (tools pick the loader by the extension)")
    file = weights_path(weights or task)
    check_destination(path, overwrite=overwrite, source_path=file)
    ckpt = read_checkpoint(file)
    check_task_fit(ckpt, task, source=str(file))  # every tensor fits the task's network, by name and shape
    model = build_task_model(ckpt, task, source=str(file))
    return save_safetensors(path, ckpt.state_dict, model.config, task=task)
