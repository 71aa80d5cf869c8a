"""Getting verified weights onto the disk: the hub, the authors' release, imports.

For a task, :func:`ensure_task_weights` looks in this order:

1. our store (``elir_cli.registry.store``): a file converted earlier from the authors'
   release, or brought in by ``elir models import``;
2. the Hugging Face Hub, through ``hf_hub_download`` (its cache, locks,
   resumption, ``HF_HOME``, ``HF_HUB_OFFLINE``, ``HF_ENDPOINT``, ``HF_TOKEN``),
   repo from the argument, ``$ELIR_HUB_REPO`` or the manifest, revision pinned
   by the manifest;
3. on a hub miss (repo or file not found, or the hub unreachable), the
   authors' release ``.pth`` (``$ELIR_RELEASE_ENDPOINT`` replaces its
   ``https://github.com`` prefix), read with ``torch.load(weights_only=True)``
   only, checked against the task's shapes and converted once into our store.

Every file is hashed (sha256) when first handed out: checked against the
manifest when it knows the hash, recorded otherwise. A file that fails the
check is removed before the error is raised. Face detectors go through the
same registry. Plain-URL transfers live in :mod:`elir_cli.registry.release`, the
on-disk inventory (list, verify, remove) in :mod:`elir_cli.registry.inventory`. torch
and huggingface_hub are imported only when needed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from elir_cli._version import __version__
from .store import (
    StoredWeights,
    Source,
    cache_writes,
    hub_cache_dir,
    hub_cached_file,
    hub_endpoint,
    is_offline,
    make_record,
    read_record,
    remove_hub_copy,
    remove_record,
    sha256_file,
    store_detector_path,
    store_task_path,
    write_record,
)
from elir_cli.errors import (
    CacheError,
    CheckpointError,
    ChecksumMismatchError,
    DownloadError,
    ModelNotAvailableError,
    UsageError,
)
from .release import (
    LIBRARY_NAME,
    RELEASE_ENDPOINT_ENV,
    HostUnreachable,
    NotFoundOnHost,
    bar_class,
    fetch_url,
    http_error,
    os_error,
    release_url,
    store_lock,
    verify_download,
)
from .tasks import Detector, Task, get_detector, get_task, load_manifest, weights_dir

if TYPE_CHECKING:
    from elir_cli.model.checkpoint import Checkpoint

logger = logging.getLogger(__name__)

HUB_REPO_ENV = "ELIR_HUB_REPO"
DEFAULT_HUB_URL = "https://huggingface.co"


# -- where things come from -----------------------------------------------------

def hub_location(repo_id: str | None = None, revision: str | None = None) -> tuple[str, str]:
    """(repo id, revision) to fetch from: argument, then ``$ELIR_HUB_REPO``, then the manifest.

    The manifest's pinned revision applies to the manifest's repo; another repo
    is read at ``main`` unless a revision is given.
    """
    manifest = load_manifest()
    repo = repo_id or os.environ.get(HUB_REPO_ENV) or manifest.hub_repo_id
    if revision is None:
        revision = manifest.hub_revision if repo == manifest.hub_repo_id else "main"
    return repo, revision


def _download_hint(task: str) -> str:
    return (f"run `elir models download {task}` while online, or bring the file in with "
            f"`elir models import FILE --task {task}`")


# -- public API -----------------------------------------------------------------

def cached_task_weights(task: str) -> Path | None:
    """The local weights for ``task`` if present (our store, then the hub cache); no network."""
    t = get_task(task)
    store = store_task_path(t.name, t.hub_filename)
    if store.is_file():
        return store
    repo, revision = hub_location()
    return hub_cached_file(repo, t.hub_filename, revision)


def ensure_task_weights(task: str, *, repo_id: str | None = None, revision: str | None = None,
                        progress: bool = False) -> Path:
    """A local, verified ``.safetensors`` for ``task``, fetched if needed (see module doc)."""
    t = get_task(task)
    store = store_task_path(t.name, t.hub_filename)
    if store.is_file():
        return _checked_store_file(t, store)
    repo, rev = hub_location(repo_id, revision)
    try:
        path = _hub_download(t, repo, rev, progress)
    except _HubMiss as miss:
        logger.info("%s; trying the authors' release file", miss.reason)
        return _release_fallback(t, miss, progress)
    return _checked_hub_file(t, path, repo)


def import_task_weights(source: str | os.PathLike[str], task: str) -> Path:
    """Bring a local ``.pth``/``.ckpt``/``.safetensors`` into our store for ``task``.

    The file is read safely, checked against the task's shapes and written as
    our ``.safetensors``; the input is never modified.
    """
    t = get_task(task)
    src = Path(source)
    if not src.is_file():
        raise UsageError(f"no such file: {src}", hint="give the path of a .pth, .ckpt or .safetensors file")
    digest = sha256_file(src)
    with store_lock(f"task-{t.name}"):
        return _convert_into_store(t, src, origin=str(src.resolve()), origin_sha256=digest,
                                   source="import", verified=digest in (t.hub_sha256, t.release_sha256))


def ensure_detector_weights(name: str, *, progress: bool = False) -> Path:
    """A local, verified face-detector file: the bundled one, or a download into our store."""
    d = get_detector(name)
    if d.bundled:
        return _checked_bundled_detector(d)
    if not d.url:
        raise CheckpointError(f"the manifest gives neither a bundled file nor a URL for detector {name!r}")
    path = store_detector_path(d.url.rsplit("/", 1)[-1])
    if path.is_file():
        return _checked_record(d.name, "detectors", path, d.sha256)
    if is_offline():
        raise ModelNotAvailableError(
            f"face detector {name!r} is not cached and HF_HUB_OFFLINE is set",
            hint=f"run `elir models download --detector {name}` while online")
    with store_lock(f"detector-{d.name}"):
        if path.is_file():
            return _checked_record(d.name, "detectors", path, d.sha256)
        url = release_url(d.url)
        try:
            tmp = fetch_url(url, progress, what=f"face detector {name!r}")
        except HostUnreachable:
            raise ModelNotAvailableError(f"face detector {name!r} is not cached and {url.split('/')[2]} "
                                         "cannot be reached",
                                         hint=f"run `elir models download --detector {name}` while online"
                                         ) from None
        except NotFoundOnHost as exc:
            raise DownloadError(f"face detector {name!r} is missing at {url} (HTTP {exc.status})",
                                hint=f"check ${RELEASE_ENDPOINT_ENV}") from None
        try:
            digest = verify_download(tmp, d.sha256, url)
            from elir_cli.model.checkpoint import read_checkpoint

            read_checkpoint(tmp)  # weights_only: refuse a pickle that holds code
            with cache_writes(path.parent):
                path.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        write_record("detectors", make_record(d.name, path, digest, source="download", origin=url,
                                              verified=d.sha256 is not None))
    return path


# -- the hub ------------------------------------------------------------------------

class _HubMiss(Exception):
    """The hub does not have the file (or cannot be reached): try the release."""

    def __init__(self, reason: str, *, unreachable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unreachable = unreachable


def _hub_download(t: Task, repo: str, revision: str, progress: bool) -> Path:
    import httpx2
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo}@{revision}/{t.hub_filename}"
    offline = is_offline()
    if not offline and not _host_resolves(hub_endpoint() or DEFAULT_HUB_URL):
        # No DNS answer is final: skip huggingface_hub's ~25 s of retries.
        raise _HubMiss(f"cannot reach the hub for {where} (its host name does not resolve)", unreachable=True)
    try:
        return Path(hf_hub_download(
            repo_id=repo, filename=t.hub_filename, revision=revision,
            cache_dir=str(hub_cache_dir()), endpoint=hub_endpoint(), local_files_only=offline,
            library_name=LIBRARY_NAME, library_version=__version__, tqdm_class=bar_class(progress)))
    except GatedRepoError:
        raise DownloadError(
            f"the hub repo {repo} is gated: you must accept its conditions to download {t.hub_filename}",
            hint=f"accept them at {hub_endpoint() or DEFAULT_HUB_URL}/{repo}, then set HF_TOKEN "
                 "or run `hf auth login`") from None
    except RevisionNotFoundError:
        raise DownloadError(f"revision {revision!r} does not exist in the hub repo {repo}",
                            hint="check the revision (--revision) or the manifest's pinned revision") from None
    except RemoteEntryNotFoundError:
        raise _HubMiss(f"{t.hub_filename} is not in the hub repo {repo}@{revision}") from None
    except RepositoryNotFoundError:
        raise _HubMiss(f"the hub repo {repo} does not exist (or is private)") from None
    except LocalEntryNotFoundError:
        if offline:
            raise ModelNotAvailableError(
                f"the weights for task {t.name!r} are not cached and HF_HUB_OFFLINE is set",
                hint=_download_hint(t.name)) from None
        raise _HubMiss(f"cannot reach the hub for {where}", unreachable=True) from None
    except HfHubHTTPError as exc:
        raise http_error(exc, f"the hub ({where})") from None
    except httpx2.HTTPError as exc:
        raise DownloadError(f"the download of {where} was interrupted ({type(exc).__name__}: {exc})",
                            hint="run the command again; the download resumes") from None
    except OSError as exc:
        raise os_error(exc, where, str(hub_cache_dir())) from None


def _host_resolves(url: str) -> bool:
    """Whether the URL's host name resolves (a missing network answers at once)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if not parts.hostname:
        return True
    try:
        socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    except (socket.gaierror, UnicodeError):
        return False
    return True


