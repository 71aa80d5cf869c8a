"""Fine-tuning ELIR as its authors train it (``elir tune``, issue 26).

Owns :mod:`.objectives` (the authors' training losses: ``l2_cfm_mse_loss`` with its frozen
teacher, the coarse estimator's L2 term, ``fm_loss`` and ``cfm_loss``; noise and times explicit
or drawn from a generator), :mod:`.recipes` (each task's training config as data: objective,
learning rate, batch, crop, epochs, which sub-networks train) and :mod:`.trainable` (freezing
and unfreezing the sub-networks, the authors' AdamW, their EMA, one training step). Written
from a specification of the authors' training code (eladc-git/ELIR @ 1f37aaf: ``train.py``,
``ELIR/training/``, ``configs/elir_train_*.yaml``), not copied from it; the docstrings cite
their files and lines, and ``tests/test_tune_objectives.py`` replays numbers recorded from it.

The command around them: :mod:`.settings` (what decides a run, and its defaults for a small
dataset), :mod:`.data` (image pairs from folders or URLs, crops, flips, LQ made on the fly,
seeded per sample), :mod:`.teacher` (TAESD3, a file, or the model's own autoencoder),
:mod:`.validation` (the objective and ``elir eval``'s metrics on held-out images),
:mod:`.state` (the training checkpoint), :mod:`.export` (our ``.safetensors``, the model card),
:mod:`.loop` (:class:`Tuner`: the run, its refusals, resume), :mod:`.parallel` (``torchrun``
ranks) and :mod:`.ray_engine` (Ray Train workers).

Layer 4b (above evaluation, which may measure a tuned model, and distributed, whose URL
folders and Ray session it reuses).
May import: elir_cli.evaluation, elir_cli.distributed, elir_cli.pipeline, elir_cli.images, elir_cli.registry, elir_cli.model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from elir_cli._lazy import lazy_exports

if TYPE_CHECKING:
    from .loop import TuneEvent, TuneResult, Tuner, resume_settings, tune
    from .objectives import LossTerms, ObjectiveConfig, Teacher, objective
    from .ray_engine import tune_on_ray
    from .recipes import AUTHORS_RECIPES, TrainingRecipe
    from .settings import TuneSettings
    from .trainable import ModelEMA, make_optimizer, set_trainable, train_step

_LAZY = {"LossTerms": "objectives", "ObjectiveConfig": "objectives", "Teacher": "objectives",
         "objective": "objectives", "AUTHORS_RECIPES": "recipes", "TrainingRecipe": "recipes",
         "ModelEMA": "trainable", "make_optimizer": "trainable", "set_trainable": "trainable",
         "train_step": "trainable", "TuneSettings": "settings", "TuneEvent": "loop", "TuneResult": "loop",
         "Tuner": "loop", "resume_settings": "loop", "tune": "loop", "tune_on_ray": "ray_engine"}

__all__ = ["AUTHORS_RECIPES", "LossTerms", "ModelEMA", "ObjectiveConfig", "Teacher", "TrainingRecipe", "TuneEvent",
           "TuneResult", "TuneSettings", "Tuner", "make_optimizer", "objective", "resume_settings", "set_trainable",
           "train_step", "tune", "tune_on_ray"]


__getattr__ = lazy_exports(__name__, _LAZY, globals())
