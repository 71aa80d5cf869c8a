"""``elir models``: list, download, inspect, import, verify, remove and publish weights.

Thin commands over :mod:`elir_cli.registry.hub` (and :mod:`elir_cli.registry.publish`
for the maintainers' ``publish``): results go to stdout, progress bars and
logs to stderr. ``list`` and ``--help`` import neither torch nor
huggingface_hub, so they answer at once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from elir_cli.errors import ChecksumMismatchError, ElirError, UsageError
from .typer_app import ElirTyper

app = ElirTyper(
    name="models",
    help="List, download, import and check the ELIR weights (cached under $ELIR_CACHE / $HF_HOME).",
    no_args_is_help=True,
    rich_markup_mode=None,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]
TaskArgument = Annotated[str, typer.Argument(help="Task name, e.g. bfr, or a local model's name (see `elir models list`).")]
MB = 1_000_000
SHORT_COMMIT = 12


def _stdout() -> Any:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def _stderr_logging() -> None:
    """Show the library's progress messages (hub miss, fallback) on stderr, one per line."""
    logger = logging.getLogger("elir_cli")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _stderr() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def _status_dict(name: str) -> dict[str, Any]:
    from elir_cli.registry.inventory import task_status_json

    return task_status_json(name)


def _calibration_line(c: dict[str, Any]) -> str:
    if c["precision"] == "int8":
        return _int8_line(c)
    verdict = f"uses {c['precision']}" if c["passed"] else "falls back to fp32"
    return (f"{c['precision']} on {c['device_kind']}: {c['psnr_db']:.1f} dB vs fp32 (threshold "
            f"{c['threshold_db']:.0f}) -> auto {verdict}; {c['images']} images, {c['seconds']:.1f} s, {c['recorded_at']}")


def _int8_installed() -> bool:
    from elir_cli.model.int8 import available

    return available()


def _int8_line(c: dict[str, Any]) -> str:
    """An int8 record: the dB, the speed against fp32 (and bf16), and whether auto uses it and why."""
    from elir_cli.pipeline.calibration import int8_verdict
    from elir_cli.registry.store import CalibrationRecord

    record = CalibrationRecord.from_dict(c)
    uses, why = int8_verdict(record, "bf16" if record.bf16_seconds_per_image else "fp32")
    kept = f", {record.reverted} tensors kept in fp32" if record.reverted else ""
    return (f"int8 on {c['device_kind']}: {why} -> auto {'uses int8' if uses else 'does not use it'}; "
            f"{c['images']} images, quantized in {c['seconds']:.1f} s{kept}, {c['recorded_at']}")


