"""Publishing the weights to a hub repo, for the maintainers (``elir models publish``).

The authors' five release ``.pth`` files (from a folder, or downloaded through
the release path of :mod:`.release`) are each read safely, checked against
their task's tensor shapes (:func:`.fit.check_task_fit`) and converted to our
``.safetensors`` under the file names the manifest's hub entries expect. A
model card (``README.md``: licence, paper, the task table from the manifest,
the sha256 of every file) joins them in a temporary folder, which
``huggingface_hub.HfApi.upload_folder`` uploads in one commit (the token comes
from the usual places: the argument, ``HF_TOKEN``, ``hf auth login``). The
result holds what the manifest needs, the commit hash and each file's sha256,
ready to print or to write into the manifest.

Nothing reaches the hub until every file has been checked and converted; the
temporary folder is removed whatever happens. The same input files always
give the same output bytes, so a second publish of them is a no-op commit.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from elir_cli._version import __version__
from elir_cli.atomicwrite import write_bytes_atomic
from elir_cli.errors import (
    CheckpointError,
    DownloadError,
    ElirError,
    StateDictMismatchError,
    UploadError,
    UsageError,
)
from .release import (
    LIBRARY_NAME,
    RELEASE_ENDPOINT_ENV,
    HTTP_FORBIDDEN,
    HTTP_UNAUTHORIZED,
    HostUnreachable,
    NotFoundOnHost,
    fetch_url,
    release_url,
    verify_download,
)
from .store import hub_endpoint, is_offline, sha256_file
from .tasks import TaskManifest, Task, load_manifest, manifest_path

if TYPE_CHECKING:
    from elir_cli.model.checkpoint import Checkpoint

Step = Callable[[str], None]

CARD_NAME = "README.md"
DEFAULT_BRANCH = "main"
DEFAULT_HUB_URL = "https://huggingface.co"
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
STAGE_PREFIX = "elir-publish-"
MESSAGE_LIMIT = 200
MANIFEST_INDENT = 2
CARD_TAGS = ("image-restoration", "face-restoration", "super-resolution", "flow-matching", "elir")
PAPER_TITLE = "Efficient Image Restoration via Latent Consistency Flow Matching"
PAPER_AUTHORS = "Elad Cohen, Idan Achituve, Idit Diamant, Arnon Netzer, Hai Victor Habi"
PAPER_ARXIV = "2502.03500"
AUTHORS_CODE = "https://github.com/eladc-git/ELIR"
PAPER_BIBTEX = """@inproceedings{cohen2025elir,
  title         = {Efficient Image Restoration via Latent Consistency Flow Matching},
  author        = {Cohen, Elad and Achituve, Idan and Diamant, Idit and Netzer, Arnon and Habi, Hai Victor},
  booktitle     = {British Machine Vision Conference (BMVC)},
  year          = {2025},
  eprint        = {2502.03500},
  archivePrefix = {arXiv}
}"""


@dataclass(frozen=True)
class PublishedFile:
    """One converted weights file: what the manifest and the model card say of it."""

    task: str
    filename: str
    sha256: str
    size: int
    source_name: str  # the authors' release file it was converted from
    source_sha256: str


@dataclass(frozen=True)
class Publication:
    """The outcome of a publish: where the files went and their hashes."""

    repo_id: str
    revision: str | None  # the commit hash the upload returned; None for a dry run
    commit_url: str | None
    files: tuple[PublishedFile, ...]

    def manifest_entries(self) -> dict[str, Any]:
        """The manifest's ``hub`` section and each task's ``sources.hub`` entry, ready to paste."""
        return {
            "hub": {"repo_id": self.repo_id, "revision": self.revision},
            "tasks": {f.task: {"sources": {"hub": {"filename": f.filename, "sha256": f.sha256}}}
                      for f in self.files},
        }


# -- the whole job ---------------------------------------------------------------------

def publish_weights(repo_id: str, *, source_dir: str | os.PathLike[str] | None = None,
                    branch: str = DEFAULT_BRANCH, token: str | None = None, dry_run: bool = False,
                    progress: bool = False, on_step: Step | None = None) -> Publication:
    """Convert the authors' release files, write the model card and upload both to ``repo_id``.

    ``source_dir`` holds the five release ``.pth`` files under their release
    names; without it they are downloaded from the release URLs of the manifest
    (``$ELIR_RELEASE_ENDPOINT`` applies). ``dry_run`` checks and converts
    everything and uploads nothing (no token needed). The repo is created if
    missing, and ``branch`` if it is not ``main``.
    """
    step = on_step or (lambda message: None)
    check_repo_id(repo_id)
    manifest = load_manifest()
    tasks = list(manifest.tasks.values())
    source = Path(source_dir) if source_dir is not None else None
    if source is not None:
        check_source_dir(source, tasks)
    if not dry_run and is_offline():
        raise UsageError("HF_HUB_OFFLINE is set, and publishing needs the hub",
                         hint="unset HF_HUB_OFFLINE, or check the files with --dry-run")
    api = None if dry_run else hub_api(resolve_token(token))
    if api is not None:
        check_write_access(api, repo_id, step)  # a bad token fails now, not after the conversions
    stage = _make_stage()
    try:
        with _staging_errors(stage):
            files = stage_weights(stage, tasks, source, progress=progress, step=step)
            (stage / CARD_NAME).write_text(model_card(manifest, files), encoding="utf-8")
        if api is None:
            return Publication(repo_id=repo_id, revision=None, commit_url=None, files=files)
        revision, url = upload_stage(api, stage, repo_id, branch=branch, files=files, step=step)
        return Publication(repo_id=repo_id, revision=revision, commit_url=url, files=files)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _make_stage() -> Path:
    try:
        return Path(tempfile.mkdtemp(prefix=STAGE_PREFIX))
    except OSError as exc:
        raise UsageError(f"cannot make a temporary folder in {tempfile.gettempdir()}: {exc.strerror or exc}",
                         hint="point TMPDIR at a writable folder with room for the five files") from None


@contextmanager
def _staging_errors(stage: Path) -> Iterator[None]:
    """A full or read-only disk while converting is a one-line error, not a traceback."""
    try:
        yield
    except ElirError:
        raise
    except OSError as exc:
        raise UsageError(f"cannot write the converted files in {stage.parent}: {exc.strerror or exc}",
                         hint="point TMPDIR at a writable folder with room for the five files") from None


def check_repo_id(repo_id: str) -> None:
    """``ORG/NAME`` with the hub's characters, else a :class:`UsageError`."""
    if not REPO_ID.match(repo_id) or ".." in repo_id or repo_id.endswith((".git", ".")):
        raise UsageError(f"{repo_id!r} is not a hub repo id",
                         hint="give it as ORG/NAME, e.g. --repo elir-cli/elir")


