"""``elir tune``: parse options, run :mod:`elir_cli.tuning`, show progress, report."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from elir_cli.registry.choices import TaskName
from . import options as opt
from .console import StderrConsole, stderr_console

TUNE_EPILOG = """\b
Examples:
  elir tune --task bfr --hq my_faces/ -o runs/faces                # LQ made on the fly, 10% held out
  elir tune --task sr --hq hq/ --lq lq/ --val val_hq/ --val-lq val_lq/ -o runs/sr
  elir tune --task bfr --hq faces/ -o runs/faces --resume          # continue after an interruption
  elir tune --task denoising --hq hq/ -o runs/cpu --steps 20 --size 64 --teacher self   # a CPU smoke test
  torchrun --nproc-per-node 4 -m elir_cli tune --task bfr --hq faces/ -o runs/ddp --batch-size 16
  elir tune --task bfr --hq s3://bucket/faces -o runs/ray --engine ray --num-workers 4 --gpus-per-worker 1
  elir restore photo.jpg --task bfr --weights faces                 # the tuned model, by its name
"""

EngineOpt = Annotated[opt.Engine, typer.Option("--engine", help="local: this process (torchrun starts several); ray: Ray Train workers (pip install \"elir-cli[ray]\").", rich_help_panel=opt.DISTRIBUTED)]
CpusPerWorker = Annotated[float, typer.Option("--cpus-per-worker", min=0.01, help="CPUs each Ray Train worker reserves.", rich_help_panel=opt.DISTRIBUTED)]
GpusPerWorker = Annotated[float, typer.Option("--gpus-per-worker", min=0.0, help="GPUs each Ray Train worker reserves (0: train on CPUs).", rich_help_panel=opt.DISTRIBUTED)]
TRAINING = "Training"
DATA = "Data"
OUTPUT = opt.OUTPUT

Task = Annotated[Optional[TaskName], typer.Option("--task", "-t", help="The task to tune (its released weights are the start).", show_default=False)]


def tune(
    output: Annotated[Path, typer.Option("--output", "-o", help="Run folder: tune.json, checkpoint.safetensors, best.safetensors, best.md, summary.json.", show_default=False)],
    task: Task = None,
    hq: Annotated[Optional[str], typer.Option("--hq", help="Folder (or s3://, gs:// URL) of high-quality photos; face tasks want aligned face crops.", rich_help_panel=DATA, show_default=False)] = None,
    lq: Annotated[Optional[str], typer.Option("--lq", help="Their degraded versions, paired by file name (default: made on the fly with the task's `elir degrade` degradation).", rich_help_panel=DATA, show_default=False)] = None,
    val: Annotated[Optional[str], typer.Option("--val", help="Validation photos (default: a seeded tenth of --hq, 1 to 32, held out).", rich_help_panel=DATA, show_default=False)] = None,
    val_lq: Annotated[Optional[str], typer.Option("--val-lq", help="Their degraded versions, paired by file name (default: made once, seeded).", rich_help_panel=DATA, show_default=False)] = None,
    weights: Annotated[Optional[str], typer.Option("--weights", help="Start from these weights (a file or a local model's name) instead of the task's released ones.", rich_help_panel=TRAINING, show_default=False)] = None,
    teacher: Annotated[Optional[str], typer.Option("--teacher", help="The frozen teacher: a TAESD3 file, or 'self' (the model's own autoencoder, not the authors' recipe). Default: TAESD3 from the Hugging Face Hub.", rich_help_panel=TRAINING, show_default=False)] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", min=1, help="Optimizer steps [default: 2000].", rich_help_panel=TRAINING, show_default=False)] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Images per step, over all processes [default: 4 for bfr, 8 otherwise].", rich_help_panel=TRAINING, show_default=False)] = None,
    size: Annotated[Optional[int], typer.Option("--size", min=32, help="Training size in px, a multiple of 32 [default: the task's, 512 for bfr, 256 otherwise].", rich_help_panel=TRAINING, show_default=False)] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", min=0.0, help="AdamW learning rate [default: the authors', scaled by batch: 2.5e-5 for bfr, 5e-5 otherwise].", rich_help_panel=TRAINING, show_default=False)] = None,
    train: Annotated[Optional[str], typer.Option("--train", help="Parts that train, comma-separated among fmir, mmse, enc, dec [default: fmir,mmse,enc, as the authors].", rich_help_panel=TRAINING, show_default=False)] = None,
    no_flip: Annotated[bool, typer.Option("--no-flip", help="No horizontal flips (default: p = 0.5, as the authors).", rich_help_panel=TRAINING)] = False,
    val_every: Annotated[Optional[int], typer.Option("--val-every", min=1, help="Validate (and checkpoint) every N steps [default: 200].", rich_help_panel=TRAINING, show_default=False)] = None,
    best_by: Annotated[Optional[str], typer.Option("--best-by", help="Keep the weights best by: lpips, psnr, ssim or loss [default: lpips].", rich_help_panel=TRAINING, show_default=False)] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed of every random draw [default: 2025].", rich_help_panel=TRAINING, show_default=False)] = None,
    device: opt.DeviceOpt = opt.Device.auto,
    name: Annotated[Optional[str], typer.Option("--name", help="Register the result under this name [default: the run folder's name].", rich_help_panel=OUTPUT, show_default=False)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in -o from its last checkpoint (its own settings; --steps may grow).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Run even when the estimate says it takes more than a day on this CPU.")] = False,
    engine: EngineOpt = opt.Engine.local,
    ray_address: opt.RayAddress = None,
    num_workers: Annotated[Optional[int], typer.Option("--num-workers", min=1, help="Ray Train workers, one rank each [default: 1].", rich_help_panel=opt.DISTRIBUTED, show_default=False)] = None,
    cpus_per_worker: CpusPerWorker = 1.0,
    gpus_per_worker: GpusPerWorker = 0.0,
    as_json: opt.JsonOut = False,
    quiet: opt.Quiet = False,
) -> None:
    """Fine-tune ELIR on your own photos as its authors train it; keep the best weights and register them."""
    from elir_cli.errors import UsageError
    from elir_cli.tuning.loop import resume_settings
    from elir_cli.tuning.settings import TuneSettings

    given: dict[str, Any] = {
        "task": task.value if task is not None else None, "hq": hq, "lq": lq, "val": val, "val_lq": val_lq,
        "weights": weights, "teacher": teacher, "steps": steps, "batch_size": batch_size, "size": size, "lr": lr,
        "train": tuple(p.strip() for p in train.split(",") if p.strip()) if train is not None else None,
        "flip": False if no_flip else None, "val_every": val_every, "best_by": best_by, "seed": seed,
        "device": device.value, "name": name, "force": force or None}
    if resume:
        settings = resume_settings(output, **given)
    else:
        missing = [flag for flag, value in (("--task", task), ("--hq", hq)) if value is None]
        if missing:
            raise UsageError(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} needed to start a run",
                             hint="or pass --resume to continue the run in -o")
        settings = TuneSettings(out=output, **{k: v for k, v in given.items() if v is not None})
    main_rank = int(os.environ.get("RANK", "0") or 0) == 0
    console = stderr_console(quiet=quiet or not main_rank)
    with _Progress(console, settings.task) as show:
        try:
            if engine is opt.Engine.ray:
                from elir_cli.distributed.cluster import RayOptions
                from elir_cli.tuning.ray_engine import tune_on_ray

                ray = RayOptions(address=ray_address, num_model_workers=num_workers, cpus_per_worker=cpus_per_worker,
                                 gpus_per_worker=gpus_per_worker)
                result = tune_on_ray(settings, ray, resume=resume, on_event=show.event, log=show.log)
            else:
                from elir_cli.tuning.loop import tune as run

                result = run(settings, resume=resume, on_event=show.event, log=show.log)
        except KeyboardInterrupt:
            show.stop()
            console.print(f"[yellow]Interrupted[/] at step {show.step}: `elir tune -o {output} --resume` continues "
                          "from the last checkpoint.", force=main_rank)
            raise
    if not main_rank:
        return
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
        return
    if quiet:
        return
    metric = result.best_by
    best, start = result.best.get(metric), result.start.get(metric)
    typer.echo(f"Tuned {result.task} for {result.steps} steps in {result.seconds / 60:.1f} min: best {metric} "
               f"{_fmt(best)} at step {result.best_step} (start {_fmt(start)}); weights {result.weights}, card {result.card}")
    if result.name:
        typer.echo(f"Registered as {result.name}: elir restore PHOTO --task {result.task} --weights {result.name}")


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}"


class _Progress:
    """A progress bar (loss, steps/s, ETA) on a terminal's stderr; one line per validation everywhere."""

    def __init__(self, console: StderrConsole, task: str) -> None:
        self.console = console
        self.title = f"Tuning {task}"
        self.step = 0
        self._bar: Any = None
        self._id: Any = None

    def __enter__(self) -> "_Progress":
        if not self.console.quiet and self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), console=self.console.rich, transient=True)
            self._bar.start()
            self._id = self._bar.add_task(self.title, total=None, info="")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def log(self, message: str) -> None:
        from rich.markup import escape

        self.console.print(escape(message))

    def event(self, event: Any) -> None:
        self.step = event.step
        if event.kind == "validation":
            values = "  ".join(f"{k} {v:.4g}" for k, v in event.values.items())
            self.log(f"step {event.step}/{event.total}  validation: {values}" + ("  (best so far)" if event.best else ""))
        if self._bar is None:
            return
        info = ""
        if event.loss is not None:
            info = f"loss {event.loss:.4g}"
        if event.steps_per_s:
            info += f"  {event.steps_per_s:.2f} steps/s"
        if event.eta_s is not None:
            info += f"  ETA {_clock(event.eta_s)}"
        self._bar.update(self._id, completed=event.step, total=event.total,
                         **({"info": info} if event.kind == "step" else {}))


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
