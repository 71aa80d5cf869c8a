"""A run's products: the tuned weights in our ``.safetensors``, their model card, their registration.

``best.safetensors`` is our format (:func:`elir_cli.model.checkpoint.save_safetensors`: the
config and task in the metadata and the header tensor), so ``elir restore --weights`` and
``elir eval --weights`` read it as they read a released file; its metadata adds where it
came from (``tuned_from``, ``tune_step``, ``tune_run``). ``best.md`` is its model card
(Hugging Face's format: YAML front matter, then what it is, how it was made, how it
scored, how to use it). Registration copies both into the store under a name
(:mod:`elir_cli.registry.local`), so ``elir models list`` shows it and ``--weights NAME`` finds it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from elir_cli._version import __version__
from elir_cli.atomicwrite import write_bytes_atomic

if TYPE_CHECKING:
    from elir_cli.model.elir import ElirModel
    from .settings import TuneSettings

BEST_WEIGHTS = "best.safetensors"
BEST_CARD = "best.md"


def write_weights(path: Path, model: "ElirModel", *, task: str, provenance: dict[str, str]) -> Path:
    """``model``'s weights in our format, atomically, with ``provenance`` in the metadata."""
    from elir_cli.model.checkpoint import save_safetensors

    return save_safetensors(path, model.state_dict(), model.config, task=task, extra_metadata=provenance)


def model_card(settings: "TuneSettings", *, base: str, teacher: str, images: dict[str, int], best: dict[str, Any],
               history: list[dict[str, Any]], seconds: float | None = None) -> str:
    """The model card of the best weights (Markdown with YAML front matter)."""
    from elir_cli.registry.tasks import get_task, load_manifest

    task = get_task(settings.task)
    base_model = f"base_model: {load_manifest().hub_repo_id}\n" if settings.weights is None else ""
    s = settings.resolved()
    values = best.get("values", {})
    first = history[0]["values"] if history else {}
    rows = "\n".join(f"| {h['step']} | " + " | ".join(_fmt(h["values"].get(k)) for k in _columns(history)) + " |"
                     for h in history)
    header = "| step | " + " | ".join(_columns(history)) + " |\n|" + " --- |" * (len(_columns(history)) + 1)
    name = settings.model_name
    return f"""---
license: apache-2.0
library_name: elir-cli
tags:
- image-restoration
- elir
- elir-{task.name}
{base_model}---

# {name}

ELIR ({task.title.lower()}) fine-tuned with `elir tune` (elir-cli {__version__}) from {base}.
It restores {task.restores}, at {task.input_size} px{f" x{task.scale}" if task.scale != 1 else ""},
in {task.model.k_steps} steps, like the released `{task.name}` model.

## Use

```bash
elir restore photo.jpg --task {task.name} --weights {name}          # registered on the machine that tuned it
elir restore photo.jpg --task {task.name} --weights best.safetensors
elir eval --task {task.name} --lq lq/ --gt hq/ -o results/ --weights best.safetensors
```

## Training

The ELIR authors' objective (`l2_cfm_mse_loss`: coarse-estimator L2, segment-consistency flow
matching, pixel term through the teacher's decoder), their AdamW and EMA (decay {settings.recipe.ema_decay});
these weights are the EMA's at step {best.get("step")} of {s["steps"]}, the best by {s["best_by"]} on the
validation images.

| setting | value |
| --- | --- |
| task | {task.name} |
| started from | {base} |
| teacher | {teacher} |
| training images | {images.get("train")} ({"paired LQ" if s["lq"] else "LQ made on the fly, elir degrade's degradation, a new draw each epoch"}) |
| validation images | {images.get("validation")} |
| steps | {s["steps"]} (batch {s["batch_size"]}, {s["size"]} px{", horizontal flips" if s["flip"] else ""}) |
| learning rate | {s["lr"]:g} (AdamW, betas 0.9/0.999, weight decay 0.01, constant) |
| trained parts | {", ".join(s["train"])} |
| seed | {s["seed"]} |
{f"| training time | {seconds / 60:.1f} min |" if seconds is not None else ""}

## Validation

Best ({s["best_by"]}): {", ".join(f"{k} {_fmt(v)}" for k, v in values.items())} at step {best.get("step")};
at the start: {", ".join(f"{k} {_fmt(v)}" for k, v in first.items())}.

{header}
{rows}

## Licence

Apache-2.0, as the ELIR weights it was tuned from (Cohen et al., "Efficient Image Restoration
via Latent Consistency Flow Matching", BMVC 2025). The training images are the tuner's own.
"""


def _columns(history: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(k for h in history for k in h["values"]))


def _fmt(value: Any) -> str:
    return "-" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value))


def write_card(path: Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"), overwrite=True)


def write_json(path: Path, data: Any) -> Path:
    return write_bytes_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode(), overwrite=True)
