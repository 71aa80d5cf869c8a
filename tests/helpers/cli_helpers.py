"""Running the real ``elir`` executable in a subprocess, with a small local model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from elir_cli.model.checkpoint import save_safetensors
from tests.helpers.forkserver import run_forked
from tests.helpers.tiny import TINY, tiny_model

ELIR = [sys.executable, "-m", "elir_cli"]
TRACEBACK = "Traceback (most recent call last)"


def run_elir(*args: str, env: dict[str, str] | None = None, input: bytes | None = None,
             timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    """``elir ARGS`` in a process of its own: a fork of a process that has torch imported
    (:mod:`tests.helpers.forkserver`), or a fresh interpreter where the environment needs one."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    forked = run_forked(list(args), full_env, cwd, input, timeout)
    if forked is not None:
        return forked
    return subprocess.run([*ELIR, *args], capture_output=True, env=full_env, input=input,
                          timeout=timeout, cwd=cwd)


def tiny_weights(folder: Path, task: str = "denoising", seed: int = 0) -> Path:
    """A small random ELIR for ``task`` in our safetensors format (it carries its config)."""
    return save_safetensors(folder / f"tiny_{task}.safetensors", tiny_model(seed).state_dict(), TINY, task=task)


@pytest.fixture(scope="session")
def tiny_denoising(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_weights(tmp_path_factory.mktemp("weights"), "denoising")


def assert_one_line_error(result: subprocess.CompletedProcess[bytes]) -> str:
    """A failure: non-zero exit, an ``Error:`` line (and maybe a ``Hint:``), no traceback."""
    err = result.stderr.decode()
    assert result.returncode != 0, err
    assert TRACEBACK not in err, err
    lines = [line for line in err.splitlines() if line.startswith(("Error:", "Hint:"))]
    assert lines and lines[0].startswith("Error:"), err
    return lines[0]
