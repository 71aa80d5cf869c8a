"""`elir models ...` end to end: the real console script in a subprocess, real HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from elir_cli.registry import hub, store
from tests.helpers.hub_server import HubServer, ReleaseServer
from tests.helpers.hubtools import evil_pth, release_path, sha256, tiny_files

REPO = "elir-cli/elir"
ELIR = Path(sys.executable).parent / "elir"
HEAVY_MODULES = ("torch", "huggingface_hub", "httpx2")


def elir(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [str(ELIR)] if ELIR.exists() else [sys.executable, "-m", "elir_cli"]
    return subprocess.run(command + list(args), capture_output=True, text=True, timeout=120,
                          env=env or dict(os.environ))


def assert_one_line_error(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    error_lines = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1, done.stderr
    for fragment in fragments:
        assert fragment in done.stderr, done.stderr


def imported_modules(*args: str) -> set[str]:
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "elir_cli", *args],
                          capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert done.returncode == 0, done.stderr[-2000:]
    return {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()
            if line.startswith("import time:")}


@pytest.mark.parametrize("args", [("models", "list"), ("models", "--help"), ("--help",), ("--version",),
                                  ("restore", "--help"), ("batch", "--help"), ("eval", "--help"), ("degrade", "--help")])
def test_fast_commands_import_neither_torch_nor_the_http_stack(args: tuple[str, ...]) -> None:
    modules = imported_modules(*args)
    assert "elir_cli" in modules  # the measurement works
    assert not [m for m in HEAVY_MODULES if m in modules]


def test_list_shows_what_is_cached(tiny_manifest: Path, tmp_path: Path) -> None:
    src = tmp_path / "bfr.pth"
    src.write_bytes(tiny_files("bfr")["pth"])
    stored = hub.import_task_weights(src, "bfr")

    rows = {r["task"]: r for r in json.loads(elir("models", "list", "--json").stdout)}
    assert list(rows) == ["bfr", "sr", "denoising", "inpainting", "bsr"]
    assert rows["bfr"]["cached"] and rows["bfr"]["path"] == str(stored) and rows["bfr"]["source"] == "import"
    assert rows["bfr"]["sha256"] == sha256(stored.read_bytes())
    assert not rows["sr"]["cached"] and rows["sr"]["source"] is None
    table = elir("models", "list")
    assert table.returncode == 0
    bfr_line = next(line for line in table.stdout.splitlines() if line.strip().startswith("bfr"))
    assert "yes" in bfr_line and "import" in bfr_line


def test_download_info_verify_remove(hub_server: HubServer, release_server: ReleaseServer,
                                     tiny_manifest: Path) -> None:
    data = tiny_files("bfr")["safetensors"]
    hub_server.add_commit(REPO, {"elir_bfr.safetensors": data})
    release_server.add(release_path("sr"), tiny_files("sr")["pth"])

    done = elir("models", "download", "bfr", "sr")
    assert done.returncode == 0, done.stderr
    paths = dict(line.split("\t") for line in done.stdout.splitlines())
    assert Path(paths["bfr"]).read_bytes() == data
    assert Path(paths["sr"]) == store.store_task_path("sr", "elir_sr.safetensors")
    assert "trying the authors' release file" in done.stderr  # the log goes to stderr

    info = elir("models", "info", "bfr")
    assert info.returncode == 0 and sha256(data) in info.stdout and "hub" in info.stdout

    verified = elir("models", "verify")
    assert verified.returncode == 0, verified.stderr
    statuses = {line.split("\t")[1]: line.split("\t")[0] for line in verified.stdout.splitlines()}
    assert statuses["bfr"] == "ok" and statuses["sr"] == "ok" and statuses["retinaface_mobilenet0.25"] == "ok"

    Path(paths["sr"]).write_bytes(b"x" + Path(paths["sr"]).read_bytes()[1:])  # bit rot
    assert_one_line_error(elir("models", "verify"), "sr")

    removed = elir("models", "remove", "bfr")
    assert removed.returncode == 0 and not Path(paths["bfr"]).exists()
    assert hub.cached_task_weights("bfr") is None


def test_two_processes_download_the_same_files_at_once(hub_server: HubServer, release_server: ReleaseServer,
                                                       tiny_manifest: Path) -> None:
    data = tiny_files("bfr")["safetensors"]
    hub_server.add_commit(REPO, {"elir_bfr.safetensors": data})
    hub_server.faults[sha256(data)] = "slow"
    pth = tiny_files("sr")["pth"]
    release_server.add(release_path("sr"), pth)
    release_server.faults[release_path("sr")] = "slow"

    command = [str(ELIR)] if ELIR.exists() else [sys.executable, "-m", "elir_cli"]
    procs = [subprocess.Popen(command + ["models", "download", "bfr", "sr"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=dict(os.environ)) for _ in range(2)]
    outputs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outputs]
    assert outputs[0][0] == outputs[1][0]  # both report the same files

    assert hub_server.count("GET", "/cdn/") == 1 and release_server.count("GET", "/objects/") == 1
    blobs = [p for p in (store.hub_repo_dir(REPO) / "blobs").iterdir()]
    assert [b.name for b in blobs] == [sha256(data)] and blobs[0].read_bytes() == data
    stored = store.store_task_path("sr", "elir_sr.safetensors")
    assert store.read_record("tasks", "sr").sha256 == sha256(stored.read_bytes())  # type: ignore[union-attr]
    assert not [p for p in store.elir_cache_dir().rglob("*") if p.name.endswith((".incomplete", ".tmp"))]
    assert not list(store.downloads_dir().iterdir())


def test_offline_not_cached_is_one_line_with_the_command_to_run(tiny_manifest: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert_one_line_error(elir("models", "download", "bfr"), "not cached", "elir models download bfr")


def test_gated_and_missing_are_one_line(hub_server: HubServer, release_server: ReleaseServer,
                                        tiny_manifest: Path) -> None:
    assert_one_line_error(elir("models", "download", "sr"), "HTTP 404")
    hub_server.add_commit(REPO, {"elir_sr.safetensors": tiny_files("sr")["safetensors"]})
    hub_server.repos[REPO].gated, hub_server.repos[REPO].token = True, "hf_secret"
    assert_one_line_error(elir("models", "download", "sr"), "gated", "HF_TOKEN")


def test_import_refuses_a_malicious_pickle(tiny_manifest: Path, tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    evil = evil_pth(tmp_path / "evil.pth", marker)
    before = evil.read_bytes()
    assert_one_line_error(elir("models", "import", str(evil), "--task", "bfr"), "refused")
    assert not marker.exists()
    assert evil.read_bytes() == before
    assert hub.cached_task_weights("bfr") is None


@pytest.mark.parametrize("args", [(), ("models",), ("models", "download", "--bogus")])
def test_usage_errors_and_bare_commands_show_no_traceback(args: tuple[str, ...]) -> None:
    done = elir(*args)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "Usage:" in done.stdout + done.stderr
