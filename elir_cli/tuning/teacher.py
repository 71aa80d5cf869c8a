"""Which frozen teacher a run learns from: the authors' TAESD3, a file, or the model's own autoencoder.

- default: TAESD3 (``madebyollin/taesd3`` on the Hugging Face Hub, the authors' teacher), fetched
  once through the hub client (:mod:`elir_cli.registry.teacher`);
- a file: one ``.safetensors`` (or a ``.pth`` state dict, read with ``weights_only=True``) with
  both halves under diffusers' ``AutoencoderTiny`` keys (``encoder.layers.N...``,
  ``decoder.layers.N...``), as ``madebyollin/taesd3`` ships it;
- ``self``: a frozen copy of the starting model's encoder and decoder. The authors' teacher
  is the pretrained TAESD3; a released model's encoder has trained since, so its latents are
  not TAESD3's. This works without a download, and differs from the authors' recipe.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from elir_cli.errors import CheckpointError, UsageError
from .objectives import Teacher
from .settings import TEACHER_SELF

if TYPE_CHECKING:
    from elir_cli.model.elir import ElirModel


def teacher_source(teacher: str | None) -> str:
    """How the run names its teacher (for the record and the model card)."""
    if teacher is None:
        from elir_cli.registry.teacher import TEACHER_REPO, TEACHER_REVISION

        return f"hf://{TEACHER_REPO}@{TEACHER_REVISION[:12]} (TAESD3, the authors' teacher)"
    if teacher == TEACHER_SELF:
        return "self (the starting model's own encoder and decoder; not the authors' TAESD3)"
    return str(teacher)


def load_teacher(teacher: str | None, start: "ElirModel", *, log: Callable[[str], None] | None = None) -> Teacher:
    """The frozen teacher for a run that starts from ``start`` (see the module doc)."""
    if teacher == TEACHER_SELF:
        return Teacher.from_model(start)
    if teacher is None:
        from elir_cli.registry.teacher import ensure_teacher_weights

        if log:
            log("Teacher: TAESD3 (madebyollin/taesd3), the authors' frozen teacher")
        path = ensure_teacher_weights(progress=log is not None)
    else:
        path = Path(teacher)
        if not path.is_file():
            raise UsageError(f"{{teacher}} {teacher} is not a file", option="teacher", value=teacher,
                             hint="give TAESD3's diffusion_pytorch_model.safetensors, or 'self'")
    return teacher_from_file(path, latent_channels=start.config.latent_channels)


def teacher_from_file(path: Path, *, latent_channels: int) -> Teacher:
    """A :class:`Teacher` holding the autoencoder in ``path`` (strict: every key, every shape)."""
    import torch

    from elir_cli.model.checkpoint import read_checkpoint

    try:
        state = read_checkpoint(path).state_dict
    except CheckpointError as exc:
        raise CheckpointError(f"cannot read the teacher {path}: {exc.message}",
                              hint="give TAESD3's diffusion_pytorch_model.safetensors") from None
    teacher = Teacher(latent_channels=latent_channels)
    expected = teacher.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong:
        parts = [f"{label} {len(keys)} (first: {keys[0]})" for label, keys in
                 (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
        raise CheckpointError(f"{path} is not a tiny autoencoder with {latent_channels} latent channels "
                              f"({'; '.join(parts)})",
                              hint="the teacher takes diffusers' AutoencoderTiny keys (encoder.layers.N, "
                                   "decoder.layers.N), as madebyollin/taesd3 ships them")
    teacher.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)
    return teacher.freeze()
