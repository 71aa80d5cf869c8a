"""Validation during a run: the objective on held-out pairs, and ``elir eval``'s metrics.

Every validation measures the same thing, so two are comparable: the objective (the loss
being trained) on the validation pairs with noise and times drawn from a fixed seed, and
the restorations of the validation LQ images (a fresh generator seeded with ``seed`` per
image, as ``elir eval`` restores) scored against their HQ images with ``elir eval``'s
metrics (:class:`elir_cli.evaluation.metrics.MetricSet`: PSNR and SSIM always, LPIPS
when it chooses the best). The run keeps the weights that score best on ``best_by``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from elir_cli.errors import ModelNotAvailableError
from .data import ValidationSet, derived_seed
from .objectives import ObjectiveConfig, Teacher, objective

if TYPE_CHECKING:
    import torch

    from elir_cli.evaluation.metrics import MetricFactory
    from elir_cli.model.elir import ElirModel

ALWAYS = ("psnr", "ssim")
LOSS = "loss"


def metric_names(best_by: str) -> list[str]:
    """The metrics a validation computes (``loss`` is the objective, always computed)."""
    return list(dict.fromkeys([*ALWAYS, *([best_by] if best_by != LOSS else [])]))


def lower_is_better(name: str) -> bool:
    if name == LOSS:
        return True
    from elir_cli.evaluation.metrics import metric_spec

    return metric_spec(name).lower_better


def improves(value: float, best: float | None, name: str) -> bool:
    """Whether ``value`` of metric ``name`` beats ``best`` (None: nothing yet)."""
    if best is None:
        return True
    return value < best if lower_is_better(name) else value > best


class Validator:
    """Measures a model on a :class:`ValidationSet` (built once; see the module doc)."""

    def __init__(self, data: ValidationSet, *, task: str, teacher: Teacher | None, config: ObjectiveConfig,
                 best_by: str, seed: int, batch_size: int, device: "torch.device",
                 metric_factory: "MetricFactory | None" = None) -> None:
        from elir_cli.evaluation.metrics import MetricSet

        self.data, self.task, self.teacher, self.config = data, task, teacher, config
        self.best_by, self.seed, self.batch_size, self.device = best_by, seed, batch_size, device
        try:
            self.metrics = MetricSet(metric_names(best_by), task, device, factory=metric_factory)
        except ModelNotAvailableError as exc:
            raise ModelNotAvailableError(exc.message, hint=f"{exc.hint}; or choose the best weights by another "
                                         "measure: --best-by psnr (or ssim, loss)") from None

    def __call__(self, model: "ElirModel") -> dict[str, float]:
        """``{"loss": ..., "psnr": ..., ...}``: the means over the validation images."""
        import torch

        values: dict[str, Any] = {LOSS: self.loss(model)}
        per_image: list[dict[str, float]] = []
        for i in range(len(self.data)):
            lq = self.data.lq[i:i + 1].to(self.device)
            generator = torch.Generator().manual_seed(self.seed)  # a fresh one per image, as elir eval
            restored = model.restore(lq, generator=generator)
            out = restored[0].permute(1, 2, 0).float().cpu().numpy()
            gt = self.data.hq[i].permute(1, 2, 0).numpy()
            per_image.append(self.metrics.per_image(out, gt))
        for name in metric_names(self.best_by):
            scores = [v[name] for v in per_image if name in v]
            if scores:
                values[name] = float(np.mean(scores))
        return values

    def loss(self, model: "ElirModel") -> float:
        """The objective on the validation pairs, noise and times from fixed seeds (the mean over batches)."""
        import torch

        total, count = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(self.data), self.batch_size):
                hq = self.data.hq[start:start + self.batch_size].to(self.device)
                lq = self.data.lq[start:start + self.batch_size].to(self.device)
                generator = torch.Generator().manual_seed(derived_seed(self.seed, "validation-noise", start))
                terms = objective(model, hq, lq, self.config, teacher=self.teacher, generator=generator)
                total += float(terms.total) * hq.shape[0]
                count += hq.shape[0]
        return total / count