def resolve_token(token: str | None) -> str:
    """The token to upload with: the argument, else ``HF_TOKEN``, else the saved login."""
    if token:
        return token
    from huggingface_hub import get_token

    found = get_token()
    if not found:
        raise UsageError("publishing needs a Hugging Face token with write access",
                         hint="set HF_TOKEN, run `hf auth login`, or pass --token")
    return found


# -- the authors' files ---------------------------------------------------------------------

def release_filename(task: Task) -> str:
    """The authors' file name of a task: the last part of its release URL."""
    return PurePosixPath(urlsplit(task.release_url).path).name


def check_source_dir(folder: Path, tasks: list[Task]) -> None:
    """The folder exists and holds a file under every task's release name."""
    if not folder.is_dir():
        raise UsageError(f"--from {folder} is not a folder",
                         hint="give the folder that holds the authors' release .pth files")
    missing = [release_filename(t) for t in tasks if not (folder / release_filename(t)).is_file()]
    if missing:
        raise UsageError(f"--from {folder} lacks {', '.join(missing)}",
                         hint="it must hold the authors' release files under their release names: "
                              + ", ".join(release_filename(t) for t in tasks))


def stage_weights(stage: Path, tasks: list[Task], source: Path | None, *, progress: bool,
                  step: Step) -> tuple[PublishedFile, ...]:
    """Each task's release file, checked and converted into ``stage``; one file per task."""
    seen: dict[str, str] = {}  # source sha256 -> file name: one file filed under two tasks is a mistake
    files = []
    for t in tasks:
        name = release_filename(t)
        if source is not None:
            path = source / name
            files.append(_convert(stage, t, path, name, tasks, seen, step))
            continue
        url = release_url(t.release_url)
        step(f"downloading {url}")
        tmp = _download_release(t, url, progress)
        try:
            verify_download(tmp, t.release_sha256, url)
            files.append(_convert(stage, t, tmp, name, tasks, seen, step))
        finally:
            tmp.unlink(missing_ok=True)
    return tuple(files)


