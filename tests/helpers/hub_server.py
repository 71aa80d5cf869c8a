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

Uploads, as ``HfApi.create_repo`` and ``HfApi.upload_folder`` of
huggingface_hub 2.4 send them (read from its ``hf_api.py``, ``_commit_api.py``
and ``_upload_pipeline.py``), need a write token (``server.write_token``;
none or another token answers 401, one of ``server.read_only_tokens`` 403):

- ``GET /api/whoami-v2``: the token's user and role (``write``, or ``read``
  for the read-only tokens); 401 for any other token.
- ``POST /api/repos/create`` (JSON ``name``/``organization``): 200 with the
  repo URL and a first commit holding ``.gitattributes``; 409 (with the URL)
  when the repo exists, which ``exist_ok=True`` accepts.
- ``GET /api/models/{repo_id}[/revision/{rev}]``: the repo's info (``sha``,
  ``siblings``), which ``create_repo(exist_ok=True)`` and ``repo_info`` read.
- ``POST /api/validate-yaml``: parses the README's front matter (PyYAML); a
  400 with the parser's message when it is not valid YAML.
- ``POST /api/models/{repo_id}/preupload/{rev}``: answers ``uploadMode:
  "regular"`` for every file, so the content comes inline in the commit
  (no LFS or Xet transfer), and the blob oid of a file the revision already
  holds, so unchanged files are left out as on the real hub.
- ``POST /api/models/{repo_id}/commit/{rev}``: an ndjson body (a header line,
  then ``file`` lines with base64 content and ``deletedFile`` lines) becomes
  a new commit on the branch; the answer carries ``commitOid``, which the
  download side then serves like any other commit. Each commit's summary
  is appended to ``server.commit_messages``.
- ``POST /api/models/{repo_id}/branch/{branch}``: a branch from ``main``.

Request bodies are bounded (``server.max_body_bytes``, else 413).

``ReleaseServer`` plays GitHub releases: ``GET /{owner}/{repo}/releases/
download/{tag}/{name}`` redirects (302) to ``/objects/{n}``, which serves the
bytes with the same Range support and faults.

