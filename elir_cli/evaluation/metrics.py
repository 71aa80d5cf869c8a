"""The paper's metrics, through pyiqa's ``create_metric`` (as the authors computed them).

- PSNR on RGB and SSIM on the Y channel, exactly as pyiqa's ``psnr`` and
  ``ssim`` define them (Y of YIQ, rounded to 0-255; 11x11 Gaussian window,
  sigma 1.5; float64), computed here without pyiqa: the Gaussian window is
  separable, and two 1-D passes are about 25 times faster than pyiqa's 2-D
  float64 convolution on a CPU (numpy and scipy, no torch thread pool). The tests hold both to pyiqa's own values
  (1e-6) and to scikit-image's (1e-4). No weights, no extra needed.
- LPIPS (``lpips-vgg``), NIQE, MUSIQ, CLIPIQA and FID (clean mode, FFHQ
  statistics) need pretrained files, which pyiqa downloads into its own cache
  (``torch.hub.get_dir()/pyiqa``, torchvision's VGG into
  ``torch.hub.get_dir()/checkpoints``; ``$TORCH_HOME`` moves both). When a
  file is missing and cannot be downloaded (no network, or
  ``HF_HUB_OFFLINE=1``), the error is one line naming the files and the
  folders to put them in.
- ``consistency`` (no ground truth) and ``ids`` (ArcFace angle) are ours:
  see :mod:`.consistency` and :mod:`.identity`.

Images are float RGB in [0, 1], clipped, never rounded to 8 bits (FID alone
reads saved PNGs, as in the paper).
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

import numpy as np

from elir_cli.errors import ElirError, ModelNotAvailableError, UsageError
from elir_cli.registry.tasks import get_task

if TYPE_CHECKING:
    import torch

EVAL_EXTRA_HINT = 'pip install "elir-cli[eval]"'
HF_BASE = "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main"
OFFLINE_ENV = "HF_HUB_OFFLINE"
TRUE_VALUES = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class WeightFile:
    """A pretrained file a metric needs: its name, pyiqa's cache subfolder, where pyiqa fetches it."""

    filename: str
    folder: Literal["pyiqa", "checkpoints", "clip"]
    url: str


@dataclass(frozen=True)
class MetricSpec:
    """One metric: how it is called and which way is better."""

    name: str
    label: str
    kind: Literal["full-reference", "no-reference", "folder", "consistency", "identity"]
    lower_better: bool
    pyiqa_name: str | None = None
    weights: tuple[WeightFile, ...] = ()
    modules: tuple[str, ...] = ()  # Python modules pyiqa needs for it beyond its core

    @property
    def needs_gt(self) -> bool:
        return self.kind in ("full-reference", "identity")


METRICS: dict[str, MetricSpec] = {m.name: m for m in (
    MetricSpec("psnr", "PSNR", "full-reference", False, "psnr"),
    MetricSpec("ssim", "SSIM", "full-reference", False, "ssim"),
    MetricSpec("lpips", "LPIPS", "full-reference", True, "lpips-vgg", (
        WeightFile("vgg16-397923af.pth", "checkpoints", "https://download.pytorch.org/models/vgg16-397923af.pth"),
        WeightFile("LPIPS_v0.1_vgg-a78928a0.pth", "pyiqa", f"{HF_BASE}/LPIPS_v0.1_vgg-a78928a0.pth"))),
    MetricSpec("niqe", "NIQE", "no-reference", True, "niqe", (
        WeightFile("niqe_modelparameters.mat", "pyiqa", f"{HF_BASE}/niqe_modelparameters.mat"),)),
    MetricSpec("musiq", "MUSIQ", "no-reference", False, "musiq", (
        WeightFile("musiq_koniq_ckpt-e95806b9.pth", "pyiqa", f"{HF_BASE}/musiq_koniq_ckpt-e95806b9.pth"),)),
    MetricSpec("clipiqa", "CLIPIQA", "no-reference", False, "clipiqa", (
        WeightFile("RN50.pt", "clip", "https://openaipublic.azureedge.net/clip/models/"
                   "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt"),),
               modules=("clip",)),
    MetricSpec("fid", "FID", "folder", True, "fid", (
        WeightFile("pt_inception-2015-12-05-6726825d.pth", "pyiqa", f"{HF_BASE}/pt_inception-2015-12-05-6726825d.pth"),)),
    MetricSpec("ids", "IDS", "identity", True),
    MetricSpec("consistency", "Consistency", "consistency", False),
)}