def _download_release(t: Task, url: str, progress: bool) -> Path:
    try:
        return fetch_url(url, progress, what=f"the release file of task {t.name!r}")
    except HostUnreachable:
        raise DownloadError(f"the release host of {url} cannot be reached",
                            hint=f"check your connection (and ${RELEASE_ENDPOINT_ENV}), or give the files "
                                 "with --from DIR") from None
    except NotFoundOnHost as exc:
        raise DownloadError(f"the release file of task {t.name!r} is missing at {url} (HTTP {exc.status})",
                            hint=f"check ${RELEASE_ENDPOINT_ENV}, or give the files with --from DIR") from None


def _convert(stage: Path, t: Task, path: Path, name: str, tasks: list[Task], seen: dict[str, str],
             step: Step) -> PublishedFile:
    from elir_cli.model.checkpoint import read_checkpoint, save_safetensors

    from .fit import check_task_fit

    digest = sha256_file(path)
    if digest in seen:
        raise CheckpointError(f"{name} and {seen[digest]} are the same file",
                              hint="each task has its own release file; check the files you gave")
    seen[digest] = name
    label = f"{name} (task {t.name})"
    ckpt = read_checkpoint(path)
    try:
        config = check_task_fit(ckpt, t.name, source=label)
    except StateDictMismatchError as exc:
        fits = [other.name for other in tasks if other.name != t.name and _fits(ckpt, other)]
        if fits:
            exc.hint = f"its tensors fit task {' / '.join(fits)}: is the file misnamed?"
        raise
    target = stage / t.hub_filename
    # The canonical release URL (not a mirror's) as the source: the same input
    # gives the same bytes, whichever way it came.
    save_safetensors(target, ckpt.state_dict, config, task=t.name,
                     extra_metadata={"source": t.release_url, "source_sha256": digest})
    published = PublishedFile(task=t.name, filename=t.hub_filename, sha256=sha256_file(target),
                              size=target.stat().st_size, source_name=name, source_sha256=digest)
    step(f"{name} fits task {t.name}: {t.hub_filename} sha256 {published.sha256}")
    return published


def _fits(ckpt: "Checkpoint", task: Task) -> bool:
    from .fit import check_task_fit

    try:
        check_task_fit(ckpt, task.name)
    except ElirError:
        return False
    return True


# -- the model card -----------------------------------------------------------------------------

