"""Folders on object storage: a distributed batch whose SRC or DST is a URL (s3://, gs://, ...).

Any file system pyarrow opens from a URL (``pyarrow.fs.FileSystem.from_uri``,
the file systems Ray Data reads: S3, GCS, HDFS, ``file://``) can hold the input
tree, the output tree or both; a plain path beside a URL is opened as pyarrow's
local file system. pyarrow comes with Ray Data, so the extra adds nothing.
Credentials and endpoints are the file system's own: for S3, the AWS
variables and files (``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, ``AWS_REGION``,
``AWS_ENDPOINT_URL`` for an S3-compatible server) or the URL's query
(``s3://bucket/in?endpoint_override=host:9000&scheme=http``).

The plan is the local batch's: the same discovery by content (each file's
first bytes), the same output names (:func:`elir_cli.pipeline.batch.output_names`),
the same skip-if-done rule (an output under any image suffix counts), against
one listing of the output tree. The driver opens the file systems once and
ships them to the workers (pyarrow file systems pickle with their options).

Writes appear whole or not at all. On object stores (S3, GCS) an output is
one upload of the encoded bytes, and the object becomes visible only when the
upload completes (pyarrow uploads to S3 as a multipart upload and the object
appears at CompleteMultipartUpload, after every part; a worker killed before
that leaves no object, only an incomplete upload that the bucket's lifecycle
rule cleans). Elsewhere the bytes go to a hidden temporary name in the output's
folder and are moved to the final name. An existing output is never replaced
unless --overwrite (checked just before the write: object stores have no
no-clobber rename).
"""

from __future__ import annotations

import posixpath
import secrets
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from elir_cli.errors import ElirError, UsageError, first_line
from elir_cli.images.read import HEADER_BYTES, format_named_by, is_image_data
from elir_cli.pipeline.batch import output_names
from .cluster import INSTALL_HINT, RayUnavailableError, is_url

# File systems where a write is one upload that appears whole at its end (no rename needed).
OBJECT_STORES = ("s3", "gcs")
TEMP_TOKEN_BYTES = 6
CREDENTIALS_HINT = ("check the URL and the storage's credentials (for S3: AWS_PROFILE or AWS_ACCESS_KEY_ID/"
                    "AWS_SECRET_ACCESS_KEY, AWS_REGION, and AWS_ENDPOINT_URL for an S3-compatible server)")


class StorageError(ElirError):
    """A folder URL cannot be opened, listed, read or written."""


@dataclass(frozen=True)
class Folder:
    """A folder on a pyarrow file system: ``fs`` and the path inside it; ``url`` as the user gave it."""

    url: str
    fs: Any  # pyarrow.fs.FileSystem
    root: str

    @property
    def object_store(self) -> bool:
        return self.fs.type_name in OBJECT_STORES

    def path(self, relative: str) -> str:
        return posixpath.join(self.root, relative) if relative else self.root

    def show(self, relative: str) -> str:
        """What the user sees for a file in this folder: the folder's URL (or path) and the relative path."""
        return f"{self.url.rstrip('/')}/{relative}"


def open_folder(location: str) -> Folder:
    """A URL or a local path as a :class:`Folder` (a local path: pyarrow's local file system)."""
    try:
        from pyarrow import ArrowInvalid
        from pyarrow.fs import FileSystem, LocalFileSystem
    except ImportError as exc:  # pyarrow comes with Ray Data
        raise RayUnavailableError(f"--engine ray needs Ray Data, which is not installed ({exc})",
                                  hint=INSTALL_HINT) from None

    if not is_url(location):
        return Folder(url=location, fs=LocalFileSystem(), root=str(Path(location).resolve()))
    finalize_at_exit()
    try:
        fs, root = FileSystem.from_uri(location)
    except (ArrowInvalid, ValueError) as exc:  # an unknown scheme, a malformed URL
        raise UsageError(f"cannot open {location}: {first_line(exc)}",
                         hint="SRC and DST are local folders or URLs of a file system pyarrow reads "
                              "(s3://, gs://, hdfs://, file://)") from None
    except OSError as exc:  # credentials, a bucket whose region cannot be found, the network
        raise StorageError(f"cannot open {location}: {first_line(exc)}", hint=CREDENTIALS_HINT) from None
    return Folder(url=location, fs=fs, root=root.rstrip("/"))


def finalize_at_exit() -> None:
    """Shut pyarrow's S3 client down before the interpreter does (else the process may crash at exit)."""
    import atexit

    from pyarrow.fs import finalize_s3

    atexit.unregister(finalize_s3)
    atexit.register(finalize_s3)


@dataclass(frozen=True)
class RemoteItem:
    """One input of a batch on a :class:`Folder` and its output name (relative, without suffix)."""

    relative: str
    output: str


def plan_folders(src: Folder, dst: Folder, *, suffix: str = "") -> list[RemoteItem]:
    """:func:`elir_cli.pipeline.batch.plan_batch` for folders on pyarrow file systems (images only)."""
    same_fs = src.fs.equals(dst.fs)
    if same_fs and src.root == dst.root:
        raise UsageError("the output folder is the input folder", hint="choose another -o folder")
    if same_fs and _inside(src.root, dst.root):
        raise UsageError("the input folder is inside the output folder; outputs could replace inputs",
                         hint="choose an -o folder outside the input folder")
    exclude = dst.root if same_fs and _inside(dst.root, src.root) else None
    listed = _list(src, exclude=exclude)
    _check_output_folder(dst)  # before reading every file's head
    found = [rel for rel in listed if _is_image(src, rel)]
    names = output_names([PurePosixPath(rel) for rel in found], suffix=suffix)
    return [RemoteItem(relative=rel, output=name.as_posix()) for rel, name in zip(found, names)]