def _checked_hub_file(t: Task, path: Path, repo: str) -> Path:
    """Hash a hub file the first time we see it; remove it if it is not what we expect."""
    record = read_record("tasks", t.name)
    if record is not None and record.source == "hub" and record.matches_file(path):
        return path
    digest = sha256_file(path)
    expected = t.hub_sha256
    if expected is None and record is not None and record.path == str(path):
        expected = record.sha256  # recorded on first download: it must not change
    if expected is not None and digest != expected:
        with cache_writes(path.parent):
            remove_hub_copy(path)
        raise ChecksumMismatchError(
            f"{t.hub_filename} from the hub repo {repo} has sha256 {digest}, expected {expected}; "
            "the file was removed",
            hint=f"run `elir models download {t.name}` again; if this repeats, the server "
                 "does not serve the registered file")
    commit = path.parent.name
    _keep_record("tasks", make_record(t.name, path, digest, source="hub", origin=f"{repo}@{commit}",
                                      verified=t.hub_sha256 is not None))
    return path


# -- the authors' release -------------------------------------------------------------

def _release_fallback(t: Task, miss: _HubMiss, progress: bool) -> Path:
    if is_offline():
        raise ModelNotAvailableError(
            f"the weights for task {t.name!r} are not cached and HF_HUB_OFFLINE is set",
            hint=_download_hint(t.name))
    url = release_url(t.release_url)
    with store_lock(f"task-{t.name}"):
        store = store_task_path(t.name, t.hub_filename)
        if store.is_file():  # another process converted it while we waited
            return _checked_store_file(t, store)
        try:
            tmp = fetch_url(url, progress, what=f"the release file of task {t.name!r}")
        except HostUnreachable:
            if miss.unreachable:
                raise ModelNotAvailableError(
                    f"the weights for task {t.name!r} are not cached, and neither the hub nor "
                    f"the release host ({url.split('/')[2]}) can be reached",
                    hint=_download_hint(t.name)) from None
            raise DownloadError(f"{miss.reason}, and the release host of {url} cannot be reached",
                                hint="check your connection and run the command again") from None
        except NotFoundOnHost as exc:
            raise ModelNotAvailableError(f"{miss.reason}, and the release file is missing too "
                                         f"(HTTP {exc.status} at {url})",
                                         hint=f"check ${HUB_REPO_ENV} / ${RELEASE_ENDPOINT_ENV}, or "
                                              f"`elir models import FILE --task {t.name}`") from None
        try:
            digest = verify_download(tmp, t.release_sha256, url)
            return _convert_into_store(t, tmp, origin=url, origin_sha256=digest, source="release",
                                       verified=t.release_sha256 is not None)
        finally:
            tmp.unlink(missing_ok=True)