def model_card(manifest: TaskManifest, files: tuple[PublishedFile, ...]) -> str:
    """``README.md`` for the repo: front matter, the task table, the files and their sha256, the paper."""
    from huggingface_hub import ModelCardData

    from elir_cli.model.checkpoint import HEADER_KEY

    licences = {t.licence for t in manifest.tasks.values()}
    licence = licences.pop().lower() if len(licences) == 1 else "other"
    front = ModelCardData(license=licence, library_name=LIBRARY_NAME, pipeline_tag="image-to-image",
                          tags=list(CARD_TAGS)).to_yaml()
    by_task = {f.task: f for f in files}
    lines = [
        "---", front, "---", "",
        "# ELIR weights for elir-cli", "",
        f"The released models of *{PAPER_TITLE}* ({PAPER_AUTHORS}; BMVC 2025, "
        f"[arXiv:{PAPER_ARXIV}](https://arxiv.org/abs/{PAPER_ARXIV})), converted from the authors' "
        f"release `.pth` files ({AUTHORS_CODE}) to `.safetensors` by elir-cli {__version__}. "
        "The weights are the authors', unchanged (names, shapes, dtypes and values); each file "
        "records its task and settings (K, sigma_s, architecture) in its metadata, and once more in one "
        f"small uint8 tensor, `{HEADER_KEY}`, for loaders that keep only tensors (spandrel, ComfyUI).", "",
        "## Tasks", "",
        "| task | title | restores | input | scale | K | sigma_s | parameters | file |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for t in manifest.tasks.values():
        lines.append(f"| {t.name} | {t.title} | {t.restores} | {t.input_size} | x{t.scale} | "
                     f"{t.model.k_steps} | {t.model.sigma_s} | {t.parameters:,} | `{by_task[t.name].filename}` |")
    lines += ["", "## Files", "",
              "| file | bytes | sha256 | converted from | sha256 of the release file |",
              "| --- | --- | --- | --- | --- |"]
    for f in files:
        lines.append(f"| `{f.filename}` | {f.size:,} | `{f.sha256}` | `{f.source_name}` | `{f.source_sha256}` |")
    lines += ["", "## Use", "", "```bash", "pip install elir-cli",
              "elir restore photo.jpg            # bfr, the default task",
              "elir restore photo.jpg --task bsr", "```", "",
              "elir-cli downloads these files at the commit its manifest pins and checks each "
              "against the sha256 above.", "",
              "## Licence", "",
              f"{manifest_licence(manifest)}. The weights are the work of the paper's authors "
              f"({AUTHORS_CODE}).", "",
              "## Citation", "", "```bibtex", PAPER_BIBTEX, "```", ""]
    return "\n".join(lines)


def manifest_licence(manifest: TaskManifest) -> str:
    """The manifest's licence line (falls back to the tasks' licence)."""
    data = json.loads(manifest.path.read_text(encoding="utf-8"))
    return str(data.get("licence") or next(iter(manifest.tasks.values())).licence)


# -- the upload ---------------------------------------------------------------------------------

def hub_api(token: str) -> Any:
    """An ``HfApi`` for ``$HF_ENDPOINT`` (else the Hugging Face Hub) with ``token``."""
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub_endpoint() or DEFAULT_HUB_URL, token=token, library_name=LIBRARY_NAME,
                 library_version=__version__)


def check_write_access(api: Any, repo_id: str, step: Step) -> None:
    """Ask the hub who the token belongs to; a refused or read-only token is an error now."""
    with _hub_errors(api, repo_id):
        who = api.whoami(cache=False)
    role = (who.get("auth") or {}).get("accessToken", {}).get("role")
    if role == "read":
        raise UploadError(f"the token of {who.get('name', 'this user')} is read-only: it cannot upload to {repo_id}",
                          hint="use a token with write access: HF_TOKEN, `hf auth login` or --token")
    step(f"uploading as {who.get('name', '?')} to {api.endpoint}")


def upload_stage(api: Any, stage: Path, repo_id: str, *, branch: str,
                 files: tuple[PublishedFile, ...], step: Step) -> tuple[str, str]:
    """Create the repo (and branch) if missing and upload the folder in one commit."""
    description = "\n".join(f"{f.filename} sha256 {f.sha256} (from {f.source_name} sha256 {f.source_sha256})"
                            for f in files)
    with _hub_errors(api, repo_id):
        step(f"creating {repo_id} if missing")
        api.create_repo(repo_id, exist_ok=True)
        if branch != DEFAULT_BRANCH:
            api.create_branch(repo_id, branch=branch, exist_ok=True)
        step(f"uploading {len(files) + 1} files to {repo_id}@{branch}")
        info = api.upload_folder(repo_id=repo_id, folder_path=stage, revision=branch,
                                 commit_message=f"ELIR weights converted by elir-cli {__version__}",
                                 commit_description=description)
    return str(info.oid), str(info.commit_url)


