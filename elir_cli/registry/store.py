"""Where elir-cli keeps weights on disk, and what it knows about each file.

Two caches, neither in site-packages nor in the working directory:

- the Hugging Face hub cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``), owned
  by ``huggingface_hub``: our ``.safetensors`` downloaded from the hub;
- our own store, ``$ELIR_CACHE``, else ``$HF_ASSETS_CACHE/elir-cli`` (else
  ``$HF_HOME/assets/elir-cli``, the folder ``huggingface_hub`` sets aside for
  downstream libraries): files converted from the authors' release ``.pth``,
  files brought in by ``elir models import``, the optional face detector, and a
  JSON record (sha256, size, origin) for every weights file we hand out.

Everything here is read at call time from the environment, touches no network
and imports neither torch nor ``huggingface_hub``, so ``elir models list`` stays
fast. Writes are atomic (temporary file in the same folder + ``os.replace``).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from elir_cli.errors import CacheError

ELIR_CACHE_ENV = "ELIR_CACHE"
LIBRARY_FOLDER = "elir-cli"
HASH_CHUNK_BYTES = 8 * 1024 * 1024
TRUE_VALUES = {"1", "on", "yes", "true"}
HUB_REPO_FOLDER_SEPARATOR = "--"

Source = Literal["hub", "release", "import", "bundled", "download"]


# -- locations ------------------------------------------------------------------

def _hf_home() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    return Path(os.path.expandvars(os.environ.get("HF_HOME") or str(default))).expanduser()


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved from the environment now (not at import)."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    return Path(os.path.expandvars(explicit)).expanduser() if explicit else _hf_home() / "hub"


def elir_cache_dir() -> Path:
    """Our own store: ``$ELIR_CACHE``, else the Hugging Face assets folder for elir-cli."""
    explicit = os.environ.get(ELIR_CACHE_ENV)
    if explicit:
        return Path(os.path.expandvars(explicit)).expanduser()
    assets = os.environ.get("HF_ASSETS_CACHE")
    base = Path(os.path.expandvars(assets)).expanduser() if assets else _hf_home() / "assets"
    return base / LIBRARY_FOLDER


def hub_endpoint() -> str | None:
    """``$HF_ENDPOINT`` without a trailing slash, or None for huggingface_hub's default."""
    value = os.environ.get("HF_ENDPOINT")
    return value.rstrip("/") if value else None


def is_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set to a true value."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in TRUE_VALUES


def store_task_path(task: str, filename: str) -> Path:
    """Where a converted or imported task file lives in our store."""
    return elir_cache_dir() / "tasks" / task / filename


def store_detector_path(filename: str) -> Path:
    """Where a downloaded face detector lives in our store."""
    return elir_cache_dir() / "detectors" / filename


def downloads_dir() -> Path:
    """Scratch folder for release downloads before they are verified and converted."""
    return elir_cache_dir() / "downloads"


def locks_dir() -> Path:
    return elir_cache_dir() / ".locks"


def record_path(kind: Literal["tasks", "detectors"], name: str) -> Path:
    return elir_cache_dir() / "records" / kind / f"{name}.json"


# -- the hub cache, read without importing huggingface_hub -----------------------

def hub_repo_dir(repo_id: str) -> Path:
    return hub_cache_dir() / ("models" + HUB_REPO_FOLDER_SEPARATOR
                              + repo_id.replace("/", HUB_REPO_FOLDER_SEPARATOR))


def hub_cached_file(repo_id: str, filename: str, revision: str) -> Path | None:
    """The cached hub file for ``revision`` (branch, tag or commit), or None.

    Same rules as ``huggingface_hub.try_to_load_from_cache`` (a test keeps the
    two in agreement); re-implemented so that ``elir models list`` need not
    import huggingface_hub and its HTTP stack.
    """
    repo_dir = hub_repo_dir(repo_id)
    commit = revision
    ref = repo_dir / "refs" / revision
    try:
        if ref.is_file():
            commit = ref.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    candidate = repo_dir / "snapshots" / commit / filename
    return candidate if candidate.is_file() else None


def hub_cached_copies(repo_id: str, filename: str) -> list[Path]:
    """Every snapshot of ``repo_id`` in the hub cache that holds ``filename``."""
    snapshots = hub_repo_dir(repo_id) / "snapshots"
    if not snapshots.is_dir():
        return []
    return sorted(p / filename for p in snapshots.iterdir() if (p / filename).is_file())


def remove_hub_copy(pointer: Path) -> list[Path]:
    """Remove a snapshot file and its blob (unless another snapshot still uses it)."""
    removed = []
    blob = pointer.resolve() if pointer.is_symlink() else None
    pointer.unlink(missing_ok=True)
    removed.append(pointer)
    if blob is not None and blob.exists():
        repo_snapshots = pointer.parent.parent
        still_used = any(p.is_symlink() and p.resolve() == blob for p in repo_snapshots.rglob("*"))
        if not still_used:
            blob.unlink(missing_ok=True)
            removed.append(blob)
    return removed


# -- hashing and records ----------------------------------------------------------

