"""What trains and how: per-task trainable sub-networks, the authors' AdamW, their EMA, one step.

From eladc-git/ELIR @ 1f37aaf: ``get_model`` sets ``requires_grad`` and train/eval per
sub-network (``ELIR/models/load_model.py:50-59``); ``get_optimizer`` builds
``torch.optim.AdamW(model.parameters(), lr=lr)`` with torch's defaults for the rest and no
scheduler (``ELIR/training/tparmas.py:4-20``); ``ModelEMA`` keeps a ramped moving average of the
trainable parameters (``ELIR/training/ema_timm.py:27-55``), updated after every optimizer step
(``ELIR/irsetup.py:45-54``); its copy is what the checkpoints and the final ``elir.pth`` hold
(``ELIR/irsetup.py:121-140``, ``train.py:121-128``).
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Iterable

import torch

from .objectives import LossTerms, ObjectiveConfig, Teacher, objective
from .recipes import EMA_DECAY, STAGES, TRAINABLE

if TYPE_CHECKING:
    from elir_cli.model.elir import ElirModel

# torch.optim.AdamW's defaults, which the authors' configs leave as they are (optimizer_params: {}).
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
WEIGHT_DECAY = 0.01
EMA_RAMP = 2000.0  # the EMA's decay reaches 1 - 1/e of its value after this many updates


def set_trainable(model: "ElirModel", parts: Iterable[str] = TRAINABLE) -> list[str]:
    """Make ``parts`` trainable (``requires_grad``, train mode) and freeze the rest (eval mode).

    Returns the names of the trainable parameters, in ``model.named_parameters()`` order.
    """
    parts = tuple(parts)
    unknown = set(parts) - set(STAGES)
    if unknown:
        raise ValueError(f"parts must be among {STAGES}, got {sorted(unknown)}")
    if model.backend != "torch":
        raise ValueError(f"only a PyTorch model can train, this one runs on {model.backend}")
    for stage in STAGES:
        trains = stage in parts
        module = getattr(model, stage)
        module.requires_grad_(trains)
        module.train(trains)
    return [name for name, p in model.named_parameters() if p.requires_grad]


def make_optimizer(model: "ElirModel", lr: float) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, lr ``lr``, betas (0.9, 0.999), eps 1e-8, decay 0.01.

    The authors hand AdamW every parameter; the frozen ones never get a gradient, which AdamW
    skips, so giving it only the trainable ones steps the same weights the same way.
    """
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters: call set_trainable first")
    return torch.optim.AdamW(params, lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=WEIGHT_DECAY)


class ModelEMA:
    """A moving average of the trainable parameters (the authors' released weights are this).

    At creation: a frozen eval-mode copy of the whole model, and the names of the parameters
    that train now (only those are averaged; buffers and frozen weights stay as copied). The
    ``n``-th :meth:`update` uses ``d = decay * (1 - exp(-n / 2000))`` and sets, in place,
    ``ema = ema * d`` then ``ema += (1 - d) * w``.
    """

    def __init__(self, model: "ElirModel", *, decay: float = EMA_DECAY, updates: int = 0) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"decay must be in [0, 1), got {decay!r}")
        if updates < 0:
            raise ValueError(f"updates must be >= 0, got {updates!r}")
        self.decay = decay
        self.updates = updates
        self.names = [name for name, p in model.named_parameters() if p.requires_grad]
        self.model = copy.deepcopy(model).eval()
        self.model.requires_grad_(False)

    def decay_at(self, updates: int) -> float:
        return self.decay * (1 - math.exp(-updates / EMA_RAMP))

    @torch.no_grad()
    def update(self, model: "ElirModel") -> None:
        self.updates += 1
        d = self.decay_at(self.updates)
        live = dict(model.named_parameters())
        averaged = dict(self.model.named_parameters())
        for name in self.names:
            ema = averaged[name]
            ema.mul_(d)
            ema.add_((1.0 - d) * live[name].detach())

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged model's weights, in the released file's keys and order."""
        return self.model.state_dict()


def train_step(model: "ElirModel", optimizer: torch.optim.Optimizer, x_hq: torch.Tensor, x_lq: torch.Tensor,
               config: ObjectiveConfig, *, teacher: Teacher | None = None, ema: ModelEMA | None = None,
               noise: torch.Tensor | None = None, times: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> LossTerms:
    """One step as the authors' Lightning loop takes it: loss, backward, optimizer step, EMA update."""
    terms = objective(model, x_hq, x_lq, config, teacher=teacher, noise=noise, times=times, generator=generator)
    optimizer.zero_grad(set_to_none=True)
    terms.total.backward()
    optimizer.step()
    if ema is not None:
        ema.update(model)
    return terms