@contextmanager
def _hub_errors(api: Any, repo_id: str) -> Iterator[None]:
    """huggingface_hub's and the network's errors as one-line :class:`UploadError`."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    try:
        yield
    except HfHubHTTPError as exc:
        raise _upload_http_error(exc, repo_id) from None
    except (httpx2.ConnectError, httpx2.ConnectTimeout):
        raise UploadError(f"cannot reach the hub at {api.endpoint}",
                          hint="check your connection (and HF_ENDPOINT); nothing was uploaded") from None
    except httpx2.HTTPError as exc:
        raise UploadError(f"the upload to {repo_id} was interrupted ({type(exc).__name__}: {exc})",
                          hint="run the command again; files already on the hub are not sent twice") from None
    except ValueError as exc:  # the hub's validation of the model card's metadata
        raise UploadError(f"the hub rejected the upload to {repo_id}: {_first_line(str(exc))}") from None


def _upload_http_error(exc: Any, repo_id: str) -> UploadError:
    status = exc.response.status_code
    org = repo_id.split("/", 1)[0]
    if status in (HTTP_UNAUTHORIZED, HTTP_FORBIDDEN):
        return UploadError(f"the hub refused the upload to {repo_id} (HTTP {status})",
                           hint=f"use a token with write access to {org}: HF_TOKEN, `hf auth login` or --token")
    detail = _first_line(getattr(exc, "server_message", None) or str(exc))
    return UploadError(f"the hub answered HTTP {status} to the upload to {repo_id}: {detail}")


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[0] if lines else "no details")[:MESSAGE_LIMIT]


# -- the manifest ----------------------------------------------------------------------------------

def manifest_target(path: str | os.PathLike[str] | None = None) -> Path:
    """The manifest to write (default: ``$ELIR_MANIFEST`` or the bundled one), checked writable now."""
    target = Path(path) if path is not None else manifest_path()
    if not target.is_file():
        raise UsageError(f"cannot write the manifest {target}: no such file")
    if not (os.access(target, os.W_OK) and os.access(target.parent, os.W_OK)):
        raise UsageError(f"cannot write the manifest {target}: no permission",
                         hint="set ELIR_MANIFEST to a writable copy, or leave out --write-manifest "
                              "and paste the printed entries")
    return target


def write_manifest_entries(publication: Publication, path: str | os.PathLike[str] | None = None) -> Path:
    """Write the publication's repo, revision and sha256 values into the manifest, atomically.

    Only those values change: the key order, the indentation and the final
    newline (or its absence) stay as they were, so the diff is the new values.
    """
    from .tasks import _load_manifest

    if publication.revision is None:
        raise UsageError("a dry run has no revision to write into the manifest")
    target = manifest_target(path)
    text = target.read_text(encoding="utf-8")
    data = json.loads(text)
    entries = publication.manifest_entries()
    data["hub"].update(entries["hub"])
    for name, task in entries["tasks"].items():
        data["tasks"][name]["sources"]["hub"].update(task["sources"]["hub"])
    new = json.dumps(data, indent=_indent_of(text), ensure_ascii=False) + ("\n" if text.endswith("\n") else "")
    try:
        write_bytes_atomic(target, new.encode("utf-8"), overwrite=True)
    except ElirError as exc:
        raise UsageError(f"{exc.message} (the manifest)",
                         hint="paste the printed entries into the manifest by hand") from None
    _load_manifest.cache_clear()
    return target


def _indent_of(text: str) -> int:
    """The indentation of a JSON text: the leading spaces of its first indented line."""
    match = re.search(r"\n( +)\S", text)
    return len(match.group(1)) if match else MANIFEST_INDENT