# The paper's FID reference: FFHQ statistics at 512 for bfr, 256 for the other face tasks.
FID_REFERENCE = {"bfr": 512, "sr": 256, "denoising": 256, "inpainting": 256}
CONSISTENCY_TASKS = ("sr", "denoising", "inpainting")


def metric_spec(name: str) -> MetricSpec:
    try:
        return METRICS[name]
    except KeyError:
        raise UsageError(f"unknown metric {name!r}", hint=f"choose from: {', '.join(METRICS)}") from None


def paper_metrics(task: str) -> list[str]:
    """The metrics the paper reports for ``task`` (from the manifest), in our order."""
    paper = get_task(task).paper or {}
    return [m.name for m in METRICS.values() if m.label in paper]


def default_metrics(task: str, *, identity: bool = False) -> list[str]:
    """The paper's metrics for ``task`` plus consistency where the task's degradation is known.

    IDS only with ``identity`` (its ArcFace weights are given, never downloaded).
    """
    names = [n for n in paper_metrics(task) if identity or n != "ids"]
    if identity and "ids" not in names and get_task(task).kind == "face":
        names.append("ids")
    if task in CONSISTENCY_TASKS:
        names.append("consistency")
    return names


def parse_metrics(text: str | None, task: str, *, identity: bool = False) -> list[str]:
    """``"psnr,ssim"`` -> a checked list; None -> :func:`default_metrics`."""
    if text is None:
        return default_metrics(task, identity=identity)
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if not names:
        raise UsageError("--metrics is empty", hint=f"choose from: {', '.join(METRICS)}")
    for name in names:
        metric_spec(name)
    if "fid" in names and task not in FID_REFERENCE:
        raise UsageError(f"FID needs reference statistics; the paper has none for {task}",
                         hint="drop fid from --metrics")
    if "consistency" in names and task not in CONSISTENCY_TASKS:
        raise UsageError(f"consistency needs a known degradation; {task} is blind",
                         hint=f"consistency is defined for {', '.join(CONSISTENCY_TASKS)}")
    return list(dict.fromkeys(names))


# --------------------------------------------------------------------------- pyiqa's cache


def torch_hub_dir() -> Path:
    """``torch.hub.get_dir()``: ``$TORCH_HOME/hub``, by default ``~/.cache/torch/hub``."""
    import torch.hub

    return Path(torch.hub.get_dir())


def cache_folder(folder: str) -> Path:
    """Where pyiqa (or torchvision, or CLIP) looks for a file of ``folder``.

    pyiqa fixes its cache folder when it is first imported
    (``pyiqa.utils.download_util.DEFAULT_CACHE_DIR``), so that one is read
    from pyiqa itself once it is imported.
    """
    if folder == "pyiqa":
        module = sys.modules.get("pyiqa.utils.download_util")
        if module is not None:
            return Path(module.DEFAULT_CACHE_DIR)
    return torch_hub_dir() / folder


def weight_files(spec: MetricSpec, task: str) -> list[WeightFile]:
    files = list(spec.weights)
    if spec.name == "fid":
        stats = f"ffhq_clean_trainval70k_{FID_REFERENCE[task]}.npz"
        url = f"{HF_BASE}/{stats}" if FID_REFERENCE[task] == 512 else f"https://www.cs.cmu.edu/~clean-fid/stats/{stats}"
        files.append(WeightFile(stats, "pyiqa", url))
    return files


def missing_weights(spec: MetricSpec, task: str) -> list[tuple[WeightFile, Path]]:
    """The files ``spec`` needs that are not in the cache, with the folder each belongs in."""
    return [(w, cache_folder(w.folder)) for w in weight_files(spec, task)
            if not (cache_folder(w.folder) / w.filename).is_file()]


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in TRUE_VALUES


