"""A run's training state on disk: one ``checkpoint.safetensors``, written atomically.

Tensors (safetensors, never a pickle): ``model.*`` the weights being trained, ``ema.*`` the
moving average (the weights that are exported), ``optim.<i>.<name>`` AdamW's state of the
``i``-th trainable parameter (``step``, ``exp_avg``, ``exp_avg_sq``). Everything else is JSON
in the file's metadata (``state``): the step reached, the EMA's update count, the optimizer's
hyper-parameters, the best validation so far and the history of validations, the settings.
No random-generator state is needed: every random number of a step (data order, crops,
flips, degradations, noise, times) is drawn from generators seeded by (seed, step, ...)
(:mod:`.data`), so the step number is the whole position. A new file replaces the old one
only once it is complete (a temporary name in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from elir_cli.errors import CheckpointError

if TYPE_CHECKING:
    import torch

    from elir_cli.model.elir import ElirModel
    from .trainable import ModelEMA

STATE_FORMAT = "elir-cli-tune-state"
STATE_VERSION = "1"
TEMP_TOKEN_BYTES = 6


def save_tensors_atomic(path: Path, tensors: dict[str, "torch.Tensor"], metadata: dict[str, str]) -> Path:
    """safetensors written under a temporary name in the same folder, then moved into place."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(TEMP_TOKEN_BYTES)}.tmp"
    try:
        save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_state(path: Path, *, model: "ElirModel", ema: "ModelEMA", optimizer: "torch.optim.Optimizer",
               state: dict[str, Any]) -> Path:
    """Write the training state (see the module doc)."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v for k, v in ema.model.state_dict().items()})
    optim = optimizer.state_dict()
    for index, entry in optim["state"].items():
        for name, value in entry.items():
            tensors[f"optim.{index}.{name}"] = value
    groups = [{k: v for k, v in g.items()} for g in optim["param_groups"]]
    record = {**state, "ema_updates": ema.updates, "optimizer": {"param_groups": groups,
                                                                  "entries": sorted(optim["state"])}}
    return save_tensors_atomic(path, tensors, {"format": STATE_FORMAT, "format_version": STATE_VERSION,
                                               "state": json.dumps(record, sort_keys=True)})


def read_state_record(path: Path) -> dict[str, Any]:
    """The JSON part of a checkpoint (cheap: reads the header only)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"cannot read the training checkpoint {path}: {exc}",
                              hint="it may be damaged; start again with another -o") from None
    if metadata.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path} is not an elir tune checkpoint")
    return json.loads(metadata["state"])


def load_state(path: Path, *, model: "ElirModel", ema: "ModelEMA",
               optimizer: "torch.optim.Optimizer") -> dict[str, Any]:
    """Put a checkpoint's tensors into ``model``, ``ema`` and ``optimizer``; return its JSON part."""
    from safetensors.torch import load_file

    record = read_state_record(path)
    tensors = load_file(str(path))
    device = next(model.parameters()).device
    for prefix, module in (("model.", model), ("ema.", ema.model)):
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        module.load_state_dict(state, strict=True)
    ema.updates = int(record["ema_updates"])
    saved = record["optimizer"]
    entries: dict[int, dict[str, Any]] = {int(i): {} for i in saved["entries"]}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            # AdamW keeps "step" on the CPU (unless capturable) and its moments by their parameter.
            entries[int(index)][name] = value if name == "step" else value.to(device)
    optimizer.load_state_dict({"state": entries, "param_groups": saved["param_groups"]})
    return record
