"""Local HTTP servers that play the Hugging Face Hub and the authors' release host.

``HubServer`` answers what ``hf_hub_download`` of huggingface_hub 2.x asks
for (read from its ``file_download.py``):

- ``HEAD``/``GET /{repo_id}/resolve/{revision}/{filename}``. Small (non-LFS)
  files answer 200 with ``ETag`` (the git blob sha1), ``Content-Length`` and
  ``X-Repo-Commit``. LFS files answer 302 to a CDN URL on another host name
  (``localhost`` instead of ``127.0.0.1``, so huggingface_hub does not follow
  it during HEAD) with ``X-Linked-Etag`` (the sha256), ``X-Linked-Size`` and
  ``X-Repo-Commit``, exactly as the real hub does.
- errors with the hub's ``X-Error-Code`` header: ``RepoNotFound`` (401, as the
  real hub answers anonymous clients), ``GatedRepo`` (401), a wrong token (401, "Invalid credentials in
  Authorization header"),
  ``RevisionNotFound`` (404) and ``EntryNotFound`` (404, with
  ``X-Repo-Commit`` so the miss is cached in ``.no_exist``).
- the CDN honours ``Range: bytes=N-`` (206 + ``Content-Range``), which is how
  huggingface_hub resumes a transfer that broke.

Per-file ``faults`` make the transfer misbehave: ``"drop_once"`` (the first
GET announces the full length, stops 1 MB short and closes the connection),
``"short"`` (announces and sends fewer bytes than ``X-Linked-Size``),
``"slow"`` (sends in small chunks with pauses, so concurrent clients overlap).

``ReleaseServer`` plays GitHub releases: ``GET /{owner}/{repo}/releases/
download/{tag}/{name}`` redirects (302) to ``/objects/{n}``, which serves the
bytes with the same Range support and faults.

Every request is appended to ``server.log`` as ``(method, path, status)``.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

SLOW_CHUNK = 256 * 1024
# huggingface_hub reads in 10 MB chunks and resumes from the last whole chunk, so a
# drop must come late in the body for a resumed (206) request to be observable.
DROP_TAIL_BYTES = 1_000_000
SLOW_PAUSE_S = 0.02
RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
RANGE = re.compile(r"^bytes=(?P<start>\d+)-$")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    gated: bool = False
    token: str | None = None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Base:
    """Threaded server lifecycle, request log, byte serving with faults."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str, int]] = []
        self.faults: dict[str, str] = {}
        self._dropped: set[str] = set()
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - silence stderr
                return

            def do_HEAD(self) -> None:  # noqa: N802
                owner._handle(self, head=True)

            def do_GET(self) -> None:  # noqa: N802
                owner._handle(self, head=False)

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "_Base":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def count(self, method: str, path_part: str = "") -> int:
        with self._lock:
            return sum(1 for m, p, _ in self.log if m == method and path_part in p)

    # -- helpers for subclasses ---------------------------------------------------
    def _record(self, handler: BaseHTTPRequestHandler, status: int) -> None:
        with self._lock:
            self.log.append((handler.command, handler.path, status))

    def _reply(self, handler: BaseHTTPRequestHandler, status: int, headers: dict[str, str],
               body: bytes = b"", head: bool = False) -> None:
        self._record(handler, status)
        handler.send_response(status)
        for k, v in headers.items():
            handler.send_header(k, v)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if not head and body:
            handler.wfile.write(body)

    def _serve_bytes(self, handler: BaseHTTPRequestHandler, data: bytes, key: str, head: bool,
                     extra: dict[str, str]) -> None:
        fault = self.faults.get(key)
        start = 0
        match = RANGE.match(handler.headers.get("Range", ""))
        if match:
            start = int(match["start"])
        body = data[start:]
        status = 206 if match else 200
        headers = dict(extra)
        headers["Accept-Ranges"] = "bytes"
        if match:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        if fault == "short":
            body = body[: len(body) // 2]
        self._record(handler, status)
        handler.send_response(status)
        for k, v in headers.items():
            handler.send_header(k, v)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if head:
            return
        if fault == "drop_once" and not head:
            with self._lock:
                first = key not in self._dropped
                self._dropped.add(key)
            if first:
                handler.wfile.write(body[: max(len(body) - DROP_TAIL_BYTES, len(body) // 2)])
                handler.wfile.flush()
                handler.close_connection = True
                return
        if fault == "slow":
            for i in range(0, len(body), SLOW_CHUNK):
                handler.wfile.write(body[i:i + SLOW_CHUNK])
                handler.wfile.flush()
                time.sleep(SLOW_PAUSE_S)
            return
        handler.wfile.write(body)

    def _handle(self, handler: BaseHTTPRequestHandler, head: bool) -> None:
        raise NotImplementedError


class HubServer(_Base):
    """Plays the Hugging Face Hub for ``hf_hub_download`` (see module docstring)."""

    def __init__(self, *, lfs: bool = True) -> None:
        self.repos: dict[str, Repo] = {}
        self.lfs = lfs
        self._blobs: dict[str, bytes] = {}
        super().__init__()

    def add_commit(self, repo_id: str, files: dict[str, bytes], *, branch: str = "main") -> str:
        """Add a commit holding ``files`` (plus the branch's earlier files); return its sha."""
        repo = self.repos.setdefault(repo_id, Repo())
        parent = repo.commits.get(repo.refs.get(branch, ""), {})
        tree = {**parent, **files}
        digest = hashlib.sha1(repr(sorted((k, hashlib.sha256(v).hexdigest()) for k, v in tree.items()))
                              .encode() + repo_id.encode() + str(len(repo.commits)).encode())
        commit = digest.hexdigest()
        repo.commits[commit] = tree
        repo.refs[branch] = commit
        for data in files.values():
            self._blobs[hashlib.sha256(data).hexdigest()] = data
        return commit

    def _handle(self, handler: BaseHTTPRequestHandler, head: bool) -> None:
        path = urlsplit(handler.path).path
        if path.startswith("/cdn/"):
            sha = path.rsplit("/", 1)[-1]
            data = self._blobs.get(sha)
            if data is None:
                return self._reply(handler, 404, {}, head=head)
            return self._serve_bytes(handler, data, sha, head, {"ETag": f'"{sha}"'})
        match = RESOLVE.match(path)
        if not match:
            return self._reply(handler, 404, {}, head=head)
        repo_id, revision, filename = match["repo"], unquote(match["rev"]), unquote(match["file"])
        repo = self.repos.get(repo_id)
        if repo is None:
            return self._reply(handler, 401, {"X-Error-Code": "RepoNotFound",
                                              "X-Error-Message": "Repository not found"}, head=head)
        auth = handler.headers.get("Authorization")
        if repo.token and auth and auth != f"Bearer {repo.token}":
            return self._reply(handler, 401, {"X-Error-Message": "Invalid credentials in Authorization header"},
                               head=head)
        if repo.gated and auth != f"Bearer {repo.token}":
            return self._reply(handler, 401, {"X-Error-Code": "GatedRepo",
                                              "X-Error-Message": "Access to model is restricted"}, head=head)
        commit = repo.refs.get(revision, revision)
        tree = repo.commits.get(commit)
        if tree is None:
            return self._reply(handler, 404, {"X-Error-Code": "RevisionNotFound",
                                              "X-Error-Message": "Invalid rev id"}, head=head)
        data = tree.get(filename)
        if data is None:
            return self._reply(handler, 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit,
                                              "X-Error-Message": "Entry not found"}, head=head)
        sha256 = hashlib.sha256(data).hexdigest()
        if self.lfs:
            location = f"http://localhost:{self.port}/cdn/{sha256}"
            return self._reply(handler, 302, {
                "Location": location, "X-Repo-Commit": commit, "ETag": f'"{git_blob_sha1(data)}"',
                "X-Linked-Etag": f'"{sha256}"', "X-Linked-Size": str(len(data))}, head=head)
        return self._serve_bytes(handler, data, sha256, head,
                                 {"ETag": f'"{git_blob_sha1(data)}"', "X-Repo-Commit": commit})


class ReleaseServer(_Base):
    """Plays GitHub release downloads (302 to an object URL, then the bytes)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        super().__init__()

    def add(self, path: str, data: bytes) -> str:
        """Serve ``data`` at ``path`` (e.g. ``/owner/repo/releases/download/v1/x.pth``); return the URL."""
        self.files[path] = data
        return self.url + path

    def _handle(self, handler: BaseHTTPRequestHandler, head: bool) -> None:
        path = urlsplit(handler.path).path
        names = list(self.files)
        if path.startswith("/objects/"):
            index = int(path.rsplit("/", 1)[-1])
            key = names[index]
            return self._serve_bytes(handler, self.files[key], key, head,
                                     {"Content-Type": "application/octet-stream"})
        if path in self.files:
            return self._reply(handler, 302, {"Location": f"{self.url}/objects/{names.index(path)}"},
                               head=head)
        return self._reply(handler, 404, {"Content-Type": "text/plain"}, b"Not Found", head=head)
