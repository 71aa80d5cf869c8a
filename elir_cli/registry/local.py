"""Local models: weights made on this machine (``elir tune``), kept in the store under a name.

A local model is a copy of one of our ``.safetensors`` files (it records its task and
config) in ``$ELIR_CACHE/local/<name>.safetensors``, its model card beside it
(``<name>.md``) and a JSON record (``<name>.json``: task, sha256, size, where it came
from, what it was tuned from, its validation scores). ``elir models list`` shows them
under the tasks, ``elir models info NAME`` shows one, ``--weights NAME`` finds it
(:func:`local_model_path`), ``elir models remove NAME`` deletes it.

The copy makes the name independent of the run folder it came from (deleting the run
keeps the model). Nothing here imports torch or touches the network, so listing stays fast.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from elir_cli.errors import UsageError
from .store import cache_writes, elir_cache_dir, sha256_file, write_text_atomic
from .tasks import task_names

LOCAL_FOLDER = "local"
WEIGHTS_SUFFIX = ".safetensors"
CARD_SUFFIX = ".md"
RECORD_SUFFIX = ".json"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class LocalModel:
    """What the store knows of one local model."""

    name: str
    task: str
    path: str
    sha256: str
    size: int
    origin: str  # the file it was copied from (a tune run's best.safetensors)
    created: str
    card: str | None = None
    base: str | None = None  # the weights it was tuned from
    details: dict[str, Any] = field(default_factory=dict)  # steps, best metric, ...

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "source": "local", "cached": Path(self.path).is_file()}


def local_dir() -> Path:
    return elir_cache_dir() / LOCAL_FOLDER


def check_name(name: str) -> str:
    """A usable local model name: letters, digits, ``.``, ``_``, ``-``; not a task's name."""
    if not NAME_PATTERN.match(name or ""):
        raise UsageError(f"{{name}} {name!r} is not a usable model name", option="name", value=name,
                         hint="use up to 64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    if name in task_names():
        raise UsageError(f"{{name}} {name!r} is the name of a released task", option="name", value=name,
                         hint="choose another name, e.g. my-" + name)
    return name


def _record_path(name: str) -> Path:
    return local_dir() / f"{name}{RECORD_SUFFIX}"


def read_local_model(name: str) -> LocalModel | None:
    """The record of local model ``name``, or None (no such model, or a name that cannot be one)."""
    if not NAME_PATTERN.match(name or ""):
        return None
    try:
        data = json.loads(_record_path(name).read_text(encoding="utf-8"))
        return LocalModel(**data)
    except (OSError, ValueError, TypeError):
        return None


def local_models() -> list[LocalModel]:
    """Every local model, by name."""
    folder = local_dir()
    if not folder.is_dir():
        return []
    found = (read_local_model(p.name[: -len(RECORD_SUFFIX)]) for p in sorted(folder.glob(f"*{RECORD_SUFFIX}")))
    return [m for m in found if m is not None]


def local_model_path(name: str) -> Path | None:
    """The weights file of local model ``name`` when it exists, else None."""
    model = read_local_model(name)
    if model is None or not Path(model.path).is_file():
        return None
    return Path(model.path)


def register_local_model(name: str, weights: Path, *, task: str, card: Path | None = None,
                         base: str | None = None, details: dict[str, Any] | None = None,
                         replace_origin: Path | None = None) -> LocalModel:
    """Copy ``weights`` (and ``card``) into the store as local model ``name``; return its record.

    A name already taken is refused, unless its model came from ``replace_origin`` (the
    same run registering again: its newer weights replace the old).
    """
    check_name(name)
    existing = read_local_model(name)
    if existing is not None and (replace_origin is None or Path(existing.origin) != Path(replace_origin)):
        raise UsageError(f"a local model named {name!r} exists already (from {existing.origin})",
                         option="name", value=name,
                         hint=f"choose another {{name}}, or remove it first: elir models remove {name}")
    folder = local_dir()
    target = folder / f"{name}{WEIGHTS_SUFFIX}"
    card_target = folder / f"{name}{CARD_SUFFIX}" if card is not None else None
    with cache_writes(folder):
        folder.mkdir(parents=True, exist_ok=True)
        _copy_atomic(weights, target)
        if card is not None and card_target is not None:
            _copy_atomic(card, card_target)
        model = LocalModel(name=name, task=task, path=str(target), sha256=sha256_file(target),
                           size=target.stat().st_size, origin=str(Path(weights).resolve()),
                           created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           card=str(card_target) if card_target else None, base=base, details=dict(details or {}))
        write_text_atomic(_record_path(name), json.dumps(asdict(model), indent=2, sort_keys=True) + "\n")
    return model


def remove_local_model(name: str) -> list[Path]:
    """Delete local model ``name`` (weights, card, record); the paths removed."""
    model = read_local_model(name)
    if model is None:
        return []
    removed = []
    with cache_writes(local_dir()):
        for path in (Path(model.path), Path(model.card) if model.card else None, _record_path(name)):
            if path is not None and path.exists():
                path.unlink()
                removed.append(path)
    return removed


def _copy_atomic(src: Path, dst: Path) -> None:
    tmp = dst.parent / f".{dst.name}.{os.getpid()}.tmp"
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