Every request is appended to ``server.log`` as ``(method, path, status)``.
"""

from __future__ import annotations

import base64
import hashlib
import json
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
API_REPO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?$")
API_WRITE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/(?P<op>preupload|commit|branch)/(?P<rev>[^/]+)$")
WRITE_TOKEN = "hf_elir_test_write"
WHOAMI_NAME = "elir-maintainer"
MAX_BODY_BYTES = 256 * 1024 * 1024  # five tiny test models are ~120 MB as base64
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.pth filter=lfs diff=lfs merge=lfs -text\n"


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

            def do_POST(self) -> None:  # noqa: N802
                owner._handle_post(self)

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
        self._reply(handler, status, headers, head=True, body=body)  # the status line and headers only
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
                # On purpose: a slow network, so that a second client starts while the first one
                # downloads. Nothing the test could wait on tells when the second one is waiting
                # (it waits on the first one's file lock, not on this server).
                time.sleep(SLOW_PAUSE_S)
            return
        handler.wfile.write(body)

    def _handle(self, handler: BaseHTTPRequestHandler, head: bool) -> None:
        raise NotImplementedError

    def _handle_post(self, handler: BaseHTTPRequestHandler) -> None:
        self._reply(handler, 405, {"Allow": "GET, HEAD"})


class HubServer(_Base):
    """Plays the Hugging Face Hub for ``hf_hub_download`` (see module docstring)."""

    def __init__(self, *, lfs: bool = True, write_token: str = WRITE_TOKEN) -> None:
        self.repos: dict[str, Repo] = {}
        self.lfs = lfs
        self.write_token = write_token
        self.read_only_tokens: set[str] = set()
        self.max_body_bytes = MAX_BODY_BYTES
        self.commit_messages: list[tuple[str, str]] = []  # (repo_id, summary) of uploaded commits
        self._blobs: dict[str, bytes] = {}
        super().__init__()

    def add_commit(self, repo_id: str, files: dict[str, bytes], *, branch: str = "main",
                   deleted: tuple[str, ...] = ()) -> str:
        """Add a commit holding ``files`` (plus the branch's earlier files); return its sha."""
        repo = self.repos.setdefault(repo_id, Repo())
        parent = repo.commits.get(repo.refs.get(branch, ""), {})
        tree = {k: v for k, v in {**parent, **files}.items() if k not in deleted}
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
        if path == "/api/whoami-v2":
            return self._whoami(handler, head)
        api = API_REPO.match(path)
        if api:
            return self._repo_info(handler, api["repo"], unquote(api["rev"] or "main"), head)
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


    # -- the write API ------------------------------------------------------------------

    def _auth_error(self, handler: BaseHTTPRequestHandler) -> tuple[int, str] | None:
        """(status, message) when the request may not write, else None."""
        auth = handler.headers.get("Authorization", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        if token is None:
            return 401, "Invalid username or password."
        if token in self.read_only_tokens:
            return 403, "You don't have the rights to write to this namespace"
        if token != self.write_token:
            return 401, "Invalid credentials in Authorization header"
        return None

    def _json(self, handler: BaseHTTPRequestHandler, status: int, payload: object,
              headers: dict[str, str] | None = None) -> None:
        self._reply(handler, status, {"Content-Type": "application/json", **(headers or {})},
                    json.dumps(payload).encode())

    def _error(self, handler: BaseHTTPRequestHandler, status: int, message: str,
               code: str | None = None) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._json(handler, status, {"error": message}, headers)

    def _read_body(self, handler: BaseHTTPRequestHandler) -> bytes | None:
        """The request body, or None after answering 411/413 (bodies are bounded)."""
        length = handler.headers.get("Content-Length")
        if length is None:
            handler.close_connection = True
            self._error(handler, 411, "Content-Length required")
            return None
        if int(length) > self.max_body_bytes:
            handler.close_connection = True  # the unread body must not be taken for a request
            self._error(handler, 413, f"body over {self.max_body_bytes} bytes")
            return None
        return handler.rfile.read(int(length))

    def _whoami(self, handler: BaseHTTPRequestHandler, head: bool) -> None:
        token = handler.headers.get("Authorization", "").removeprefix("Bearer ")
        if token not in (self.write_token, *self.read_only_tokens):
            return self._error(handler, 401, "Invalid credentials in Authorization header")
        role = "write" if token == self.write_token else "read"
        self._json(handler, 200, {"type": "user", "name": WHOAMI_NAME, "orgs": [],
                                  "auth": {"type": "access_token", "accessToken": {"role": role}}})

    def _repo_info(self, handler: BaseHTTPRequestHandler, repo_id: str, revision: str, head: bool) -> None:
        repo = self.repos.get(repo_id)
        auth = handler.headers.get("Authorization")
        known = {self.write_token, *self.read_only_tokens, *([repo.token] if repo and repo.token else [])}
        if auth and auth.removeprefix("Bearer ") not in known:
            return self._error(handler, 401, "Invalid credentials in Authorization header")
        if repo is None:
            return self._error(handler, 404, "Repository not found", "RepoNotFound")
        commit = repo.refs.get(revision, revision)
        tree = repo.commits.get(commit)
        if tree is None:
            return self._error(handler, 404, "Invalid rev id", "RevisionNotFound")
        self._json(handler, 200, {"id": repo_id, "modelId": repo_id, "sha": commit, "private": False,
                                  "siblings": [{"rfilename": name} for name in sorted(tree)]})

    def _handle_post(self, handler: BaseHTTPRequestHandler) -> None:
        path = urlsplit(handler.path).path
        body = self._read_body(handler)
        if body is None:
            return
        if path == "/api/validate-yaml":
            return self._validate_yaml(handler, body)
        denied = self._auth_error(handler)
        if denied:
            return self._error(handler, *denied)
        if path == "/api/repos/create":
            return self._create_repo(handler, json.loads(body))
        match = API_WRITE.match(path)
        if not match:
            return self._error(handler, 404, "Not found")
        repo_id, op, revision = match["repo"], match["op"], unquote(match["rev"])
        repo = self.repos.get(repo_id)
        if repo is None:
            return self._error(handler, 404, "Repository not found", "RepoNotFound")
        if op == "branch":
            if revision in repo.refs:
                return self._error(handler, 409, "Reference already exists")
            repo.refs[revision] = repo.refs["main"]
            return self._json(handler, 200, {})
        commit = repo.refs.get(revision)
        if commit is None:
            return self._error(handler, 404, "Invalid rev id", "RevisionNotFound")
        if op == "preupload":
            return self._preupload(handler, repo.commits[commit], json.loads(body))
        return self._commit(handler, repo_id, revision, body)

    def _validate_yaml(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        import yaml

        content = json.loads(body)["content"]
        if content.startswith("---"):
            end = content.find("\n---", 3)
            try:
                if end < 0:
                    raise yaml.YAMLError("the front matter has no closing ---")
                if not isinstance(yaml.safe_load(content[3:end]), dict):
                    raise yaml.YAMLError("the front matter is not a mapping")
            except yaml.YAMLError as exc:
                return self._json(handler, 400, {"errors": [{"message": str(exc)}], "warnings": []})
        self._json(handler, 200, {"errors": [], "warnings": []})

    def _create_repo(self, handler: BaseHTTPRequestHandler, payload: dict) -> None:
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") \
            else f"user/{payload['name']}"
        url = f"{self.url}/{repo_id}"
        if repo_id in self.repos:
            return self._json(handler, 409, {"error": "You already created this model repo", "url": url})
        self.add_commit(repo_id, {".gitattributes": GITATTRIBUTES})
        self._json(handler, 200, {"url": url, "name": repo_id, "id": repo_id})

    def _preupload(self, handler: BaseHTTPRequestHandler, tree: dict[str, bytes], payload: dict) -> None:
        files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                  "oid": git_blob_sha1(tree[f["path"]]) if f["path"] in tree else None}
                 for f in payload["files"]]
        self._json(handler, 200, {"files": files, "commitOid": None})

    def _commit(self, handler: BaseHTTPRequestHandler, repo_id: str, branch: str, body: bytes) -> None:
        summary, files, deleted = "", {}, []
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                summary = value.get("summary", "")
            elif key == "file" and value.get("encoding") == "base64":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                deleted.append(value["path"])
            else:  # lfsFile or deletedFolder: never asked for, since preupload answers "regular"
                return self._error(handler, 400, f"unsupported commit operation {key!r}")
        commit = self.add_commit(repo_id, files, branch=branch, deleted=tuple(deleted))
        with self._lock:
            self.commit_messages.append((repo_id, summary))
        self._json(handler, 200, {"success": True, "commitOid": commit,
                                  "commitUrl": f"{self.url}/{repo_id}/commit/{commit}"})


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
