"""``elir degrade`` and ``elir eval``: parse options, call :mod:`elir_cli.evaluation`, report."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from . import options as opt
from .console import StderrConsole, stderr_console

DEFAULT_SEED = 2025  # the paper's inference seed (elir_cli.evaluation.degrade.DEFAULT_SEED)

DEGRADE_EPILOG = """\b
Examples:
  elir degrade --task sr celeba_test/hq -o celeba_test/sr_lq
  elir degrade --task inpainting hq/ -o lq/ --seed 7 --workers 2
  elir degrade --task bfr-synthetic ffhq/ -o ffhq_lq/   # GFPGAN's training degradation
"""

EVAL_EPILOG = """\b
Examples:
  elir eval --task sr --lq sr_lq/ --gt hq/ -o results/sr
  elir eval --task bfr --lq celeba_test/lq --gt celeba_test/hq -o results/bfr
  elir eval --task denoising --lq lq/ --gt hq/ -o out/ --metrics psnr,ssim,consistency
  elir eval --task sr --lq lq/ --gt hq/ -o out/ --sweep fidelity=0,0.25,0.5,0.75,1
  elir eval --task bfr --lq lq/ --gt hq/ --restored mine/ -o out/   # measure another method's outputs
"""


class DegradeTask(str, Enum):
    sr = "sr"
    denoising = "denoising"
    inpainting = "inpainting"
    bfr_synthetic = "bfr-synthetic"


Quiet = opt.Quiet
JsonOut = opt.JsonOut


def degrade(
    hq_dir: Annotated[Path, typer.Argument(help="Folder of high-quality images (searched recursively).", show_default=False)],
    task: Annotated[DegradeTask, typer.Option("--task", "-t", help="Which degradation.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the degraded (LQ) PNGs and degradation.json.", show_default=False)],
    seed: Annotated[int, typer.Option("--seed", help="Seed; each file's generator is seeded from it and the file's name.")] = DEFAULT_SEED,
    size: Annotated[Optional[int], typer.Option("--size", min=8, help="Resize the HQ images to SIZE x SIZE first (default: the task's, 256; 512 for bfr-synthetic).")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Processes; the files are the same bytes for any number.")] = 1,
    overwrite: opt.Overwrite = False,
    as_json: JsonOut = False,
    quiet: Quiet = False,
) -> None:
    """Degrade a folder of images with the paper's synthetic degradations (deterministic per file)."""
    from elir_cli.evaluation.degrade import MANIFEST_NAME, degrade_folder

    console = stderr_console(quiet=quiet)
    with _progress(console, "Degrading") as progress:
        manifest = degrade_folder(task.value, hq_dir, output, seed=seed, size=size, workers=workers,
                                  overwrite=overwrite, progress=progress)
    if as_json:
        typer.echo(json.dumps(manifest, indent=2))
    elif not quiet:
        typer.echo(f"{len(manifest['files'])} images degraded ({task.value}, seed {seed}, {manifest['size']} px) "
                   f"into {output}; manifest {output / MANIFEST_NAME}")


def evaluate(
    task: opt.Task,
    lq: Annotated[Path, typer.Option("--lq", help="Folder of degraded inputs (e.g. from elir degrade).", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Results folder: results.json/.md, report.html, restored/.", show_default=False)],
    gt: Annotated[Optional[Path], typer.Option("--gt", help="Folder of ground-truth images, paired by file name (needed for PSNR, SSIM, LPIPS, IDS).")] = None,
    restored: Annotated[Optional[Path], typer.Option("--restored", help="Measure these restored images instead of restoring.")] = None,
    weights: opt.Weights = None,
    metrics: Annotated[Optional[str], typer.Option("--metrics", help="Comma-separated: psnr, ssim, lpips, niqe, musiq, clipiqa, fid, ids, consistency (default: the paper's for the task, plus consistency).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Inference seed (the paper's: 2025).", rich_help_panel=opt.MODEL)] = DEFAULT_SEED,
    steps: opt.Steps = None,
    fidelity: opt.Fidelity = 1.0,
    device: opt.DeviceOpt = opt.Device.auto,
    sweep: Annotated[Optional[str], typer.Option("--sweep", help="fidelity=0,0.25,0.5,0.75,1 or steps=1,2,3: one run per value, a perception-distortion plot and table.")] = None,
    identity_weights: Annotated[Optional[str], typer.Option("--identity-weights", help="ArcFace ResNet-18 weights (resnet18_110.pth, as VQFR/PMRF use) for the IDS angle per image.")] = None,
    show: Annotated[int, typer.Option("--show", min=0, help="Worst and best images shown in report.html.")] = 3,
    overwrite: opt.Overwrite = False,
    as_json: JsonOut = False,
    quiet: Quiet = False,
) -> None:
    """Restore a folder of degraded images, measure the paper's metrics, compare with the paper."""
    from elir_cli.evaluation.evaluate import EvalSettings, Evaluator, parse_sweep

    console = stderr_console(quiet=quiet)
    swept = parse_sweep(sweep) if sweep is not None else None
    settings = EvalSettings(task=task.value, lq_dir=lq, out_dir=output, gt_dir=gt, restored_dir=restored,
                            weights=weights, metrics=metrics, seed=seed, steps=steps, fidelity=fidelity,
                            device=device.value, identity_weights=identity_weights, overwrite=overwrite, show=show)
    with _progress(console, "Evaluating") as progress:
        evaluator = Evaluator(settings, log=console.print, progress=progress)
        if swept is not None:
            result = evaluator.sweep(*swept)
        else:
            result = evaluator.run()
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    if swept is not None:
        from elir_cli.evaluation.sweep import SWEEP_PNG, table

        typer.echo(table(swept[0], result["points"]))
        console.print(f"Plot: {output / SWEEP_PNG}")
        return
    from elir_cli.evaluation.report import REPORT_HTML, RESULTS_JSON, overall_table

    typer.echo(overall_table(result))
    timing = result["timing"]
    console.print(f"{result['settings']['images']} images in {timing['total_s']:.1f} s "
                  f"(restoring {timing['restore_s']:.1f} s); results in {output / RESULTS_JSON}, "
                  f"report {output / REPORT_HTML}")


class _progress:
    """A progress bar on a terminal's stderr, else nothing; yields the library's progress callback."""

    def __init__(self, console: StderrConsole, title: str) -> None:
        self.console = console
        self.title = title
        self._bar: Any = None

    def __enter__(self) -> Callable[[int, int, str], None] | None:
        if self.console.quiet or not self.console.is_terminal:
            return None
        from rich.progress import Progress

        self._bar = Progress(console=self.console.rich, transient=True)  # the rich Console: Live enters it
        self._bar.start()
        task_id = self._bar.add_task(self.title, total=None)

        def update(done: int, total: int, name: str) -> None:
            self._bar.update(task_id, completed=done, total=total, description=f"{self.title} {name}")

        return update

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