def missing_weights_error(specs: list[MetricSpec], missing: list[tuple[WeightFile, Path]],
                          why: str) -> ModelNotAvailableError:
    where = "; ".join(f"{w.filename} in {folder}" for w, folder in missing)
    which = f"metric {specs[0].label} needs" if len(specs) == 1 else f"metrics {', '.join(s.label for s in specs)} need"
    return ModelNotAvailableError(
        f"{which} pretrained files that are not cached and {why}: {where}",
        hint="download " + ", ".join(w.url for w, _ in missing) + " into those folders, or run once online "
             "(pyiqa fetches them; $TORCH_HOME moves its cache)")


# --------------------------------------------------------------------------- creating and calling

MetricFn = Callable[..., Any]
MetricFactory = Callable[[MetricSpec, str, "torch.device"], MetricFn]


def default_factory(spec: MetricSpec, task: str, device: "torch.device") -> MetricFn:
    """PSNR and SSIM built in (pyiqa's definitions); every other metric from pyiqa."""
    if spec.name == "psnr":
        return psnr_rgb
    if spec.name == "ssim":
        return ssim_y
    return pyiqa_factory(spec, task, device)


def _hwc(image: Any) -> np.ndarray:
    """A (1,3,H,W) tensor or an HxWx3 array as an HxWx3 numpy array (no copy where possible)."""
    if hasattr(image, "detach"):
        return image.detach().cpu().numpy()[0].transpose(1, 2, 0)
    return np.asarray(image)


def psnr_rgb(x: Any, y: Any) -> float:
    """pyiqa's ``psnr``: RGB, peak 1, eps 1e-8 on the MSE."""
    mse = float(np.mean((_hwc(x).astype(np.float64) - _hwc(y).astype(np.float64)) ** 2))
    return float(10.0 * np.log10(1.0 / (mse + 1e-8)))


SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_RANGE = 255.0
YIQ_Y = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def ssim_y(x: Any, y: Any) -> float:
    """pyiqa's ``ssim`` (its defaults, as the paper used them), with a separable window, in numpy.

    Y of YIQ (float32, as pyiqa) scaled to 0-255 and rounded; then float64;
    Gaussian window 11x11, sigma 1.5, "valid" filtering; C1 = (0.01*255)^2,
    C2 = (0.03*255)^2; the contrast-structure term clipped at 0 (pyiqa's
    ReLU); the mean of the map. numpy and scipy, not torch: a handful of
    small operations run no faster on torch's thread pool, and much slower
    when the CPU is shared.
    """
    from scipy.ndimage import correlate1d

    def luma(img: Any) -> np.ndarray:
        rgb = _hwc(img).astype(np.float32)
        return np.rint((rgb * YIQ_Y).sum(axis=2, dtype=np.float32) * np.float32(SSIM_RANGE)).astype(np.float64)

    a, b = luma(x), luma(y)
    half = (SSIM_WINDOW - 1) // 2
    taps = np.exp(-np.arange(-half, half + 1, dtype=np.float64) ** 2 / (2 * SSIM_SIGMA ** 2))
    taps /= taps.sum()

    def blur(img: np.ndarray) -> np.ndarray:  # "valid": the borders a full window does not cover are cut
        out = correlate1d(correlate1d(img, taps, axis=0, mode="constant"), taps, axis=1, mode="constant")
        return out[half:-half, half:-half]

    c1, c2 = (0.01 * SSIM_RANGE) ** 2, (0.03 * SSIM_RANGE) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a ** 2
    var_b = blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    cs = np.maximum((2 * cov + c2) / (var_a + var_b + c2), 0.0)
    return float(np.mean((2 * mu_a * mu_b + c1) / (mu_a ** 2 + mu_b ** 2 + c1) * cs))


