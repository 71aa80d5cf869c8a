"""The run of ``elir tune``: :class:`Tuner` (set up, refuse what cannot work, train, validate, keep the best).

A run folder (``-o RUN``) holds:

- ``tune.json``: the settings, every default filled in (a resumed run must match them);
- ``checkpoint.safetensors``: the training state after the last validation (:mod:`.state`),
  replaced atomically;
- ``best.safetensors`` and ``best.md``: the best EMA weights so far in our format and their
  model card (:mod:`.export`), replaced atomically when a validation improves;
- ``summary.json``: at the end, the validations, the best, the timing, the registered name.

One step: the batch of the step (:mod:`.data`), noise and times drawn from a generator
seeded by (seed, step), the authors' objective, AdamW's step, the EMA's update
(:mod:`.objectives`, :mod:`.trainable`). Validation (:mod:`.validation`) measures the EMA
weights, the ones exported, at step 0, every ``val_every`` steps and at the last step;
a checkpoint follows each. ``resume`` continues from the checkpoint: the steps after it
compute exactly what an uninterrupted run computes (bitwise on a CPU, where the kernels
are deterministic; on CUDA the run asks PyTorch for deterministic algorithms).

Before a fresh run on a CPU, two throw-away steps time the device; a run that would take
more than a day is refused with the estimate (``force`` runs it anyway).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal

from elir_cli.errors import UsageError
from elir_cli.registry.store import sha256_file
from .data import (MIN_TRAIN_IMAGES, Geometry, ImageFolder, PairSource, TrainingSet, ValidationSet, degradation,
                   derived_seed, pair, split_held_out)
from .export import BEST_CARD, BEST_WEIGHTS, model_card, write_card, write_json, write_weights
from .parallel import Distributed
from .settings import TuneSettings, settings_from_saved
from .validation import LOSS, Validator, improves

if TYPE_CHECKING:
    import torch

    from elir_cli.evaluation.metrics import MetricFactory
    from elir_cli.model.elir import ElirModel

SETTINGS_FILE = "tune.json"
CHECKPOINT_FILE = "checkpoint.safetensors"
SUMMARY_FILE = "summary.json"
PROBE_STEPS = 2  # throw-away steps that time the device (the second one counts)
PROBE_MIN_STEPS = 100  # shorter runs are not timed first
CPU_DAY_S = 24 * 3600.0
SPEED_WINDOW = 20  # steps/s over the last this many steps
CUBLAS_DETERMINISTIC = ":4096:8"

EventKind = Literal["start", "step", "validation", "done"]


@dataclass
class TuneEvent:
    """What a run reports to its ``on_event`` callback (rank 0 only)."""

    kind: EventKind
    step: int
    total: int
    loss: float | None = None
    steps_per_s: float | None = None
    eta_s: float | None = None
    values: dict[str, float] = field(default_factory=dict)
    best: bool = False


@dataclass
class TuneResult:
    """What a run made: where, its best validation, what it registered."""

    out: Path
    weights: Path
    card: Path
    task: str
    steps: int
    best_step: int
    best_by: str
    best: dict[str, float]
    start: dict[str, float]
    history: list[dict[str, Any]]
    images: dict[str, int]
    seconds: float
    name: str | None = None
    registered: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(out=str(self.out), weights=str(self.weights), card=str(self.card))
        return data


def resume_settings(out: Path, **changes: Any) -> TuneSettings:
    """The settings of the run in ``out`` (its ``tune.json``), with ``changes`` (None: keep)."""
    path = Path(out) / SETTINGS_FILE
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{out} holds no tuning run to resume (no {SETTINGS_FILE})",
                         hint="leave out --resume to start one there") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    return settings_from_saved(saved, out=Path(out), **changes)


def check_registration(settings: TuneSettings) -> None:
    """The run's model name is usable, and free (or taken by this same run folder's weights)."""
    from elir_cli.registry.local import check_name, read_local_model

    name = settings.model_name
    check_name(name)
    taken = read_local_model(name)
    if taken is not None and Path(taken.origin) != (Path(settings.out) / BEST_WEIGHTS).resolve():
        raise UsageError(f"a local model named {name!r} exists already (from {taken.origin})",
                         option="name", value=name,
                         hint=f"choose another {{name}}, or remove it: elir models remove {name}")


def _human(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 60:.0f} minutes"


@contextlib.contextmanager
def deterministic(device: "torch.device") -> Iterator[None]:
    """Deterministic kernels for the run (restored after): PyTorch's flag, cuDNN without autotuning,
    plain convolutions on the CPU (no weight packing whose history could change the last bit)."""
    import torch

    from elir_cli.model.cpu_conv import plain_convs

    if device.type == "cuda":  # cuBLAS reads it when it starts: before the first CUDA matmul
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC)
    was = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
           torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    try:
        with plain_convs():
            yield
    finally:
        torch.use_deterministic_algorithms(was[0], warn_only=was[1])
        torch.backends.cudnn.benchmark = was[2]


class Tuner:
    """One tuning run (see the module doc). ``run()`` sets up, trains and returns a :class:`TuneResult`.

    ``on_event`` receives :class:`TuneEvent` (rank 0), ``log`` one-line messages;
    ``metric_factory`` replaces pyiqa's metric factory (tests); ``register`` puts the
    best weights in the store under ``settings.model_name`` at the end.
    """

    def __init__(self, settings: TuneSettings, *, resume: bool = False,
                 on_event: Callable[[TuneEvent], None] | None = None, log: Callable[[str], None] | None = None,
                 distributed: Distributed | None = None, metric_factory: "MetricFactory | None" = None,
                 register: bool = True) -> None:
        self.settings = settings
        self.resuming = resume
        self.dist = distributed or Distributed()
        self.on_event = on_event if self.dist.is_main else None
        self.log = log if self.dist.is_main and log is not None else (lambda message: None)
        self.metric_factory = metric_factory
        self.register = register and self.dist.is_main
        self.out = Path(settings.out)
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.seconds = 0.0

    # ------------------------------------------------------------------ the run
    def run(self) -> TuneResult:
        import torch

        self._check_run_folder()
        self.dist.barrier()  # every rank has looked at the folder before rank 0 writes into it
        self.device = _device(self.dist.device(self.settings.device))
        with deterministic(self.device):
            self._setup()
            started = time.perf_counter()
            seconds_before = self.seconds
            if not self.resuming:
                self._refuse_if_too_slow()
            if self.dist.is_main:
                if not self.resuming:  # first: a run stopped anywhere after its settings are written can resume
                    self._checkpoint()
                write_json(self.out / SETTINGS_FILE, self.settings.resolved())
                if self.step == 0 and not self.history:  # a new run, or one stopped during its first validation
                    self._validate_and_keep(0)
                    self._checkpoint()
            self._emit(TuneEvent("start", self.step, self.settings.steps))
            self._train(started, seconds_before)
            torch_version = torch.__version__
        self.seconds = seconds_before + (time.perf_counter() - started)
        return self._finish(torch_version)

    def _check_run_folder(self) -> None:
        s = self.settings
        if self.out.exists() and not self.out.is_dir():
            raise UsageError(f"{self.out} is a file, not a folder", hint="give a folder with -o")
        has_run = (self.out / SETTINGS_FILE).exists()
        if self.resuming:
            if not (self.out / CHECKPOINT_FILE).is_file():
                raise UsageError(f"{self.out} has no checkpoint to resume from",
                                 hint="a run writes one at its first validation; leave out --resume to start again")
            saved = json.loads((self.out / SETTINGS_FILE).read_text(encoding="utf-8"))
            changed = s.differences(saved)
            if changed:
                raise UsageError(f"--resume continues the run with its own settings, but these differ: "
                                 f"{'; '.join(changed)}", hint="leave them out (or give the values above), "
                                 "or start a new run in another -o folder")
        elif has_run:
            raise UsageError(f"{self.out} holds a tuning run already",
                             hint="pass --resume to continue it, or choose another -o folder")
        if self.register:
            check_registration(s)

    def _setup(self) -> None:
        import torch

        from elir_cli.registry.loading import load_float32_model, weights_path
        from elir_cli.registry.tasks import get_task
        from .objectives import SIDE_MULTIPLE
        from .teacher import load_teacher, teacher_source
        from .trainable import ModelEMA, make_optimizer, set_trainable

        s = self.settings
        task = get_task(s.task)
        if s.crop % SIDE_MULTIPLE:
            raise UsageError(f"{{size}} must be a multiple of {SIDE_MULTIPLE}, got {s.crop}", option="size",
                             value=s.crop)
        self.dist.check_batch(s.batch)
        self._data(task)  # first: a folder that cannot work fails before any weights are read
        source = s.weights or s.task
        path = weights_path(source)
        model = load_float32_model(source, task=s.task)
        if model.backend != "torch":  # pragma: no cover - load_float32_model builds torch models
            raise UsageError("only a PyTorch model can be tuned")
        self.base = f"{source} (sha256 {sha256_file(path)[:16]})" if s.weights else f"the released {s.task} weights"
        self.base_path = path
        self.teacher_name = teacher_source(s.teacher)
        teacher = load_teacher(s.teacher, model, log=self.log)
        self.objective = s.recipe.objective
        set_trainable(model, s.parts)
        self.model = model.to(self.device)
        self.teacher = teacher.to(self.device)
        self.optimizer = make_optimizer(self.model, s.learning_rate)
        self.ema = ModelEMA(self.model, decay=s.recipe.ema_decay)
        self.validator = None
        if self.dist.is_main:
            self.validator = Validator(self.val_data, task=s.task, teacher=self.teacher, config=self.objective,
                                       best_by=s.best_by, seed=s.seed, batch_size=s.batch, device=self.device,
                                       metric_factory=self.metric_factory)
        if self.resuming:
            from .state import load_state

            record = load_state(self.out / CHECKPOINT_FILE, model=self.model, ema=self.ema, optimizer=self.optimizer)
            self.step = int(record["step"])
            self.history = list(record["history"])
            self.best = record["best"]
            self.seconds = float(record.get("seconds", 0.0))
            self.log(f"Resuming {self.out} at step {self.step} of {s.steps}")
        torch.manual_seed(s.seed)  # nothing draws from it; set for code that might

    def _data(self, task: Any) -> None:
        s = self.settings
        geometry = Geometry(task, s.crop)
        hq = ImageFolder(s.hq, what="--hq")
        lq = ImageFolder(s.lq, what="--lq") if s.lq else None
        items = pair(hq, lq)
        source = PairSource(hq, lq, geometry)
        if s.val is None:
            train_items, val_items = split_held_out(items, s.seed)
            val_source = source
            held = len(val_items)
        else:
            val_hq = ImageFolder(s.val, what="--val")
            val_lq = ImageFolder(s.val_lq, what="--val-lq") if s.val_lq else None
            train_items, val_items = items, pair(val_hq, val_lq)
            val_source = PairSource(val_hq, val_lq, geometry)
            held = 0
        if len(train_items) < MIN_TRAIN_IMAGES:
            kept = f" ({held} held out for validation)" if held else ""
            raise UsageError(f"too few images to train: {len(items)} in --hq{kept}, at least "
                             f"{MIN_TRAIN_IMAGES + (held or 0)} needed", option="hq", value=s.hq,
                             hint="add photos (a few hundred work best)" + ("" if s.val else
                                                                              ", or give --val so none are held out"))
        source.check_all(train_items)
        if val_source is not source:
            val_source.check_all(val_items)
        degrade = degradation(task)
        self.train_data = TrainingSet(train_items, source, batch_size=s.batch, seed=s.seed, flip=s.flip,
                                      degrade=degrade)
        self.val_data = ValidationSet(val_items, val_source, seed=s.seed, degrade=degrade)
        self.images = {"train": len(train_items), "validation": len(val_items)}
        self.log(f"{len(train_items)} training images, {len(val_items)} for validation; "
                 f"{self.train_data.steps_per_epoch} step(s) per epoch (batch {s.batch}, {s.crop} px)")

    # ------------------------------------------------------------------ steps
    def _draws(self, step: int, batch: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
        """This rank's slice of the step's noise and times (the global batch's draw, seeded by the step)."""
        import torch

        from .objectives import FM, draw_times

        s = self.settings
        latent = (s.batch, self.model.config.latent_channels, s.crop // 8, s.crop // 8)
        generator = torch.Generator().manual_seed(derived_seed(s.seed, "noise", step))
        noise = torch.randn(latent, generator=generator)  # the noise first, then the times, as the authors draw
        dt = 0.0 if self.objective.method == FM else self.objective.dt
        times = draw_times(s.batch, dt=dt, generator=generator)
        per_rank = s.batch // self.dist.world_size
        mine = slice(self.dist.rank * per_rank, (self.dist.rank + 1) * per_rank)
        return noise[mine].to(batch.device), times[mine].to(batch.device)

    def _one_step(self, model: "ElirModel", optimizer: "torch.optim.Optimizer", step: int,
                  ema: Any = None) -> "torch.Tensor":
        from .objectives import objective

        x_hq, x_lq = self.train_data.batch(step, rank=self.dist.rank, world_size=self.dist.world_size)
        x_hq, x_lq = x_hq.to(self.device), x_lq.to(self.device)
        noise, times = self._draws(step, x_hq)
        terms = objective(model, x_hq, x_lq, self.objective, teacher=self.teacher, noise=noise, times=times)
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        self.dist.average_gradients(p for p in model.parameters() if p.requires_grad)
        optimizer.step()
        if ema is not None:
            ema.update(model)
        return terms.total.detach()

    def _refuse_if_too_slow(self) -> None:
        """Time two throw-away steps on a CPU; refuse a run of more than a day (unless ``force``)."""
        from .trainable import make_optimizer

        s = self.settings
        remaining = s.steps - self.step
        if self.device.type != "cpu" or self.dist.active or remaining < PROBE_MIN_STEPS:
            return
        model = copy.deepcopy(self.model)
        optimizer = make_optimizer(model, s.learning_rate)
        seconds = 0.0
        for i in range(PROBE_STEPS):
            started = time.perf_counter()
            self._one_step(model, optimizer, i)
            seconds = time.perf_counter() - started
        del model, optimizer
        estimate = seconds * remaining
        self.log(f"About {_human(estimate)} for {remaining} steps on this CPU ({seconds:.2f} s a step)")
        if estimate > CPU_DAY_S and not s.force:
            per_day = max(1, int(CPU_DAY_S / seconds))
            raise UsageError(f"{remaining} steps would take about {_human(estimate)} on this CPU "
                             f"({seconds:.1f} s a step, batch {s.batch} at {s.crop} px)", option="steps",
                             value=s.steps, mentions=("force",),
                             hint=f"a day holds about {per_day} steps here: lower {{steps}}, or train on a GPU "
                                  "(--device cuda; torchrun for several), or on a Ray cluster (--engine ray); "
                                  "{force} runs it anyway")

    def _train(self, started: float, seconds_before: float) -> None:
        s = self.settings
        recent: deque[float] = deque(maxlen=SPEED_WINDOW)
        last = time.perf_counter()
        for step in range(self.step, s.steps):
            loss = self.dist.mean(self._one_step(self.model, self.optimizer, step, self.ema))
            if not math.isfinite(loss):
                raise UsageError(f"the loss became {loss} at step {step + 1}", option="lr", value=s.learning_rate,
                                 hint="start a new run (another -o folder) with a lower {lr}; this run's best "
                                      "weights are kept, and --weights RUN/best.safetensors starts from them")
            self.step = step + 1
            now = time.perf_counter()
            recent.append(now - last)
            last = now
            rate = len(recent) / sum(recent) if sum(recent) > 0 else None
            eta = (s.steps - self.step) / rate if rate else None
            self._emit(TuneEvent("step", self.step, s.steps, loss=loss, steps_per_s=rate, eta_s=eta))
            if self.step % s.val_every == 0 or self.step == s.steps:
                self.seconds = seconds_before + (time.perf_counter() - started)
                if self.dist.is_main:
                    self._validate_and_keep(self.step)
                    self._checkpoint()
                self.dist.barrier()
                last = time.perf_counter()  # validation time is not step time

    # ------------------------------------------------------------------ validation, checkpoints
    def _validate_and_keep(self, step: int) -> None:
        assert self.validator is not None
        values = self.validator(self.ema.model)
        record = {"step": step, "values": values}
        self.history.append(record)
        metric = self.settings.best_by
        better = metric in values and improves(values[metric], self.best["value"] if self.best else None, metric)
        if better:
            self.best = {"step": step, "metric": metric, "value": values[metric], "values": values}
            write_weights(self.out / BEST_WEIGHTS, self.ema.model, task=self.settings.task,
                          provenance=self._provenance(step))
            self._write_card()
        self._emit(TuneEvent("validation", step, self.settings.steps, values=values, best=better))

    def _provenance(self, step: int) -> dict[str, str]:
        return {"tuned_by": "elir tune", "tuned_from": self.base, "tune_step": str(step),
                "tune_run": str(self.out.resolve()), "tune_best_by": self.settings.best_by,
                "tune_teacher": self.teacher_name}

    def _write_card(self) -> None:
        text = model_card(self.settings, base=self.base, teacher=self.teacher_name, images=self.images,
                          best=self.best or {}, history=self.history, seconds=self.seconds or None)
        write_card(self.out / BEST_CARD, text)

    def _checkpoint(self) -> None:
        from .state import save_state

        save_state(self.out / CHECKPOINT_FILE, model=self.model, ema=self.ema, optimizer=self.optimizer,
                   state={"step": self.step, "history": self.history, "best": self.best, "seconds": self.seconds,
                          "settings": self.settings.resolved()})

    def _emit(self, event: TuneEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)

    # ------------------------------------------------------------------ the end
    def _finish(self, torch_version: str) -> TuneResult:
        s = self.settings
        best = self.best or {"step": 0, "values": {}}
        result = TuneResult(out=self.out, weights=self.out / BEST_WEIGHTS, card=self.out / BEST_CARD, task=s.task,
                            steps=self.step, best_step=int(best["step"]), best_by=s.best_by,
                            best=dict(best.get("values", {})),
                            start=dict(self.history[0]["values"]) if self.history else {},
                            history=self.history, images=self.images, seconds=round(self.seconds, 3))
        if not self.dist.is_main:
            return result
        self._write_card()
        if self.register:
            from elir_cli.registry.local import register_local_model

            model = register_local_model(s.model_name, result.weights, task=s.task, card=result.card, base=self.base,
                                         details={"steps": self.step, "best_step": result.best_step,
                                                  "best_by": s.best_by, "best": result.best, "run": str(self.out.resolve())},
                                         replace_origin=result.weights.resolve())
            result.name, result.registered = model.name, model.path
        summary = {**result.to_json(), "torch": torch_version, "settings": s.resolved(), "loss_name": LOSS}
        write_json(self.out / SUMMARY_FILE, summary)
        self._emit(TuneEvent("done", self.step, s.steps, values=result.best))
        return result


def _device(name: str) -> "torch.device":
    import torch

    from elir_cli.model.runtime import resolve_device

    if ":" in name:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UsageError("CUDA was requested but no CUDA GPU is available", hint="use --device cpu (or auto)")
        return device
    return resolve_device(name)


def tune(settings: TuneSettings, *, resume: bool = False, on_event: Callable[[TuneEvent], None] | None = None,
         log: Callable[[str], None] | None = None, metric_factory: "MetricFactory | None" = None,
         register: bool = True) -> TuneResult:
    """Run ``settings`` in this process, or as this rank of the ranks ``torchrun`` started."""
    from .parallel import from_environment

    return Tuner(settings, resume=resume, on_event=on_event, log=log, distributed=from_environment(settings.device),
                 metric_factory=metric_factory, register=register).run()
