"""Plug-in face restorers that drift on purpose, so that the faithfulness guard's answer is known.

``face_swap(other, calls)`` blends another person's aligned face into every crop, more at higher
fidelity (``floor``: still that much at fidelity 0); ``face_swap_by_person`` does so with a floor
per person, so that one batch has faces the guard lowers and faces it cannot save. ``Calls``
records the fidelities a restorer was asked for.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from elir_cli.faces.alignment import align_face, alignment_matrix
from tests.helpers.facephotos import load, shared_detector

CropRestorer = Callable[..., torch.Tensor]


def aligned(photo: str, size: int = 512) -> np.ndarray:
    """The first detected face of a test photo, aligned as the pipeline aligns it."""
    rgb = load(photo)
    face = shared_detector().detect(rgb)[0]
    return align_face(rgb, alignment_matrix(face.landmarks, size), size)


def as_batch(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]


class Calls:
    """A plug-in restorer's log: the fidelities it was asked for."""

    def __init__(self) -> None:
        self.fidelities: list[float] = []


def face_swap(other: np.ndarray, calls: Calls, floor: float = 0.0) -> CropRestorer:
    """A restorer that blends in another person's face, more at higher fidelity (``floor``: even at 0)."""
    other_t = as_batch(other)

    def restore(x: torch.Tensor, fidelity: float = 1.0) -> torch.Tensor:
        calls.fidelities.append(fidelity)
        w = floor + (1 - floor) * fidelity
        return (1 - w) * x + w * other_t.to(x.dtype).expand_as(x)
    return restore


def face_swap_by_person(other: np.ndarray, floors: dict[str, float], calls: Calls) -> CropRestorer:
    """:func:`face_swap` with a floor per person: each crop gets the floor of the test photo (a key of
    ``floors``) whose aligned face it is nearest to."""
    other_t = as_batch(other)
    people = [(as_batch(aligned(photo))[0], floor) for photo, floor in floors.items()]

    def restore(x: torch.Tensor, fidelity: float = 1.0) -> torch.Tensor:
        calls.fidelities.append(fidelity)
        out = []
        for crop in x:
            floor = min(people, key=lambda person: float((person[0].to(crop.dtype) - crop).abs().mean()))[1]
            w = floor + (1 - floor) * fidelity
            out.append((1 - w) * crop + w * other_t[0].to(crop.dtype))
        return torch.stack(out)
    return restore
