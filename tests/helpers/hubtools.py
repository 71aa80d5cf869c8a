"""Tiny registries for the hub tests: small models under the real tasks' file names.

The real tasks are tens of MB. ``write_tiny_manifest`` copies the installed
manifest, keeps every task's name, file names, K and sigma_s, and swaps the
architecture for a tiny one (recomputing tensor and parameter counts); the
tests point ``ELIR_MANIFEST`` at it. Files made by ``tiny_files`` then pass
the same "checked against the task's shapes" test that a real download passes.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import tempfile
from functools import lru_cache
from pathlib import Path

import torch

from elir_cli.model.checkpoint import save_safetensors
from elir_cli.model.elir import ElirModel
from elir_cli.registry.tasks import weights_dir
from elir_cli.model.config import ModelConfig

HUB_REPO = "elir-cli/elir"  # the installed manifest's hub repository
TINY_ARCH = {"hid_channels": 32, "n_mid_blocks": 1, "rrdb_c_hid": 16, "n_rrdb": 1}


def tiny_config(task_model: dict) -> ModelConfig:
    data = {**task_model, **TINY_ARCH}
    return ModelConfig.from_dict({k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()})


def real_manifest() -> dict:
    return json.loads((weights_dir() / "manifest.json").read_text())


@lru_cache(maxsize=None)
def tiny_files(task: str, seed: int = 0) -> dict[str, bytes]:
    """``{"safetensors": ..., "pth": ...}`` bytes of a tiny random model for ``task``."""
    config = tiny_config(real_manifest()["tasks"][task]["model"])
    torch.manual_seed(seed)
    state = ElirModel(config).state_dict()
    buf = io.BytesIO()
    torch.save(state, buf)
    with tempfile.TemporaryDirectory() as d:
        path = save_safetensors(Path(d) / "m.safetensors", state, config, task=task)
        st_bytes = path.read_bytes()
    return {"safetensors": st_bytes, "pth": buf.getvalue()}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_tiny_manifest(path: Path, *, release_host: str = "https://github.com",
                        sha256s: dict[tuple[str, str], str | None] | None = None) -> Path:
    """A manifest with tiny architectures; ``sha256s[(task, "hub"|"release")]`` sets known hashes."""
    data = copy.deepcopy(real_manifest())
    for name, task in data["tasks"].items():
        config = tiny_config(task["model"])
        task["model"] = config.to_dict()
        with torch.device("meta"):
            state = ElirModel(config).state_dict()
        task["tensors"] = len(state)
        task["parameters"] = sum(t.numel() for t in state.values())
        for kind in ("hub", "release"):
            task["sources"][kind]["sha256"] = (sha256s or {}).get((name, kind))
        if release_host != "https://github.com":
            task["sources"]["release"]["url"] = task["sources"]["release"]["url"].replace(
                "https://github.com", release_host)
    path.write_text(json.dumps(data, indent=2))
    return path


def evil_pth(path: Path, marker: Path) -> Path:
    """A torch checkpoint whose unpickling would create ``marker`` (it must never run)."""

    class Payload:
        def __reduce__(self) -> tuple:
            return (open, (str(marker), "w"))

    torch.save({"enc.layers.0.weight": torch.zeros(2, 2), "payload": Payload()}, path)
    return path


def release_path(task: str) -> str:
    """The path part of a task's release URL (what the release server must serve)."""
    url = real_manifest()["tasks"][task]["sources"]["release"]["url"]
    return url[len("https://github.com"):]


def detector_path(name: str) -> str:
    url = real_manifest()["detectors"][name]["url"]
    return url[len("https://github.com"):]
