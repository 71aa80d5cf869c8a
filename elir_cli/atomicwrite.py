"""Atomic, no-clobber file writing.

An output appears whole or not at all: the bytes go to a temporary file in the
destination folder, are flushed to disk, and only then take the final name
(``os.link`` when the name must not exist yet, ``os.replace`` when overwriting
is allowed). An output never replaces the file it was made from.
"""

from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path

from .errors import ImageError, OutputExistsError

NEW_FILE_MODE = 0o666  # the umask applies, as for any new file
TEMP_TOKEN_BYTES = 6
_LINK_UNSUPPORTED = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS}


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name the same file (same resolved path, or same inode)."""
    pa, pb = Path(a), Path(b)
    if pa.resolve() == pb.resolve():
        return True
    try:
        return os.path.samefile(pa, pb)
    except OSError:  # one of them does not exist: then they cannot be the same file
        return False


def check_destination(
    path: str | os.PathLike[str], *, overwrite: bool, source_path: str | os.PathLike[str] | None
) -> Path:
    """Raise :class:`ImageError` if ``path`` may not be written; return it as a Path."""
    target = Path(path)
    if source_path is not None and same_file(target, source_path):
        raise ImageError(
            f"output {target} is the input file; refusing to replace it",
            hint="write to another folder (-o) or add a suffix to the output name",
        )
    if target.is_dir():
        raise ImageError(f"output {target} is a folder", hint="give a file name, not a folder")
    if target.exists() and not overwrite:
        raise OutputExistsError(
            f"output {target} already exists", hint="pass --overwrite to replace it, or choose another name"
        )
    return target


def write_bytes_atomic(
    path: str | os.PathLike[str],
    data: bytes,
    *,
    overwrite: bool = False,
    source_path: str | os.PathLike[str] | None = None,
) -> Path:
    """Write ``data`` to ``path`` atomically; create missing parent folders.

    Refuses (``ImageError``) to replace ``source_path`` and, unless ``overwrite``,
    any existing file (``OutputExistsError``). On any failure no file is left
    behind: neither a partial output nor the temporary file.
    """
    target = check_destination(path, overwrite=overwrite, source_path=source_path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImageError(f"cannot create folder {target.parent}: {exc.strerror}") from exc
    temp = target.parent / f".{target.name}.{secrets.token_hex(TEMP_TOKEN_BYTES)}.tmp"
    try:
        _write_and_sync(temp, data)
        if overwrite:
            os.replace(temp, target)
        else:
            _link_no_clobber(temp, target)
    except OSError as exc:
        raise ImageError(f"cannot write {target}: {exc.strerror or exc}") from exc
    finally:
        if temp.exists():
            temp.unlink()
    return target


def _write_and_sync(temp: Path, data: bytes) -> None:
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), NEW_FILE_MODE)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _link_no_clobber(temp: Path, target: Path) -> None:
    """Give ``temp`` the name ``target`` only if nothing has that name (atomic where links work)."""
    try:
        os.link(temp, target)
    except FileExistsError as exc:
        raise OutputExistsError(
            f"output {target} already exists", hint="pass --overwrite to replace it, or choose another name"
        ) from exc
    except OSError as exc:
        if exc.errno not in _LINK_UNSUPPORTED:
            raise
        if target.exists():  # file systems without hard links: check, then rename
            raise OutputExistsError(
                f"output {target} already exists", hint="pass --overwrite to replace it, or choose another name"
            ) from exc
        os.replace(temp, target)