def list_images(folder: Folder) -> list[str]:
    """Every image under ``folder`` (relative paths, by content, sorted as the local walk), no hidden names."""
    return [rel for rel in _list(folder, exclude=None) if _is_image(folder, rel)]


def existing_outputs(dst: Folder) -> set[str]:
    """Every file under ``dst`` (relative paths), listed once for the skip-if-done rule."""
    return set(_list(dst, exclude=None, missing_ok=True))


def finished_output(name: str, existing: set[str]) -> str | None:
    """The output already written for ``name`` (relative, without suffix), if any."""
    from elir_cli.images.write import SUFFIX_FORMATS

    return next((name + s for s in SUFFIX_FORMATS if name + s in existing), None)


def finished_output_on(dst: Folder, name: str) -> str | None:
    """:func:`finished_output`, asked of the storage itself (a worker, just before it writes)."""
    from pyarrow.fs import FileType

    from elir_cli.images.write import SUFFIX_FORMATS

    candidates = [name + s for s in SUFFIX_FORMATS]
    infos = dst.fs.get_file_info([dst.path(c) for c in candidates])
    return next((c for c, info in zip(candidates, infos) if info.type == FileType.File), None)


def read_bytes(folder: Folder, relative: str) -> bytes:
    with folder.fs.open_input_file(folder.path(relative)) as handle:
        return handle.read()


def write_new(folder: Folder, relative: str, data: bytes, *, overwrite: bool) -> str:
    """Store ``data`` at ``relative`` atomically (see the module's docstring); return what the user sees."""
    from elir_cli.errors import OutputExistsError

    from pyarrow.fs import FileType

    target = folder.path(relative)
    if not overwrite and folder.fs.get_file_info(target).type != FileType.NotFound:
        raise OutputExistsError(f"output {folder.show(relative)} already exists",
                                hint="pass --overwrite to replace it, or choose another name")
    parent, name = posixpath.split(target)
    try:
        if folder.object_store:  # one upload; the object appears when it completes
            _upload(folder.fs, target, data)
        else:
            folder.fs.create_dir(parent, recursive=True)
            temp = posixpath.join(parent, f".{name}.{secrets.token_hex(TEMP_TOKEN_BYTES)}.tmp")
            try:
                _upload(folder.fs, temp, data)
                folder.fs.move(temp, target)
            finally:
                if folder.fs.get_file_info(temp).type != FileType.NotFound:
                    folder.fs.delete_file(temp)
    except OSError as exc:
        raise StorageError(f"cannot write {folder.show(relative)}: {first_line(exc)}") from exc
    return folder.show(relative)


def _upload(fs: Any, path: str, data: bytes) -> None:
    stream = fs.open_output_stream(path)
    stream.write(data)
    stream.close()  # S3/GCS: the upload completes here, and only here does the object exist


def _check_output_folder(dst: Folder) -> None:
    """The output's bucket (object stores) must exist and be reachable: fail before any work."""
    from pyarrow.fs import FileType

    top = dst.root.split("/", 1)[0] if dst.object_store else dst.root
    try:
        info = dst.fs.get_file_info(top)
    except OSError as exc:
        raise StorageError(f"cannot use the output folder {dst.url}: {first_line(exc)}",
                           hint=CREDENTIALS_HINT) from None
    if dst.object_store and info.type == FileType.NotFound:
        raise StorageError(f"the output bucket {top!r} of {dst.url} does not exist (or is not visible with "
                           "these credentials)", hint="create the bucket first, or check the URL")
    if info.type == FileType.File:
        raise UsageError(f"{dst.url} is a file, not a folder", hint="give a folder with -o")


def _list(folder: Folder, *, exclude: str | None, missing_ok: bool = False) -> list[str]:
    """Files under ``folder`` (relative, sorted as the local walk sorts them), no hidden names."""
    from pyarrow.fs import FileSelector, FileType

    try:
        infos = folder.fs.get_file_info(FileSelector(folder.root, recursive=True, allow_not_found=missing_ok))
    except FileNotFoundError:
        raise UsageError(f"{folder.url} is not a folder (nothing is there)",
                         hint="check the URL; elir batch takes a folder") from None
    except OSError as exc:
        raise StorageError(f"cannot list {folder.url}: {first_line(exc)}", hint=CREDENTIALS_HINT) from None
    files = []
    for info in infos:
        if info.type != FileType.File or (exclude is not None and _inside(info.path, exclude)):
            continue
        relative = posixpath.relpath(info.path, folder.root)
        if not any(part.startswith(".") for part in relative.split("/")):
            files.append(relative)
    # The local walk: a folder's files (sorted), then its sub-folders (sorted), depth first.
    return sorted(files, key=lambda rel: (*[(1, p) for p in rel.split("/")[:-1]], (0, rel.split("/")[-1])))


def _is_image(folder: Folder, relative: str) -> bool:
    """As :func:`elir_cli.images.read.is_image_or_claims_to_be`: by content (the first bytes,
    Pillow for weak magics), or by a name that says image, so the batch reports a damaged file."""
    if format_named_by(relative) is not None:
        return True
    try:
        with folder.fs.open_input_file(folder.path(relative)) as handle:
            head = handle.read(HEADER_BYTES)
        return is_image_data(head, lambda: read_bytes(folder, relative))
    except OSError:  # unreadable: not something we can offer as an image
        return False


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")
