"""``elir restore`` and ``elir batch``: parse options, call the library, report."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from . import options as opt
from . import video as vid
from .console import report_problems, stderr_console

STDIO = "-"

# "\b" keeps click from re-wrapping the example lines.
RESTORE_EPILOG = """\b
Examples:
  elir restore photo.jpg                       # writes photo_restored.jpg
  elir restore *.jpg -o restored/ --seed 1     # many files into a folder
  elir restore old.png --upscale 2 --compare   # plus a before/after image
  cat in.jpg | elir restore - > out.jpg        # stdin to stdout
  elir restore clip.mp4 -o clip_restored.mp4   # a video: sound kept, resumable
"""

BATCH_EPILOG = """\b
Examples:
  elir batch scans/ -o restored/               # mirror the tree; rerun to resume
  elir batch scans/ -o out/ --report run.json  # per-file status and timings
  elir batch scans/ -o out/ --report run.html  # a page with a before/after slider per file
  elir batch scans/ -o out/ --engine ray       # model workers on a local Ray instance
  elir batch s/ -o o/ --engine ray --ray-address auto --gpus-per-worker 0.5
  elir batch films/ -o out/ --codec h265       # videos too, recognised by content
"""


@opt.restore_options(suffix="_restored")
def restore(
    inputs: Annotated[list[str], typer.Argument(help="Image or video files or globs; - reads standard input.", show_default=False)],
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Output file, or folder for several inputs; - writes standard output.")] = None,
    options: opt.RestoreOptions = opt.RestoreOptions(),
    codec: vid.Codec = "h264",
    crf: vid.Crf = None,
    preset: vid.Preset = None,
    tracking: vid.Tracking = True,
    report: Annotated[Optional[Path], typer.Option("--report", help="Write the results (frames, faces, tracks, timings, settings) as JSON.", rich_help_panel=opt.OUTPUT)] = None,
) -> None:
    """Restore photos and videos: detect faces, restore them with ELIR, paste them back."""
    from elir_cli.errors import UsageError
    from elir_cli.pipeline.files import PhotoRecord, expand_inputs
    from elir_cli.runner.files import FilesJob

    use_stdin = inputs == [STDIO]
    if STDIO in inputs and not use_stdin:
        raise UsageError("- (standard input) cannot be mixed with file names")
    files = [] if use_stdin else expand_inputs(inputs)
    if use_stdin or output == STDIO:
        return _restore_through_pipes(files, output, options, report)
    console = stderr_console(quiet=options.quiet)
    flags = vid.VideoFlags(codec, crf, preset, tracking)
    job = FilesJob(files, output, options.settings, video=flags.options())
    show = not options.quiet and not options.as_json

    def starting(restorer: Any, loads: bool) -> None:
        if loads:  # else every output exists already: each file fails at once, without loading torch
            _running_on(console, restorer)

    def done(record: Any) -> None:
        (_report_one if isinstance(record, PhotoRecord) else vid.report_video)(console, record)

    try:
        result = job.run(log=console.print, on_done=done, on_start=starting,
                         progress_for=lambda src: vid.progress_printer(console, src.name) if show else None)
    except KeyboardInterrupt:
        if job.current in job.videos:
            console.print(f"[yellow]Interrupted[/]: run the same command again to resume {job.current.name}.",
                          force=True)
        raise
    _write_results(result.settings, result.records, options, report)
    if not result.ok:
        raise typer.Exit(1)


def _write_results(settings: dict[str, Any], records: list[Any], options: opt.RestoreOptions,
                   report: Optional[Path]) -> None:
    """``--report`` and ``--json`` (or the output names, one a line) for records written to files."""
    data = {"settings": settings, "files": [r.to_json() for r in records]}
    if report is not None:
        from elir_cli.atomicwrite import write_bytes_atomic

        write_bytes_atomic(report, json.dumps(data, indent=2).encode() + b"\n", overwrite=True)
    if options.as_json:
        typer.echo(json.dumps(data, indent=2))
    elif not options.quiet:
        for r in records:
            if r.output:
                typer.echo(r.output)


def _restore_through_pipes(files: list[Path], output: Optional[str], options: opt.RestoreOptions,
                           report: Optional[Path]) -> None:
    """``elir restore - [-o OUT]`` and ``elir restore FILE -o -``: one photo through standard input or output."""
    from elir_cli.errors import UsageError
    from elir_cli.pipeline.files import output_name_for
    from elir_cli.runner.restorer import Restorer
    from elir_cli.runner.videos import is_video

    settings = options.settings
    console = stderr_console(quiet=options.quiet)
    if any(is_video(f) for f in files):
        raise UsageError("a video cannot be written to standard output", hint="use -o FILE")
    to_stdout = output in (STDIO, None)
    if to_stdout and len(files) > 1:
        raise UsageError("only one image can be written to standard output", hint="use -o FOLDER")
    if to_stdout and sys.stdout.isatty():
        raise UsageError("refusing to write image bytes to a terminal", hint="redirect the output (> out.png) or use -o FILE")
    if to_stdout and (settings.compare or options.as_json):
        raise UsageError("--compare and --json need files, not standard output", hint="use -o FILE")
    restorer = Restorer(settings, log=console.print)
    restorer.start(True, announce=lambda restorer, loads: _running_on(console, restorer))
    if files:  # FILE -o -
        record, payload = restorer.restore_file(files[0], None)
    else:
        dst = None if to_stdout else output_name_for(Path("stdin"), out=output, suffix="", many=False)
        record, payload = restorer.restore_file(None, dst, data=sys.stdin.buffer.read(), display_name="<stdin>")
    if payload is not None:
        sys.stdout.buffer.write(payload)
        sys.stdout.buffer.flush()
    _report_one(console, record)
    if not to_stdout:
        _write_results(restorer.describe(), [record], options, report)
    if record.status == "failed":
        raise typer.Exit(1)


def _running_on(console: Any, restorer: Any) -> None:
    console.print(f"[dim]Running on {restorer.runtime.describe()}[/]")
    _tip(console, restorer)


def _tip(console: Any, restorer: Any) -> None:
    hint = restorer.faster_precision_hint()
    if hint:
        console.print(f"[dim]Tip: {hint}[/]")
    if restorer.settings.compile:
        console.print("[dim]--compile: the first image compiles the model (a minute or more on a CPU)[/]")


def _report_one(console: Any, record: Any) -> None:
    from rich.markup import escape

    if not report_problems(console, record) and record.status == "restored":
        faces = "" if record.faces is None else f", {record.faces} face{'s' if record.faces != 1 else ''}"
        guard = [score.get("guard") for score in getattr(record, "face_scores", None) or []]
        if "lowered" in guard or "failed" in guard:
            faces += (f" ({guard.count('lowered')} lowered by the guard, "
                      f"{guard.count('failed')} below the minimum even at fidelity 0)")
        console.print(f"[green]Restored[/] {escape(record.input)} -> {escape(record.output or 'stdout')}"
                      f"{faces}, {record.seconds:.1f} s")


@opt.restore_options(suffix="")
def batch(
    folder: Annotated[str, typer.Argument(help="Folder to restore (recursively); with --engine ray also a URL (s3://bucket/photos, gs://...).", show_default=False)],
    output: Annotated[str, typer.Option("--output", "-o", help="Output folder; the input tree is mirrored inside. With --engine ray also a URL.")],
    options: opt.RestoreOptions = opt.RestoreOptions(),
    report: Annotated[Optional[Path], typer.Option("--report", help="Write per-file status, faces, timings and settings: as JSON, or as a page with before/after sliders when the name ends in .html.", rich_help_panel=opt.OUTPUT)] = None,
    engine: opt.EngineOpt = opt.Engine.local,
    ray_address: opt.RayAddress = None,
    num_model_workers: opt.NumModelWorkers = None,
    cpus_per_worker: opt.CpusPerWorker = 1.0,
    gpus_per_worker: opt.GpusPerWorker = 0.0,
    codec: vid.Codec = "h264",
    crf: vid.Crf = None,
    preset: vid.Preset = None,
    tracking: vid.Tracking = True,
) -> None:
    """Restore every image and video under a folder; existing outputs are skipped, so a rerun resumes."""
    from rich.markup import escape

    from elir_cli.distributed.cluster import RayOptions
    from elir_cli.pipeline.batch import write_report
    from elir_cli.runner.folder import FolderJob

    settings = options.settings
    console = stderr_console(quiet=options.quiet)
    show = not options.as_json and not options.quiet
    flags = vid.VideoFlags(codec, crf, preset, tracking)
    job = FolderJob(folder, output, settings, video=flags.options(), engine=engine.value, ray=RayOptions(
        address=ray_address, num_model_workers=num_model_workers, cpus_per_worker=cpus_per_worker,
        gpus_per_worker=gpus_per_worker))
    total = job.total
    progress = _progress(console, enabled=show)
    with progress:
        task_id = progress.add_task("Restoring", total=total, rate="")
        lines = _RateLines(console, total=total, enabled=engine is opt.Engine.ray and show and not console.is_terminal)

        def done(record: Any) -> None:
            progress.update(task_id, advance=1, rate=lines.advance(record))
            if record.status == "failed":
                _report_one(console, record)

        def starting(restorer: Any, loads: bool) -> None:
            if loads:
                console.print(f"[dim]{total} images under {folder}; running on {restorer.runtime.describe()}[/]")
                _tip(console, restorer)
            else:  # a finished run, run again: reported without loading torch, the model or the detector
                console.print(f"[dim]{total} images under {folder}; every output exists already "
                              "(--overwrite redoes them)[/]")

        result = job.run(log=lambda message: console.print(escape(message)), on_done=done, on_start=starting,
                         progress_for=lambda src: vid.progress_printer(console, src.name) if show else None)
    summary, described = result.summary, result.settings
    lines.finish(summary)
    if report is not None:
        from elir_cli.reports.html import is_html_report, write_html_report

        (write_html_report if is_html_report(report) else write_report)(report, summary, described)
    if options.as_json:
        typer.echo(json.dumps(summary.to_json(described), indent=2))
    elif not options.quiet:
        _summary_table(summary, described)
    if result.error is not None:
        raise result.error
    if summary.interrupted:
        console.print("[yellow]Interrupted[/]: run the same command again to resume.", force=True)
        raise typer.Exit(130)
    if not summary.ok:
        raise typer.Exit(1)


def _face_totals_line(faces: dict[str, int], *, guarded: bool) -> str:
    """``faces: 3 scored, 1 lowered by the guard, 1 below the minimum even at fidelity 0`` (the guard's
    counts where ``--min-faithfulness`` was given or the records say it acted)."""
    line = f"faces: {faces['scored']} scored"
    if guarded or faces["lowered"] or faces["failed"]:
        line += (f", {faces['lowered']} lowered by the guard, "
                 f"{faces['failed']} below the minimum even at fidelity 0")
    return line


class _RateLines:
    """Progress as plain lines with files/s, every few seconds, where no bar can be drawn."""

    EVERY_S = 10.0

    def __init__(self, console: Any, *, total: int, enabled: bool) -> None:
        import time

        self._console, self._total, self._enabled = console, total, enabled
        self._clock = time.perf_counter
        self._started = self._last = self._clock()
        self._done = 0

    def advance(self, record: Any) -> str:
        """Count ``record``; the rate so far, as the bar shows it."""
        self._done += 1
        now = self._clock()
        rate = f"{self._done / max(now - self._started, 1e-9):.2f} files/s"
        if self._enabled and now - self._last >= self.EVERY_S:
            self._last = now
            self._console.print(f"Restoring: {self._done}/{self._total} files, {rate}")
        return rate

    def finish(self, summary: Any) -> None:
        worked = summary.count("restored") + summary.count("failed")
        if self._enabled and worked:
            self._console.print(f"Done: {worked} files in {summary.seconds:.1f} s, "
                                f"{worked / max(summary.seconds, 1e-9):.2f} files/s")


def _progress(console: Any, *, enabled: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=console._console,
                    disable=not enabled or not console.is_terminal)


def _summary_table(summary: Any, settings: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="elir batch")
    for column in ("status", "files"):
        table.add_column(column)
    for status in ("restored", "skipped", "failed"):
        table.add_row(status, str(summary.count(status)))
    out = Console(highlight=False)
    out.print(table)
    faces = summary.face_totals()
    if faces["scored"]:
        out.print(_face_totals_line(faces, guarded=settings.get("min_faithfulness") is not None), markup=False)
    for record in summary.records:
        if record.status == "failed":  # errors about a file mostly name it first already
            error = record.error or ""
            named = error if error.startswith(f"{record.input}:") else f"{record.input}: {error}"
            out.print(f"failed: {named}", markup=False, soft_wrap=True)
