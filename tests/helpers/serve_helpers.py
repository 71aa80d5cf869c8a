"""Running the real ``elir serve`` (uvicorn) on a free loopback port, and small HTTP helpers."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tests.helpers import DATA
from tests.helpers.cli_helpers import ELIR
from tests.helpers.waiting import wait_until

START_TIMEOUT = 120.0
PHOTOS = DATA / "photos"
# A face index no photo here has: detection runs, no face is restored (fast with any model).
NO_FACE = "99"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png_bytes(size: tuple[int, int] = (48, 40), seed: int = 0) -> bytes:
    """A small noise image with no face in it (the detector finds nothing: restoring it is quick)."""
    rgb = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def multipart(fields: dict[str, str], file: bytes | None, filename: str = "photo.png") -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    if file is not None:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + file + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):  # type: ignore[no-untyped-def]
        return json.loads(self.body)


def request(url: str, method: str = "GET", *, data: bytes | None = None, content_type: str | None = None,
            headers: dict[str, str] | None = None, timeout: float = 120) -> Answer:
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if content_type:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return Answer(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
    except urllib.error.HTTPError as err:
        return Answer(err.code, {k.lower(): v for k, v in err.headers.items()}, err.read())


def post_image(base: str, path: str, file: bytes | None, fields: dict[str, str] | None = None,
               headers: dict[str, str] | None = None) -> Answer:
    body, ctype = multipart(fields or {}, file)
    return request(base + path, "POST", data=body, content_type=ctype, headers=headers)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class Server:
    """``elir serve`` in a subprocess; TMPDIR points at ``tmp`` so its temporary files can be counted."""

    def __init__(self, weights: Path, tmp: Path, *extra: str, task: str = "denoising") -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.log = tmp.parent / f"serve-{self.port}.log"
        env = {**os.environ, "TMPDIR": str(tmp), "COLUMNS": "200"}
        env.pop("ELIR_API_KEY", None)
        self.proc = subprocess.Popen(
            [*ELIR, "serve", "--port", str(self.port), "--task", task, "--weights", str(weights),
             "--device", "cpu", *extra], stdout=subprocess.DEVNULL, stderr=open(self.log, "wb"), env=env)
        try:
            wait_until(self._healthy, START_TIMEOUT, f"elir serve answering on {self.base}/healthz")
        except AssertionError as exc:
            self.stop()
            raise RuntimeError(f"{exc}: {self.log.read_text()}") from None

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"elir serve exited: {self.log.read_text()}")
        try:
            return request(self.base + "/healthz", timeout=2).status == 200
        except OSError:  # not listening yet
            return False

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