def pyiqa_factory(spec: MetricSpec, task: str, device: "torch.device") -> MetricFn:
    """``pyiqa.create_metric`` for ``spec``, with our errors for a missing extra or missing weights."""
    pyiqa = import_pyiqa()
    for module in spec.modules:
        try:
            __import__(module)
        except ImportError:
            raise ElirError(f"metric {spec.label} needs the Python module {module!r}, which is not installed",
                            hint=EVAL_EXTRA_HINT) from None
    missing = missing_weights(spec, task)
    if missing and offline():
        raise missing_weights_error([spec], missing, f"{OFFLINE_ENV} is set")
    try:
        # pyiqa prints download notices on stdout, which is ours for results.
        with contextlib.redirect_stdout(sys.stderr):
            return pyiqa.create_metric(spec.pyiqa_name, device=device, as_loss=False)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        missing = missing_weights(spec, task)
        if missing:
            raise missing_weights_error([spec], missing, f"cannot be downloaded now ({_one_line(exc)})") from exc
        raise ElirError(f"metric {spec.label} could not be created: {_one_line(exc)}",
                        hint="check the files in pyiqa's cache " + str(cache_folder('pyiqa'))) from exc


def import_pyiqa():  # type: ignore[no-untyped-def]
    try:
        with contextlib.redirect_stdout(sys.stderr):
            import pyiqa
    except ImportError as exc:
        raise ElirError(f"the metrics need pyiqa, which is not installed ({_one_line(exc)})",
                        hint=EVAL_EXTRA_HINT) from None
    return pyiqa


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def to_tensor(rgb: np.ndarray, device: "torch.device") -> "torch.Tensor":
    """float HxWx3 -> (1,3,H,W) float32 on ``device``, clipped to [0, 1]."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(np.clip(rgb, 0.0, 1.0), dtype=np.float32))
    return x.permute(2, 0, 1)[None].to(device)


def score_value(score: Any) -> float:
    """A pyiqa score (tensor of one element, or a number) as a float."""
    if hasattr(score, "reshape"):
        return float(score.detach().reshape(-1)[0].cpu()) if hasattr(score, "detach") else float(np.reshape(score, -1)[0])
    return float(score)


class MetricSet:
    """The chosen pyiqa metrics, created once (failing before any image is restored)."""

    def __init__(self, names: list[str], task: str, device: "torch.device", *,
                 factory: MetricFactory | None = None) -> None:
        self.task = task
        self.device = device
        self.specs = [metric_spec(n) for n in names]
        factory = factory or default_factory
        self._fns = {}
        for spec in self.specs:
            if spec.pyiqa_name is None:
                continue
            try:
                self._fns[spec.name] = factory(spec, task, device)
            except ModelNotAvailableError as exc:
                raise self._all_missing(exc) from None

    def _all_missing(self, first: ModelNotAvailableError) -> ModelNotAvailableError:
        """One error naming every missing file of every chosen metric, not only the first metric's."""
        specs, missing = [], []
        for spec in self.specs:
            files = missing_weights(spec, self.task) if spec.weights or spec.name == "fid" else []
            if files:
                specs.append(spec)
                missing += [f for f in files if f not in missing]
        if len(specs) < 2:
            return first
        why = f"{OFFLINE_ENV} is set" if offline() else "cannot be downloaded now"
        return missing_weights_error(specs, missing, why)

    def per_image(self, restored: np.ndarray, gt: np.ndarray | None) -> dict[str, float]:
        """Per-image metrics (full-reference ones only with a ground truth), on the output clipped to [0, 1]."""
        import torch

        values: dict[str, float] = {}
        restored = np.clip(restored, 0.0, 1.0)
        gt = np.clip(gt, 0.0, 1.0) if gt is not None else None
        x = to_tensor(restored, self.device)
        y = to_tensor(gt, self.device) if gt is not None else None
        with torch.inference_mode():
            for spec in self.specs:
                fn = self._fns.get(spec.name)
                if fn is None or spec.kind == "folder":
                    continue
                if spec.kind == "full-reference":
                    if y is not None:
                        values[spec.name] = score_value(fn(x, y))
                else:
                    values[spec.name] = score_value(fn(x))
        return values

    def per_folder(self, folder: Path) -> dict[str, float]:
        """Folder metrics (FID against the paper's FFHQ statistics, clean mode) on saved PNGs."""
        values: dict[str, float] = {}
        for spec in self.specs:
            if spec.kind == "folder" and spec.name in self._fns:
                with contextlib.redirect_stdout(sys.stderr):
                    score = self._fns[spec.name](str(folder), dataset_name="FFHQ", dataset_res=FID_REFERENCE[self.task],
                                                 dataset_split="trainval70k", mode="clean")
                values[spec.name] = score_value(score)
        return values