def _convert_into_store(t: Task, src: Path, *, origin: str, origin_sha256: str, source: Source,
                        verified: bool) -> Path:
    """Read ``src`` safely, check it against the task and write our safetensors once."""
    from elir_cli.model.checkpoint import read_checkpoint, save_safetensors

    from .fit import check_task_fit

    ckpt: Checkpoint = read_checkpoint(src)
    config = check_task_fit(ckpt, t.name, source=str(src) if source == "import" else origin)
    store = store_task_path(t.name, t.hub_filename)
    with cache_writes(store.parent):
        save_safetensors(store, ckpt.state_dict, config, task=t.name,
                         extra_metadata={"source": origin, "source_sha256": origin_sha256})
        digest = sha256_file(store)
        write_record("tasks", make_record(t.name, store, digest, source=source, origin=origin,
                                          origin_sha256=origin_sha256, verified=verified))
    return store


def _checked_store_file(t: Task, path: Path) -> Path:
    return _checked_record(t.name, "tasks", path, None)


def _checked_record(name: str, kind: Literal["tasks", "detectors"], path: Path,
                    expected: str | None) -> Path:
    """Re-hash a store file only when it changed since recorded; remove it if it no longer matches."""
    record = read_record(kind, name)
    if record is not None and record.matches_file(path) and (expected in (None, record.sha256)):
        return path
    digest = sha256_file(path)
    want = expected or (record.sha256 if record is not None and record.path == str(path) else None)
    if want is not None and digest != want:
        with cache_writes(path.parent):
            path.unlink(missing_ok=True)
            remove_record(kind, name)
        raise ChecksumMismatchError(f"the cached file {path} changed since it was recorded "
                                    f"(sha256 {digest}, expected {want}); it was removed",
                                    hint=f"fetch it again with `elir models download "
                                         f"{name if kind == 'tasks' else '--detector ' + name}`")
    source: Source = record.source if record is not None else "import"
    origin = record.origin if record is not None else "found in the cache"
    _keep_record(kind, make_record(name, path, digest, source=source, origin=origin,
                                   origin_sha256=record.origin_sha256 if record else None,
                                   verified=expected is not None))
    return path


def _checked_bundled_detector(d: Detector) -> Path:
    path = weights_dir() / (d.bundled or "")
    if not path.is_file():
        raise CheckpointError(f"the bundled face detector {path} is missing", hint="reinstall elir-cli")
    if d.sha256 is not None and sha256_file(path) != d.sha256:
        raise ChecksumMismatchError(f"the bundled face detector {path} is damaged (sha256 differs "
                                    "from the manifest)", hint="reinstall elir-cli")
    return path


# -- helpers -----------------------------------------------------------------------------

def _keep_record(kind: Literal["tasks", "detectors"], record: StoredWeights) -> None:
    """Record a hash of a file that is already in place and checked.

    On a read-only cache (a shared, pre-filled cache is common on clusters) the
    file is still usable: the failure is logged as a warning, not raised.
    """
    try:
        write_record(kind, record)
    except CacheError as exc:
        logger.warning("could not record the sha256 of %s: %s", record.path, exc.message)


