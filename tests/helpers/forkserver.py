"""Start ``elir`` processes without paying for ``import torch`` each time.

Most CLI tests run the real ``elir`` entry point in a process of its own and
check what it prints, writes and exits with. Two thirds of such a process's
time went into importing torch, NumPy and OpenCV (about 1.5 s of 2.5 s on 2
cores), about 100 times a suite. Here a server process imports those once;
each run is a ``fork()`` of it that sets the run's environment, folder,
arguments and standard streams and runs ``python -m elir_cli`` as
``runpy`` does, so the CLI's code runs as in a fresh process: nothing of
ours is imported before the fork, and huggingface_hub (which reads
``HF_HOME`` and the like when it is imported) is not either.

What a fork cannot change is what those libraries read from the environment
when they were imported: thread counts (``OMP_NUM_THREADS``), the forced
instruction set (``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``), allocator
and interpreter settings. So there is a server for each such start-up
environment a test asks for (most ask for the suite's own; the Ray and
video tests for one thread), started with it. The tests that measure
start-up itself (``test_startup_imports.py``) never come here, and
``ELIR_TEST_NO_FORK=1`` turns the servers off.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

# Variables read when torch, NumPy, OpenCV or the interpreter start: a fork keeps the server's.
READ_AT_START = ("OMP_", "MKL_", "KMP_", "GOMP_", "OPENBLAS_", "ATEN_", "ONEDNN_", "DNNL_", "TORCH",
                 "PYTORCH_", "CUDA_", "LD_", "MALLOC_", "GLIBC_", "PYTHON", "OPENCV_")

SERVER = r"""
import json, os, runpy, sys, traceback
import numpy, torch, cv2, PIL.Image  # what every elir process imports first, and the slow part
protocol = os.fdopen(os.dup(1), "w")
print("ready", file=protocol, flush=True)
for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.chdir(request["cwd"])
            os.environ.clear()
            os.environ.update(request["env"])
            for fd, path, mode in ((0, request["stdin"], os.O_RDONLY), (1, request["stdout"], os.O_WRONLY),
                                   (2, request["stderr"], os.O_WRONLY)):
                os.dup2(os.open(path, mode), fd)
            sys.stdin = open(0, "r", closefd=False)
            sys.stdout = open(1, "w", closefd=False)
            sys.stderr = open(2, "w", closefd=False)
            sys.argv = ["elir", *request["args"]]
            runpy.run_module("elir_cli", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:  # as the interpreter ends: a non-int code is printed, and exits 1
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if exc.code is not None and not isinstance(exc.code, int):
                print(exc.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    pass
            os._exit(code)
    print(json.dumps({"pid": pid}), file=protocol, flush=True)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"code": os.waitstatus_to_exitcode(status)}), file=protocol, flush=True)
"""


class ForkServer:
    """A server process that runs one ``elir`` at a time, each in a fresh fork (see :func:`run_forked`)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = dict(env)
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=self.env, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def can_run(self, env: dict[str, str]) -> bool:
        keys = {k for k in (*env, *self.env) if k.startswith(READ_AT_START)}
        return self.proc.poll() is None and all(env.get(k) == self.env.get(k) for k in keys)

    def run(self, args: list[str], env: dict[str, str], cwd: Path | None, input: bytes | None,
            timeout: float) -> subprocess.CompletedProcess[bytes]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with tempfile.TemporaryDirectory(prefix="elir-run-") as tmp:
            streams = {name: Path(tmp) / name for name in ("stdin", "stdout", "stderr")}
            streams["stdin"].write_bytes(input or b"")
            for name in ("stdout", "stderr"):
                streams[name].touch()
            request = {"args": list(args), "env": env, "cwd": str(cwd or os.getcwd()),
                       **{name: str(path) for name, path in streams.items()}}
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            pid = json.loads(self.proc.stdout.readline())["pid"]
            killed = threading.Event()
            timer = threading.Timer(timeout, _kill, (pid, killed))
            timer.start()
            try:
                code = json.loads(self.proc.stdout.readline())["code"]
            finally:
                timer.cancel()
            if killed.is_set():
                raise subprocess.TimeoutExpired(["elir", *args], timeout)
            return subprocess.CompletedProcess(["elir", *args], code, streams["stdout"].read_bytes(),
                                               streams["stderr"].read_bytes())

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _kill(pid: int, killed: threading.Event) -> None:
    killed.set()
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass


# Idle servers by what their libraries read at start (start_key): a caller takes one with the
# same start-up environment as its run, or starts one, so runs from several threads overlap.
_idle: dict[tuple[tuple[str, str], ...], list[ForkServer]] = {}
_started: list[ForkServer] = []
_pool_lock = threading.Lock()


def start_key(env: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in env.items() if k.startswith(READ_AT_START)))


def forking_enabled() -> bool:
    return os.environ.get("ELIR_TEST_NO_FORK") != "1" and hasattr(os, "fork")


def run_forked(args: list[str], env: dict[str, str], cwd: Path | None, input: bytes | None,
               timeout: float) -> subprocess.CompletedProcess[bytes] | None:
    """``elir ARGS`` in a fork of a warm server started with the same start-up environment;
    None where forking is off."""
    if not forking_enabled():
        return None
    key = start_key(env)
    with _pool_lock:
        idle = _idle.setdefault(key, [])
        server = idle.pop() if idle else None
    if server is None or server.proc.poll() is not None:
        server = ForkServer(env)
        with _pool_lock:
            _started.append(server)
    try:
        assert server.can_run(env)
        return server.run(args, env, cwd, input, timeout)
    finally:
        with _pool_lock:
            _idle[key].append(server)


def stop_fork_servers() -> None:
    with _pool_lock:
        servers = list(_started)
        _started.clear()
        _idle.clear()
    for server in servers:
        server.close()