def sha256_file(path: Path) -> str:
    """The sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class StoredWeights:
    """What we recorded about a weights file when we first handed it out."""

    name: str
    path: str
    sha256: str
    size: int
    mtime_ns: int
    source: Source
    origin: str
    origin_sha256: str | None = None
    verified_against_manifest: bool = False
    recorded_at: str = ""

    def matches_file(self, path: Path) -> bool:
        """True when ``path`` is the recorded file and looks unchanged (size and mtime)."""
        try:
            st = path.stat()
        except OSError:
            return False
        return str(path) == self.path and st.st_size == self.size and st.st_mtime_ns == self.mtime_ns


def make_record(name: str, path: Path, sha256: str, *, source: Source, origin: str,
                origin_sha256: str | None = None, verified: bool = False) -> StoredWeights:
    st = path.stat()
    return StoredWeights(name=name, path=str(path), sha256=sha256, size=st.st_size,
                      mtime_ns=st.st_mtime_ns, source=source, origin=origin,
                      origin_sha256=origin_sha256, verified_against_manifest=verified,
                      recorded_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def read_record(kind: Literal["tasks", "detectors"], name: str) -> StoredWeights | None:
    """The record for a task or detector, or None when there is none (or it is unreadable)."""
    path = record_path(kind, name)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return StoredWeights(**data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError):
        return None


def recorded_sha256(path: Path, task: str | None = None) -> str:
    """The sha256 of ``path``: the task record's when it describes this unchanged file, else hashed now."""
    record = read_record("tasks", task) if task else None
    if record is not None and record.matches_file(Path(path)):
        return record.sha256
    return sha256_file(Path(path))


def write_record(kind: Literal["tasks", "detectors"], record: StoredWeights) -> Path:
    path = record_path(kind, record.name)
    text = json.dumps(asdict(record), indent=2, sort_keys=True) + "\n"
    return write_text_atomic(path, text)


def remove_record(kind: Literal["tasks", "detectors"], name: str) -> bool:
    path = record_path(kind, name)
    existed = path.exists()
    path.unlink(missing_ok=True)
    return existed


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder."""
    with cache_writes(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return path


# -- turning OS errors into actionable ones ----------------------------------------

@contextmanager
def cache_writes(folder: Path) -> Iterator[None]:
    """OS errors while writing under ``folder`` (disk full, read-only) become :class:`CacheError`."""
    try:
        yield
    except OSError as exc:
        translated = cache_error_from_oserror(exc, folder)
        if translated is None:
            raise
        raise translated from None


def cache_error_from_oserror(exc: OSError, folder: Path) -> CacheError | None:
    """A :class:`CacheError` for disk-full / read-only / permission errors, else None."""
    where = Path(exc.filename).parent if isinstance(exc.filename, str) else folder
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return CacheError(f"no space left on the disk holding {where}",
                          hint=f"free some space, or point ${ELIR_CACHE_ENV} / $HF_HOME at a larger disk")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return CacheError(f"cannot write to the cache folder {where} ({exc.strerror or 'read-only'})",
                          hint=f"make it writable, or point ${ELIR_CACHE_ENV} / $HF_HOME at a writable folder")
    return None


# -- precision calibrations ---------------------------------------------------------

@dataclass(frozen=True)
class CalibrationRecord:
    """Whether a reduced precision restores like float32 with one weights file on one device kind.

    Written by :mod:`elir_cli.pipeline.calibration` the first time the file is
    used at ``precision`` on ``device_kind``; keyed by the file's sha256, so a
    renamed copy shares it and a changed file does not.
    """

    sha256: str
    precision: str
    device_kind: str
    psnr_db: float  # the lowest PSNR between the float32 and reduced outputs over the set
    threshold_db: float
    passed: bool
    images: int
    seconds: float
    task: str | None = None
    per_image_db: tuple[float, ...] = ()
    recorded_at: str = ""
    # int8 (pipeline.calibration.calibrate_int8): median seconds per calibration image at int8,
    # at PyTorch fp32 and (where the CPU has native bf16) at PyTorch bf16, measured in the same
    # run; and the quantized tensors NNCF kept and the ones its accuracy control reverted to fp32.
    seconds_per_image: float | None = None
    fp32_seconds_per_image: float | None = None
    bf16_seconds_per_image: float | None = None
    quantized: int | None = None
    reverted: int | None = None

    @classmethod
    def from_dict(cls, data: dict) -> "CalibrationRecord":
        """A record from its JSON form (``asdict``'s, where the per-image list is a list)."""
        return cls(**{**data, "per_image_db": tuple(data.get("per_image_db", ()))})


def openvino_cache_dir(sha256: str) -> Path:
    """The OpenVINO backend's converted and compiled models for the weights file with this sha256."""
    return elir_cache_dir() / "openvino" / sha256


def onnxruntime_cache_dir(sha256: str) -> Path:
    """The onnxruntime backend's exported graphs for the weights file with this sha256."""
    return elir_cache_dir() / "onnxruntime" / sha256


def calibration_path(sha256: str, precision: str, device_kind: str) -> Path:
    return elir_cache_dir() / "records" / "calibration" / f"{sha256}.{precision}.{device_kind}.json"


def read_calibration(sha256: str, precision: str, device_kind: str) -> CalibrationRecord | None:
    """The recorded calibration, or None when there is none (or it is unreadable)."""
    try:
        data = json.loads(calibration_path(sha256, precision, device_kind).read_text(encoding="utf-8"))
        return CalibrationRecord.from_dict(data)
    except (OSError, ValueError, TypeError, AttributeError):  # AttributeError: JSON that is not an object
        return None


def write_calibration(record: CalibrationRecord) -> Path:
    if not record.recorded_at:
        record = CalibrationRecord(**{**asdict(record),
                                      "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    text = json.dumps(asdict(record), indent=2, sort_keys=True) + "\n"
    return write_text_atomic(calibration_path(record.sha256, record.precision, record.device_kind), text)


def calibrations_for(sha256: str) -> list[CalibrationRecord]:
    """Every calibration recorded for the file with this sha256, by precision and device."""
    folder = elir_cache_dir() / "records" / "calibration"
    found = []
    for path in sorted(folder.glob(f"{sha256}.*.json")) if folder.is_dir() else []:
        _, precision, device_kind = path.name[: -len(".json")].split(".", 2)
        record = read_calibration(sha256, precision, device_kind)
        if record is not None:
            found.append(record)
    return found
