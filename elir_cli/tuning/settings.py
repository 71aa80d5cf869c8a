"""What decides a tuning run: :class:`TuneSettings`, checked when made, and its defaults.

The defaults are for a small dataset (tens to hundreds of photos) and a released model:

- what trains: the authors' parts (vector field, coarse estimator, encoder; the decoder
  stays frozen), their objective (``l2_cfm_mse_loss`` with the task's ``fm_cfg``), AdamW
  with torch's defaults, constant learning rate, EMA 0.999 (the exported weights are the
  EMA's, as the authors release theirs);
- batch: a quarter of the authors' per-GPU batch (4 for bfr at 512 px, 8 at 256 px);
- learning rate: the authors' scaled linearly with the batch (2.5e-5 for bfr, 5e-5 for the
  others): a released model moves slowly, which is what a few hundred photos can support;
- 2000 steps, validation (and a checkpoint) every 200;
- size: the task's input size (512 for bfr, 256 for the others); horizontal flips.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elir_cli.errors import UsageError

from .recipes import AUTHORS_RECIPES, STAGES, TRAINABLE, TrainingRecipe

DEFAULT_STEPS = 2000
DEFAULT_VAL_EVERY = 200
DEFAULT_SEED = 2025  # the authors' training seed (configs: env_cfg.seed)
BATCH_DIVISOR = 4  # our default batch: the authors' per-GPU batch / 4
SIZE_MULTIPLE = 32
MIN_SIZE = 32
TEACHER_SELF = "self"
BEST_BY = ("lpips", "psnr", "ssim", "loss")
# Settings a resumed run may change: they do not change what the steps compute.
RESUMABLE = ("steps", "device", "name", "force")


@dataclass(frozen=True)
class TuneSettings:
    """One ``elir tune`` run. Folders are paths or URLs; None means the default described above."""

    task: str
    hq: str
    out: Path
    lq: str | None = None
    val: str | None = None
    val_lq: str | None = None
    weights: str | None = None  # the starting weights: a file or a local model (default: the task's)
    teacher: str | None = None  # None: TAESD3 from the hub (the authors'); "self"; or a file
    steps: int = DEFAULT_STEPS
    batch_size: int | None = None
    size: int | None = None
    lr: float | None = None
    train: tuple[str, ...] | None = None  # the trainable parts (default: the authors')
    flip: bool = True
    val_every: int = DEFAULT_VAL_EVERY
    best_by: str = "lpips"
    seed: int = DEFAULT_SEED
    device: str = "auto"
    name: str | None = None  # the local model's name (default: the run folder's)
    force: bool = False

    def __post_init__(self) -> None:
        from elir_cli.registry.tasks import get_task

        get_task(self.task)
        object.__setattr__(self, "out", Path(self.out))
        # Local paths as absolute ones: Ray Train workers run in folders of their own, and a run
        # resumed from another folder must read the same files (URLs and local model names stay).
        for name, kind in (("hq", Path.is_dir), ("lq", Path.is_dir), ("val", Path.is_dir), ("val_lq", Path.is_dir),
                           ("weights", Path.is_file), ("teacher", Path.is_file)):  # a file: not a model's name
            value = getattr(self, name)
            if isinstance(value, (str, Path)) and "://" not in str(value) and kind(Path(value)):
                object.__setattr__(self, name, str(Path(value).resolve()))
        if self.train is not None:
            object.__setattr__(self, "train", tuple(self.train))
        checks = [
            ("steps", self.steps >= 1, f"must be at least 1, got {self.steps}"),
            ("val_every", self.val_every >= 1, f"must be at least 1, got {self.val_every}"),
            ("batch_size", self.batch_size is None or self.batch_size >= 1, f"must be at least 1, got {self.batch_size}"),
            ("lr", self.lr is None or self.lr > 0, f"must be positive, got {self.lr}"),
            ("size", self.size is None or (self.size >= MIN_SIZE and self.size % SIZE_MULTIPLE == 0),
             f"must be a multiple of {SIZE_MULTIPLE} of at least {MIN_SIZE}, got {self.size}"),
            ("best_by", self.best_by in BEST_BY, f"must be one of {', '.join(BEST_BY)}, got {self.best_by!r}"),
        ]
        for option, ok, why in checks:
            if not ok:
                raise UsageError(f"{{{option}}} {why}", option=option, value=getattr(self, option))
        if self.train is not None:
            unknown = sorted(set(self.train) - set(STAGES))
            if unknown or not self.train:
                raise UsageError(f"{{train}} takes parts among {', '.join(STAGES)}, got {','.join(self.train) or 'none'}",
                                 option="train", value=",".join(self.train))
        if self.val_lq is not None and self.val is None:
            raise UsageError("{val_lq} needs {val}", option="val_lq", value=self.val_lq, mentions=("val",),
                             hint="give the validation HQ folder with {val}")
        if self.lq is None and self.val is not None and self.val_lq is None and self.task not in _DEGRADABLE:
            raise UsageError(f"task {self.task} has no built-in degradation: {{val}} needs {{val_lq}}",
                             option="val", value=self.val, mentions=("val_lq",))

    # -- resolved defaults ----------------------------------------------------------
    @property
    def recipe(self) -> TrainingRecipe:
        return AUTHORS_RECIPES[self.task]

    @property
    def batch(self) -> int:
        return self.batch_size or max(1, self.recipe.batch_size // BATCH_DIVISOR)

    @property
    def crop(self) -> int:
        from elir_cli.registry.tasks import get_task

        return self.size or get_task(self.task).input_size

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else self.recipe.lr * self.batch / self.recipe.batch_size

    @property
    def parts(self) -> tuple[str, ...]:
        return self.train or TRAINABLE

    @property
    def model_name(self) -> str:
        return self.name or self.out.resolve().name

    def resolved(self) -> dict[str, Any]:
        """Every setting with its default filled in, as JSON data (``tune.json``, the model card)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data.update(out=str(self.out), batch_size=self.batch, size=self.crop, lr=self.learning_rate,
                    train=list(self.parts), name=self.model_name)
        return data

    def differences(self, saved: dict[str, Any]) -> list[str]:
        """The settings (other than :data:`RESUMABLE`) that differ from a saved run's, as ``name: saved -> now``."""
        now = self.resolved()
        return [f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in now.items()
                if k not in RESUMABLE and k != "out" and _norm(saved.get(k)) != _norm(v)]


_DEGRADABLE = ("bfr", "sr", "denoising", "inpainting")


def _norm(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def settings_from_saved(saved: dict[str, Any], **changes: Any) -> TuneSettings:
    """The settings a run folder's ``tune.json`` records, with ``changes`` (None: keep)."""
    names = {f.name for f in dataclasses.fields(TuneSettings)}
    data = {k: v for k, v in saved.items() if k in names}
    data.update({k: v for k, v in changes.items() if v is not None})
    if isinstance(data.get("train"), list):
        data["train"] = tuple(data["train"])
    return TuneSettings(**data)
