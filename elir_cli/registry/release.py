"""Downloads from plain URLs: the authors' release files and facexlib's detector.

huggingface_hub's ``http_get`` does the transfer (streaming, retries, resuming
with ``Range`` after a dropped connection, a progress bar on stderr); this
module adds what a non-hub URL needs: the ``$ELIR_RELEASE_ENDPOINT`` mirror, a
unique temporary file in our store, a sha256 check, a lock per file, and
turning transport, HTTP and disk errors into :class:`~elir_cli.errors.ElirError`.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Any

from elir_cli._version import __version__
from .store import cache_error_from_oserror, cache_writes, downloads_dir, locks_dir, sha256_file
from elir_cli.errors import ChecksumMismatchError, DownloadError, ElirError

RELEASE_ENDPOINT_ENV = "ELIR_RELEASE_ENDPOINT"
RELEASE_HOST_PREFIX = "https://github.com"
LIBRARY_NAME = "elir-cli"
HTTP_UNAUTHORIZED = 401
HTTP_FORBIDDEN = 403
HTTP_NOT_FOUND = 404
TRUNCATION_MARK = "Consistency check failed"
PREFLIGHT_TIMEOUT_S = 10.0


def release_url(url: str) -> str:
    """The manifest URL with ``$ELIR_RELEASE_ENDPOINT`` in place of ``https://github.com``."""
    mirror = os.environ.get(RELEASE_ENDPOINT_ENV)
    if mirror and url.startswith(RELEASE_HOST_PREFIX + "/"):
        return mirror.rstrip("/") + url[len(RELEASE_HOST_PREFIX):]
    return url


class HostUnreachable(Exception):
    """A connection to a release host could not be made (callers turn it into an ElirError)."""


class NotFoundOnHost(Exception):
    """The release host answered 404 (callers turn it into an ElirError)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def fetch_url(url: str, progress: bool, *, what: str) -> Path:
    """Download ``url`` into a unique temporary file of our downloads folder."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.file_download import http_get

    _preflight(url)
    folder = downloads_dir()
    with cache_writes(folder):
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".release.", suffix=".incomplete", dir=folder)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            http_get(url, fh, headers={"user-agent": f"{LIBRARY_NAME}/{__version__}"},
                     displayed_filename=url.rsplit("/", 1)[-1], tqdm_class=bar_class(progress))
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, HfHubHTTPError):
            status = exc.response.status_code
            if status == HTTP_NOT_FOUND:
                raise NotFoundOnHost(status) from None
            raise http_error(exc, f"the release host ({url})") from None
        if isinstance(exc, (httpx2.ConnectError, httpx2.ConnectTimeout)):
            raise HostUnreachable(str(exc)) from None
        if isinstance(exc, httpx2.HTTPError):
            raise DownloadError(f"the download of {what} from {url} was interrupted "
                                f"({type(exc).__name__}: {exc})",
                                hint="run the command again") from None
        if isinstance(exc, OSError):
            raise os_error(exc, url, str(folder)) from None
        raise
    return tmp


def _preflight(url: str) -> None:
    """One HEAD before the transfer, so an unreachable host or a 404 fails at once.

    ``http_get`` retries a failed connection five times, a second apart; that
    suits a dropped transfer, not a host that cannot be reached at all. Other
    statuses are left to the GET (signed storage URLs may refuse HEAD).
    """
    import httpx2
    from huggingface_hub.utils import get_session

    try:
        response = get_session().head(url, follow_redirects=True, timeout=PREFLIGHT_TIMEOUT_S,
                                      headers={"user-agent": f"{LIBRARY_NAME}/{__version__}"})
    except (httpx2.ConnectError, httpx2.ConnectTimeout) as exc:
        raise HostUnreachable(str(exc)) from None
    if response.status_code == HTTP_NOT_FOUND:
        raise NotFoundOnHost(response.status_code)


def verify_download(tmp: Path, expected: str | None, url: str) -> str:
    """The sha256 of a fresh download; the file is deleted if it differs from ``expected``."""
    digest = sha256_file(tmp)
    if expected is not None and digest != expected:
        tmp.unlink(missing_ok=True)
        raise ChecksumMismatchError(
            f"{url} has sha256 {digest}, expected {expected}; the file was removed",
            hint="run the command again; if this repeats, the server does not serve the registered file")
    return digest


def store_lock(name: str) -> Any:
    """An inter-process lock (huggingface_hub's ``WeakFileLock``) in our store's ``.locks``."""
    from huggingface_hub.utils import WeakFileLock

    folder = locks_dir()
    with cache_writes(folder):
        folder.mkdir(parents=True, exist_ok=True)
        lock_file = folder / f"{name}.lock"
        lock_file.touch(exist_ok=True)
    return WeakFileLock(lock_file)


def bar_class(progress: bool) -> Any:
    """huggingface_hub's tqdm (on stderr, off when not a TTY), or a silent stand-in."""
    from huggingface_hub.utils import silent_tqdm, tqdm

    return tqdm if progress else silent_tqdm


def http_error(exc: Any, where: str) -> ElirError:
    """A one-line error for an ``HfHubHTTPError`` (401/403: a token hint)."""
    status = exc.response.status_code
    if status in (HTTP_UNAUTHORIZED, HTTP_FORBIDDEN):
        return DownloadError(f"{where} refused access (HTTP {status})",
                             hint="set HF_TOKEN to a token with read access (or run `hf auth login`)")
    if status == HTTP_NOT_FOUND:
        return DownloadError(f"{where} has no such file (HTTP {status})")
    return DownloadError(f"{where} answered HTTP {status}", hint="try again later")


def os_error(exc: OSError, where: str, folder: str) -> ElirError:
    """A one-line error for an OS error during a transfer: disk, truncation or connection."""
    cache_error = cache_error_from_oserror(exc, Path(folder))
    if cache_error is not None:
        return cache_error
    if TRUNCATION_MARK in str(exc):
        return DownloadError(f"the download of {where} was cut short (the server sent fewer bytes "
                             "than announced); the partial file was discarded",
                             hint="run the command again")
    if exc.errno in (errno.ECONNRESET, errno.ECONNREFUSED):
        return DownloadError(f"the connection for {where} failed: {exc.strerror}",
                             hint="check your connection and run the command again")
    return DownloadError(f"the download of {where} failed: {exc}")
