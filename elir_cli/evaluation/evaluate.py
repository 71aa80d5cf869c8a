"""``elir eval``: restore a folder of degraded images, measure, compare with the paper.

The protocol follows the paper and the authors' code: face tasks restore each
LQ image as one aligned face (no detection) at its own size, bsr restores the
whole image x4; the seed is 2025 (a fresh generator per image, so an image's
result does not depend on the others); metrics are computed on the float
output clipped to [0, 1], and FID on the saved PNGs. ``restored_dir`` skips
the restoration and measures files restored elsewhere.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from elir_cli._version import __version__
from elir_cli.atomicwrite import write_bytes_atomic
from elir_cli.errors import UsageError
from elir_cli.registry.tasks import get_task

from . import consistency as consistency_mod
from .degrade import DEFAULT_SEED, read_manifest
from .images import Pair, encode_png, gt_like, index_images, read_float, read_uint8
from .metrics import METRICS, MetricFactory, MetricSet, metric_spec, parse_metrics
from .report import RESULTS_JSON, write_results

if TYPE_CHECKING:
    from elir_cli.pipeline.photo import Restorer

RESTORED_DIR = "restored"
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class EvalSettings:
    """Everything that decides an evaluation, as given on the command line."""

    task: str
    lq_dir: Path
    out_dir: Path
    gt_dir: Path | None = None
    restored_dir: Path | None = None
    weights: str | None = None
    metrics: str | None = None  # "psnr,ssim"; None: the paper's metrics for the task (+ consistency)
    seed: int = DEFAULT_SEED
    steps: int | None = None
    fidelity: float = 1.0
    device: str = "auto"
    identity_weights: str | None = None
    overwrite: bool = False
    show: int = 3  # worst and best images in the report


class Evaluator:
    """An evaluation set up once (files paired, metrics and model created), run for one or more settings."""

    def __init__(self, settings: EvalSettings, *, restorer: "Restorer | None" = None,
                 metric_factory: MetricFactory | None = None, log: Callable[[str], None] | None = None,
                 progress: Progress | None = None) -> None:
        from elir_cli.model.runtime import resolve_device

        self.settings = s = settings
        self.spec = get_task(s.task)
        self.log = log or (lambda message: None)
        self.progress = progress
        if s.steps is not None and s.steps < 1:
            raise UsageError(f"--steps must be >= 1, got {s.steps}")
        if not 0.0 <= s.fidelity <= 1.0:
            raise UsageError(f"--fidelity must be in [0, 1], got {s.fidelity}")
        self._check_folders()
        self.names = parse_metrics(s.metrics, s.task, identity=s.identity_weights is not None)
        if "ids" in self.names and s.identity_weights is None:
            raise UsageError("metric ids needs ArcFace weights", hint="give --identity-weights FILE, or drop ids")
        if s.gt_dir is None:
            dropped = [n for n in self.names if metric_spec(n).needs_gt]
            if dropped:
                self.log(f"no --gt: skipping {', '.join(dropped)} (they need the ground truth)")
            self.names = [n for n in self.names if not metric_spec(n).needs_gt]
        self.pairs = self._pair()
        self.device = resolve_device(s.device)
        self.metrics = MetricSet(self.names, s.task, self.device, factory=metric_factory)
        self.identity = None
        if "ids" in self.names:
            from elir_cli.faces.identity import IdentityMetric

            self.identity = IdentityMetric(Path(s.identity_weights), self.device)  # type: ignore[arg-type]
        self._restorer = restorer
        self._model: Any = None

    # ------------------------------------------------------------------ setup

    def _check_folders(self) -> None:
        s = self.settings
        for name, folder in (("--lq", s.lq_dir), ("--gt", s.gt_dir), ("--restored", s.restored_dir)):
            if folder is not None and not folder.is_dir():
                raise UsageError(f"{name} {folder} is not a folder")
        out = s.out_dir.resolve()
        for name, folder in (("--lq", s.lq_dir), ("--gt", s.gt_dir), ("--restored", s.restored_dir)):
            if folder is not None and (out == folder.resolve() or out.is_relative_to(folder.resolve())):
                raise UsageError(f"the results folder is inside the {name} folder", hint="choose another -o folder")
        if s.out_dir.exists() and not s.out_dir.is_dir():
            raise UsageError(f"{s.out_dir} is a file, not a folder", hint="give a folder with -o")
        if (s.out_dir / RESULTS_JSON).exists() and not s.overwrite:
            raise UsageError(f"{s.out_dir / RESULTS_JSON} already exists",
                             hint="pass --overwrite to replace the results, or choose another -o folder")

    def _pair(self) -> list[Pair]:
        s = self.settings
        manifest = read_manifest(s.lq_dir)
        masks: dict[str, Path] = {}
        exclude: list[str] = []
        if manifest is not None:
            made_for = manifest.get("task")
            if made_for not in (s.task, f"{s.task}-synthetic"):
                self.log(f"note: {s.lq_dir} was degraded for {made_for}, evaluated as {s.task}")
            for entry in manifest.get("files", []):
                if "mask" in entry:
                    masks[Path(entry["output"]).with_suffix("").as_posix()] = s.lq_dir / entry["mask"]
                    exclude.append(entry["mask"])
        lq = index_images(s.lq_dir, exclude=exclude)
        if not lq:
            raise UsageError(f"no images found in {s.lq_dir}")
        gt = index_images(s.gt_dir) if s.gt_dir is not None else {}
        restored = index_images(s.restored_dir) if s.restored_dir is not None else {}
        for name, found in (("--gt", gt), ("--restored", restored)):
            if found or (name == "--gt" and s.gt_dir is not None) or (name == "--restored" and s.restored_dir is not None):
                absent = [k for k in lq if k not in found]
                if absent:
                    raise UsageError(f"{len(absent)} of {len(lq)} LQ images have no file of the same name in {name} "
                                     f"(first: {absent[0]})", hint="the folders are paired by file name, without the extension")
        return [Pair(k, p, gt.get(k), restored.get(k), masks.get(k)) for k, p in lq.items()]

    def _crop_restorer(self, *, fidelity: float, steps: int | None) -> "Restorer":
        """A fresh restorer per image: the task's ELIR (or ``--weights``) with a generator seeded anew."""
        from elir_cli.pipeline.photo import model_restorer

        if self._restorer is not None:
            return self._restorer
        if self._model is None:
            from elir_cli.pipeline.inference import load_model

            s = self.settings
            # the one loading path, in float32: the paper's numbers come from the authors' arithmetic
            self._model = load_model(s.weights or s.task, task=s.task, device=self.device, precision="fp32")
        return model_restorer(self._model, seed=self.settings.seed, steps=steps, fidelity=fidelity)

    # ------------------------------------------------------------------ running

    def run(self, out_dir: Path | None = None, *, fidelity: float | None = None, steps: int | None = None,
            report: bool = True) -> dict[str, Any]:
        """Restore (unless ``restored_dir``), measure every image, write the results; return them."""
        from elir_cli.pipeline.restorer import restore_array

        s = self.settings
        out_dir = out_dir or s.out_dir
        fidelity = s.fidelity if fidelity is None else fidelity
        steps = s.steps if steps is None else steps
        started = time.perf_counter()
        restore_seconds = 0.0
        face = self.spec.kind == "face"
        records = []
        restored_folder = s.restored_dir or out_dir / RESTORED_DIR
        pairs = [replace(p, values={}) for p in self.pairs]  # this run's outputs; the set-up stays as given
        for i, pair in enumerate(pairs):
            lq = read_float(pair.lq)
            if pair.restored is not None:
                restored = read_float(pair.restored)
            else:
                t0 = time.perf_counter()
                result = restore_array(lq, task=s.task, restorer=self._crop_restorer(fidelity=fidelity, steps=steps),
                                       aligned=face, upscale=1 if face else None, device=self.device)
                restored = np.clip(result.array, 0.0, 1.0)
                restore_seconds += time.perf_counter() - t0
                pair.restored = write_bytes_atomic(restored_folder / f"{pair.key}.png", encode_png(_to_uint8(restored)),
                                                   overwrite=s.overwrite, source_path=pair.lq)
            records.append(self._measure(pair, lq, restored))
            if self.progress:
                self.progress(i + 1, len(pairs), pair.key)
        folder_values = self.metrics.per_folder(restored_folder)
        seconds = time.perf_counter() - started
        results = self._results(records, folder_values, fidelity=fidelity, steps=steps,
                                timing={"total_s": seconds, "restore_s": restore_seconds,
                                        "other_s": seconds - restore_seconds})
        write_results(results, pairs, out_dir, overwrite=s.overwrite, report=report, show=s.show)
        return results

    def _measure(self, pair: Pair, lq: np.ndarray, restored: np.ndarray) -> dict[str, Any]:
        s = self.settings
        gt = gt_like(read_uint8(pair.gt), restored.shape) if pair.gt is not None else None
        values: dict[str, Any] = self.metrics.per_image(restored, gt)
        if "consistency" in self.names:
            mask = read_uint8(pair.mask)[:, :, 0] >= 128 if pair.mask is not None else None
            values["consistency"] = consistency_mod.consistency(s.task, restored, lq, mask)
        if self.identity is not None and gt is not None:
            values["ids"] = self.identity.angle(restored, gt)
        pair.values = {k: v for k, v in values.items() if v is not None}
        return {"name": pair.key, "lq": str(pair.lq), "gt": str(pair.gt) if pair.gt else None,
                "restored": str(pair.restored), **pair.values}

    def _results(self, records: list[dict[str, Any]], folder_values: dict[str, float], *, fidelity: float,
                 steps: int | None, timing: dict[str, float]) -> dict[str, Any]:
        s = self.settings
        paper = self.spec.paper or {}
        overall = {}
        for name in self.names:
            spec = METRICS[name]
            if spec.kind == "folder":
                ours = folder_values.get(name)
            else:
                values = [r[name] for r in records if r.get(name) is not None]
                ours = float(np.mean(values)) if values else None
            theirs = paper.get(spec.label)
            overall[name] = {"label": spec.label, "ours": ours, "paper": theirs,
                             "difference": None if ours is None or theirs is None else ours - theirs,
                             "lower_is_better": spec.lower_better}
        return {
            "tool": f"elir-cli {__version__}",
            "task": s.task,
            "settings": {"lq": str(s.lq_dir), "gt": str(s.gt_dir) if s.gt_dir else None,
                         "restored": str(s.restored_dir) if s.restored_dir else None,
                         "weights": s.weights or (None if s.restored_dir else f"registry:{s.task}"),
                         "seed": s.seed, "steps": steps if steps is not None else self.spec.model.k_steps,
                         "fidelity": fidelity, "device": str(self.device), "metrics": self.names,
                         "images": len(records)},
            "paper": {"dataset": paper.get("dataset"), "note": "the paper's numbers are for its full test set"},
            "overall": overall,
            "timing": {k: round(v, 4) for k, v in timing.items()},
            "images": records,
        }

    def sweep(self, parameter: str, values: list[float]) -> dict[str, Any]:
        """Run once per value of ``fidelity`` or ``steps``; write the curve (PNG) and its table."""
        from .sweep import write_sweep

        if self.settings.restored_dir is not None:
            raise UsageError("--sweep restores at each setting; it cannot use --restored")
        points = []
        for value in values:
            label = f"{parameter}={_fmt(value)}"
            self.log(f"sweep: {label}")
            kwargs = {"fidelity": float(value)} if parameter == "fidelity" else {"steps": int(value)}
            results = self.run(self.settings.out_dir / "sweep" / label, report=False, **kwargs)
            points.append({"label": label, parameter: value, "overall": results["overall"],
                           "timing": results["timing"]})
        return write_sweep(parameter, points, self.settings.task, self.settings.out_dir,
                           overwrite=self.settings.overwrite)


def parse_sweep(text: str) -> tuple[str, list[float]]:
    """``"fidelity=0,0.5,1"`` or ``"steps=1,2,3"`` -> (parameter, values), checked."""
    name, sep, rest = text.partition("=")
    name = name.strip()
    if not sep or name not in ("fidelity", "steps"):
        raise UsageError(f"--sweep {text!r}: expected fidelity=V,V,... or steps=N,N,...",
                         hint="e.g. --sweep fidelity=0,0.25,0.5,0.75,1")
    try:
        values = [float(v) for v in rest.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--sweep {text!r}: the values must be numbers") from None
    if len(values) < 2:
        raise UsageError(f"--sweep {text!r}: give at least two values")
    if name == "fidelity" and not all(0.0 <= v <= 1.0 for v in values):
        raise UsageError(f"--sweep {text!r}: fidelity values must be in [0, 1]")
    if name == "steps" and not all(v >= 1 and v == int(v) for v in values):
        raise UsageError(f"--sweep {text!r}: steps must be whole numbers >= 1")
    return name, values


def _fmt(value: float) -> str:
    return f"{value:g}"


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    from elir_cli.images.read import to_uint8

    return to_uint8(rgb)
