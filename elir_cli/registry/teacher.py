"""The ELIR authors' frozen teacher, TAESD3, fetched from the Hugging Face Hub.

The authors' training (``elir tune``, :mod:`elir_cli.tuning`) uses the pretrained
Tiny AutoEncoder of the SD3 VAE as a frozen teacher: its encoder gives the flow's
target latents, its decoder the pixel term. They load it with diffusers from
``madebyollin/taesd3`` (eladc-git/ELIR @ 1f37aaf, ``ELIR/models/load_model.py:26-47``).
That repository's ``diffusion_pytorch_model.safetensors`` (diffusers' ``AutoencoderTiny``:
keys ``encoder.layers.N...``, ``decoder.layers.N...``, 9.85 MB, MIT licence) is fetched
here through ``hf_hub_download`` at a pinned revision, so the hub client's cache, locks,
``HF_HOME``, ``HF_HUB_OFFLINE`` and ``HF_ENDPOINT`` apply. The file's sha256 is recorded
the first time it is handed out (``records/teachers/taesd3.json``) and checked after.
"""

from __future__ import annotations

import json
from pathlib import Path

from elir_cli._version import __version__
from elir_cli.errors import ChecksumMismatchError, DownloadError, ModelNotAvailableError
from .release import LIBRARY_NAME, bar_class
from .store import elir_cache_dir, hub_cache_dir, hub_cached_file, hub_endpoint, is_offline, sha256_file, \
    write_text_atomic

TEACHER_REPO = "madebyollin/taesd3"
TEACHER_FILENAME = "diffusion_pytorch_model.safetensors"
# "Update README.md", 2024-06-14: the commit holding config.json and the weights (f2feb02) plus the card.
TEACHER_REVISION = "d58dcaccd2b36fcb7a6b9e93c1cc507acab5a778"
TEACHER_NAME = "taesd3"
DEFAULT_HUB_URL = "https://huggingface.co"


def teacher_hint() -> str:
    return (f"run once online (it comes from the hub: {TEACHER_REPO}), or download {TEACHER_FILENAME} from "
            f"{DEFAULT_HUB_URL}/{TEACHER_REPO} and pass --teacher FILE; --teacher self uses the starting "
            "model's own encoder and decoder (not the authors' recipe)")


def cached_teacher() -> Path | None:
    """The teacher file if the hub cache holds it at the pinned revision; no network."""
    return hub_cached_file(TEACHER_REPO, TEACHER_FILENAME, TEACHER_REVISION)


def ensure_teacher_weights(*, progress: bool = False) -> Path:
    """The TAESD3 weights file, from the hub cache or downloaded once; its sha256 checked."""
    path = _download(progress)
    return _checked(path)


def _download(progress: bool) -> Path:
    import httpx2
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, \
        RevisionNotFoundError, RemoteEntryNotFoundError

    from .hub import _host_resolves

    where = f"{TEACHER_REPO}@{TEACHER_REVISION[:12]}/{TEACHER_FILENAME}"
    offline = is_offline()
    if not offline and not _host_resolves(hub_endpoint() or DEFAULT_HUB_URL):
        cached = cached_teacher()
        if cached is not None:
            return cached
        raise ModelNotAvailableError(f"the teacher TAESD3 ({where}) is not cached and the hub cannot be reached",
                                     hint=teacher_hint())
    try:
        return Path(hf_hub_download(
            repo_id=TEACHER_REPO, filename=TEACHER_FILENAME, revision=TEACHER_REVISION,
            cache_dir=str(hub_cache_dir()), endpoint=hub_endpoint(), local_files_only=offline,
            library_name=LIBRARY_NAME, library_version=__version__, tqdm_class=bar_class(progress)))
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if offline else "the hub cannot be reached"
        raise ModelNotAvailableError(f"the teacher TAESD3 ({where}) is not cached and {why}",
                                     hint=teacher_hint()) from None
    except (RepositoryNotFoundError, RevisionNotFoundError, RemoteEntryNotFoundError) as exc:
        raise ModelNotAvailableError(f"the hub has no {where} ({type(exc).__name__})", hint=teacher_hint()) from None
    except HfHubHTTPError as exc:
        raise DownloadError(f"the hub answered {where} with an error: {str(exc).splitlines()[0][:200]}",
                            hint=teacher_hint()) from None
    except httpx2.HTTPError as exc:
        raise DownloadError(f"the download of {where} was interrupted ({type(exc).__name__})",
                            hint="run the command again; the download resumes") from None


def _record_path() -> Path:
    return elir_cache_dir() / "records" / "teachers" / f"{TEACHER_NAME}.json"


def _checked(path: Path) -> Path:
    """Hash the file; record the hash the first time, refuse a file that changed since."""
    digest = sha256_file(path)
    record = _record_path()
    try:
        known = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = None
    if isinstance(known, dict) and known.get("path") == str(path) and known.get("sha256") not in (None, digest):
        raise ChecksumMismatchError(f"the cached teacher {path} changed since it was downloaded "
                                    f"(sha256 {digest}, recorded {known['sha256']})",
                                    hint=f"delete it and run again: it is fetched anew from {TEACHER_REPO}")
    if not isinstance(known, dict) or known.get("sha256") != digest:
        write_text_atomic(record, json.dumps({"path": str(path), "sha256": digest, "repo": TEACHER_REPO,
                                              "revision": TEACHER_REVISION, "filename": TEACHER_FILENAME},
                                             indent=2, sort_keys=True) + "\n")
    return path
