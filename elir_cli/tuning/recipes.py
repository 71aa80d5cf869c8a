"""The authors' training recipe of each task, as data (their ``configs/elir_train_<task>.yaml``).

Source: eladc-git/ELIR @ 1f37aaf, ``configs/elir_train_<task>.yaml``: ``fm_cfg`` lines 23-31,
``train_cfg`` about 58-68, the train dataset line 16, ``trainable:`` flags in ``arch_cfg``
(38-50) and ``teacher_cfg`` (51-54). Every config trains the vector field, the coarse
estimator and the encoder, keeps the decoder frozen, uses ``l2_cfm_mse_loss`` with a frozen
TAESD3 teacher, AdamW at ``lr`` with torch's other defaults, no scheduler, and an EMA of
decay 0.999 whose weights are the ones released.
"""

from __future__ import annotations

from dataclasses import dataclass

from .objectives import ObjectiveConfig

# The sub-networks of ElirModel, by checkpoint prefix.
STAGES = ("fmir", "mmse", "enc", "dec")
TRAINABLE = ("fmir", "mmse", "enc")  # trainable: True in every config; dec: trainable: False
EMA_DECAY = 0.999


@dataclass(frozen=True)
class TrainingRecipe:
    """What one authors' training config sets (per GPU batch; the number of GPUs is not stated)."""

    task: str
    objective: ObjectiveConfig
    lr: float
    batch_size: int
    patch_size: int
    epochs: int
    dataset: str
    trainable: tuple[str, ...] = TRAINABLE
    ema_decay: float = EMA_DECAY


AUTHORS_RECIPES: dict[str, TrainingRecipe] = {
    "bfr": TrainingRecipe("bfr", ObjectiveConfig(segments=5, sigma_s=0.1, dt=0.05), lr=1e-4,
                          batch_size=16, patch_size=512, epochs=400, dataset="FFHQ"),
    "sr": TrainingRecipe("sr", ObjectiveConfig(segments=5, sigma_s=0.1, dt=0.05), lr=2e-4,
                         batch_size=32, patch_size=256, epochs=250, dataset="FFHQ"),
    "denoising": TrainingRecipe("denoising", ObjectiveConfig(segments=5, sigma_s=0.025, dt=0.05), lr=2e-4,
                                batch_size=32, patch_size=256, epochs=250, dataset="FFHQ"),
    "inpainting": TrainingRecipe("inpainting", ObjectiveConfig(segments=5, sigma_s=0.1, dt=0.05), lr=2e-4,
                                 batch_size=32, patch_size=256, epochs=250, dataset="FFHQ"),
    "bsr": TrainingRecipe("bsr", ObjectiveConfig(segments=3, sigma_s=0.04, dt=0.2), lr=2e-4,
                          batch_size=32, patch_size=256, epochs=50, dataset="ImageNet"),
}