@app.command("list")
def list_models(as_json: JsonOption = False) -> None:
    """List the tasks, what each restores, its size, and whether its weights are cached.

    Examples:

      elir models list

      elir models list --json
    """
    from elir_cli.registry.tasks import task_names

    rows = [_status_dict(name) for name in task_names()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("task", "restores", "size", "steps", "params", "download", "cached", "source"):
        table.add_column(column, no_wrap=column != "restores", min_width=20 if column == "restores" else None)
    for r in rows:
        size = f"{r['input_size']}" + (f" x{r['scale']}" if r["scale"] != 1 else "")
        source = r["source"] or "(hub)"
        table.add_row(r["task"], r["title"], size, str(r["steps"]), f"{r['parameters'] / MB:.1f}M",
                      f"{r['download_bytes'] / MB:.0f}MB", "yes" if r["cached"] else "no", source)
    _stdout().print(table)
    _print_local_models()


def _print_local_models() -> None:
    """The local models (``elir tune``'s, in the store) under the tasks, when there are any."""
    from rich import box
    from rich.table import Table

    from elir_cli.registry.local import local_models

    found = local_models()
    if not found:
        return
    table = Table(title="local models (elir tune; use with --weights NAME)", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("name", "task", "size", "best", "created", "source"):
        table.add_column(column, no_wrap=True)
    for m in found:
        best = m.details.get("best", {}).get(m.details.get("best_by", ""))
        table.add_row(m.name, m.task, f"{m.size / MB:.0f}MB",
                      f"{m.details.get('best_by')} {best:.4g}" if isinstance(best, float) else "-", m.created,
                      "local" if Path(m.path).is_file() else "local (file missing)")
    _stdout().print(table)


@app.command()
def download(
    tasks: Annotated[Optional[list[str]], typer.Argument(help="Tasks to fetch.", show_default=False)] = None,
    all_tasks: Annotated[bool, typer.Option("--all", help="Fetch every task.")] = False,
    detector: Annotated[Optional[list[str]], typer.Option(
        "--detector", help="Also fetch this face detector (e.g. retinaface_resnet50).")] = None,
    repo: Annotated[Optional[str], typer.Option(
        "--repo", help="Hub repo to fetch from (default: $ELIR_HUB_REPO or the manifest).")] = None,
    revision: Annotated[Optional[str], typer.Option(
        "--revision", help="Branch, tag or commit of the hub repo (default: the manifest's pin).")] = None,
) -> None:
    """Download weights into the cache (hub first, the authors' release as fallback).

    Examples:

      elir models download bfr

      elir models download --all

      elir models download --detector retinaface_resnet50
    """
    from elir_cli.registry.hub import ensure_detector_weights, ensure_task_weights
    from elir_cli.registry.tasks import get_task, task_names

    names = task_names() if all_tasks else list(tasks or [])
    if not names and not detector:
        raise UsageError("nothing to download", hint="name tasks (e.g. `elir models download bfr`) or use --all")
    for name in names:
        get_task(name)  # fail on a typo before downloading anything
    _stderr_logging()
    for name in names:
        path = ensure_task_weights(name, repo_id=repo, revision=revision, progress=True)
        typer.echo(f"{name}\t{path}")
    for name in detector or []:
        path = ensure_detector_weights(name, progress=True)
        typer.echo(f"{name}\t{path}")


@app.command()
def info(task: TaskArgument, as_json: JsonOption = False) -> None:
    """Show everything known about one task: sources, pinned revision, cache path, sha256.

    Example:

      elir models info bfr
    """
    from elir_cli.registry.local import read_local_model
    from elir_cli.registry.tasks import task_names

    local = read_local_model(task) if task not in task_names() else None
    if local is not None:  # a local model (elir tune)
        typer.echo(json.dumps(local.to_json(), indent=2) if as_json else "\n".join(
            f"{k.ljust(8)}  {json.dumps(v) if isinstance(v, (dict, list)) else v}" for k, v in local.to_json().items()))
        return
    r = _status_dict(task)
    if as_json:
        typer.echo(json.dumps(r, indent=2))
        return
    lines = [
        ("task", f"{r['task']} — {r['title']}"),
        ("restores", r["restores"]),
        ("input", f"{r['input_size']} px, scale x{r['scale']}"),
        ("steps (K)", str(r["steps"])),
        ("sigma_s", str(r["sigma_s"])),
        ("parameters", f"{r['parameters']:,}"),
        ("download", f"{r['download_bytes'] / MB:.0f} MB"),
        ("licence", r["licence"]),
        ("hub", f"{r['hub']['repo_id']}@{r['hub']['revision']} / {r['hub']['filename']}"),
        ("hub sha256", r["hub"]["sha256"] or "not registered (recorded on download)"),
        ("release", r["release"]["url"]),
        ("release sha256", r["release"]["sha256"] or "not registered (recorded on download)"),
        ("cached", r["path"] or "no"),
        ("source", f"{r['source']} ({r['origin']})" if r["source"] and r["origin"] else (r["source"] or "-")),
        ("sha256", r["sha256"] or "-"),
    ]
    if r["paper"]:
        lines.append(("paper", ", ".join(f"{k} {v}" for k, v in r["paper"].items())))
    for c in r["calibration"] or [None]:
        lines.append(("calibration", _calibration_line(c) if c else
                      "none yet (runs the first time --precision auto picks bf16/fp16 on a device kind)"))
    if r["path"] and not any(c["precision"] == "int8" for c in r["calibration"] or []) and _int8_installed():
        lines.append(("calibration", "int8 not quantized yet: `elir models verify --precision` (or one run with "
                      "--precision int8) quantizes and times it; auto then uses it where it passes and pays"))
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        typer.echo(f"{key.ljust(width)}  {value}")


@app.command("import")
def import_weights(
    file: Annotated[Path, typer.Argument(help="An authors' .pth/.ckpt or our .safetensors.")],
    task: Annotated[str, typer.Option("--task", help="The task these weights are for.")],
) -> None:
    """Bring a local weights file into the cache, checked against the task's shapes.

    The file is read with torch.load(weights_only=True) or safetensors (a pickle
    that holds code is refused and never runs) and stored as .safetensors; the
    input file is left untouched.

    Example:

      elir models import ~/Downloads/elir_bfr.pth --task bfr
    """
    from elir_cli.registry.hub import import_task_weights

    path = import_task_weights(file, task)
    typer.echo(f"{task}\t{path}")


@app.command()
def verify(
    as_json: JsonOption = False,
    precision: Annotated[bool, typer.Option(
        "--precision", help="Also re-run the reduced-precision calibration of every cached task on --device "
        "(bf16/fp16, and int8 on the CPU when OpenVINO and NNCF are installed: about a minute per task).")] = False,
    device: Annotated[str, typer.Option("--device", help="Device for --precision (auto, cpu, cuda, mps).")] = "auto",
) -> None:
    """Re-hash every cached weights file against the manifest or the recorded sha256.

    Exits with status 1 if any file changed. With --precision, also restores
    the calibration set in fp32 and in the device's reduced precision (what
    --precision auto would pick) and records whether it stays within 45 dB;
    on the CPU it also quantizes each task to int8 and times it against fp32
    (and bf16), which auto then uses where it passes and pays.

    Examples:

      elir models verify

      elir models verify --precision
    """
    from elir_cli.registry.inventory import verify_cache

    results = verify_cache()
    calibrations = _recalibrate(device, [r for r in results if r.status != "mismatch"]) if precision else []
    if as_json:
        payload: Any = [{"name": r.name, "path": str(r.path), "status": r.status,
                         "sha256": r.sha256, "expected": r.expected} for r in results]
        if precision:
            payload = {"files": payload, "calibration": calibrations}
        typer.echo(json.dumps(payload, indent=2))
    else:
        for r in results:
            typer.echo(f"{r.status}\t{r.name}\t{r.sha256}\t{r.path}")
        for c in calibrations:
            typer.echo(f"calibration\t{c['task']}\t{c['precision']}\t{c['device_kind']}\t"
                       f"{c['psnr_db']:.1f} dB\t{'pass' if c['passed'] else 'fallback to fp32'}"
                       + (f"\t{c['fp32_seconds_per_image'] / c['seconds_per_image']:.2f}x fp32"
                          if c.get("seconds_per_image") and c.get("fp32_seconds_per_image") else ""))
        if not results:
            _stderr().print("Nothing cached yet.")
    bad = [r for r in results if r.status == "mismatch"]
    if bad:
        names = " ".join(sorted({r.name for r in bad}))
        raise ChecksumMismatchError(f"{len(bad)} cached file(s) changed since they were recorded: {names}",
                                    hint="run `elir models remove NAME`, then download again")


def _recalibrate(device: str, results: list[Any]) -> list[dict[str, Any]]:
    """Calibrate each cached task file again (never the detector); the records, as dicts."""
    from dataclasses import asdict

    from elir_cli.model.runtime import resolve_runtime
    from elir_cli.pipeline.calibration import choose_precision
    from elir_cli.registry.loading import load_float32_model
    from elir_cli.registry.tasks import task_names

    runtime = resolve_runtime(device, "auto")
    err = _stderr()
    # auto's reduced precision on the device, and int8 (OpenVINO) where auto may pick it (the CPU).
    runtimes = [dataclasses.replace(runtime, int8_candidate=False)] if runtime.compute_dtype is not None else []
    if runtime.int8_candidate:
        runtimes.append(resolve_runtime(device, "int8"))
    if not runtimes:
        err.print(f"Nothing to calibrate: {runtime.device.type} runs fp32 only here"
                  + (' (pip install "elir-cli[openvino]" adds int8).' if runtime.device.type == "cpu" else "."))
        return []
    out = []
    for r in results:
        if r.name not in task_names():
            continue
        for each in runtimes:
            try:
                choice = choose_precision(load_float32_model(r.path, task=r.name), each, weights=Path(r.path),
                                          sha256=r.sha256, task=r.name, force=True, log=err.print)
            except ElirError as exc:  # one task's failure: said, and the others still calibrate
                err.print(f"{r.name}: {each.precision} calibration failed: {exc.message}")
                continue
            if choice.record is None:
                err.print(f"{r.name}: {choice.note}")
                continue
            out.append(asdict(choice.record))
    return out


@app.command()
def remove(task: TaskArgument) -> None:
    """Delete the cached weights of a task (our store and the hub cache).

    Example:

      elir models remove bfr
    """
    from elir_cli.registry.inventory import remove_task_weights
    from elir_cli.registry.local import read_local_model, remove_local_model
    from elir_cli.registry.tasks import task_names

    local = task not in task_names() and read_local_model(task) is not None
    removed = remove_local_model(task) if local else remove_task_weights(task)
    for path in removed:
        typer.echo(f"removed\t{path}")
    if not removed:
        _stderr().print(f"Nothing cached for {task}.")


@app.command()
def publish(
    repo: Annotated[str, typer.Option(
        "--repo", help="Hub repo to publish to, ORG/NAME (created if missing).", show_default=False)],
    source_dir: Annotated[Optional[Path], typer.Option(
        "--from", help="Folder holding the authors' five release .pth files under their release names "
                       "(default: download them from the release URLs).", show_default=False)] = None,
    branch: Annotated[str, typer.Option(
        "--branch", help="Branch of the repo to commit to (created from main if missing).")] = "main",
    write_manifest: Annotated[bool, typer.Option(
        "--write-manifest", help="Also write the repo, revision and sha256 values into the manifest "
                                 "($ELIR_MANIFEST or the bundled one).")] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Check and convert every file and print the sha256 values; upload nothing.")] = False,
    token: Annotated[Optional[str], typer.Option(
        "--token", help="Hub token with write access (default: HF_TOKEN, else the `hf auth login` token; "
                        "prefer those, since other users can see a command line).",
        show_default=False)] = None,
) -> None:
    """For the maintainers: convert the authors' weights and publish them to a hub repo.

    Each release .pth is read safely, checked against its task's tensor shapes
    and converted to .safetensors; a model card (licence, paper, task table,
    sha256 of every file) is added and everything is uploaded in one commit.
    The manifest entries (revision = that commit, sha256 per file) are printed
    as JSON on stdout, ready to paste, or written with --write-manifest.

    Examples:

      elir models publish --repo elir-cli/elir --from ~/Downloads/elir-release

      elir models publish --repo elir-cli/elir --write-manifest

      elir models publish --repo my-org/elir --from weights/ --dry-run
    """
    from elir_cli.registry.publish import manifest_target, publish_weights, write_manifest_entries

    if dry_run and write_manifest:
        raise UsageError("--dry-run uploads nothing, so there is no revision to write",
                         hint="leave out --write-manifest, or --dry-run")
    target = manifest_target() if write_manifest else None
    console = _stderr()
    publication = publish_weights(repo, source_dir=source_dir, branch=branch, token=token, dry_run=dry_run,
                                  progress=True, on_step=lambda message: console.print(message, markup=False))
    typer.echo(json.dumps(publication.manifest_entries(), indent=2))
    if publication.revision is None:
        console.print(f"Dry run: {len(publication.files)} files checked and converted; nothing uploaded.")
        return
    console.print(f"Published {len(publication.files)} files to {repo}@{publication.revision} "
                  f"({publication.commit_url}).")
    if target is not None:
        console.print(f"Wrote the entries into {write_manifest_entries(publication, target)}.")
