from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# Environment that would point a test at the user's caches, registries or the network.
ISOLATED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT", "HF_TOKEN", "HF_HUB_CACHE",
                "HUGGINGFACE_HUB_CACHE", "HF_ASSETS_CACHE", "ELIR_HUB_REPO", "ELIR_RELEASE_ENDPOINT",
                "ELIR_MANIFEST")


@pytest.fixture(scope="session", autouse=True)
def fork_server_stops_at_the_end() -> Iterator[None]:
    """The servers that fork ``elir`` runs (tests/helpers/forkserver.py) end with the session."""
    yield
    from tests.helpers.forkserver import stop_fork_servers

    stop_fork_servers()


@pytest.fixture(autouse=True)
def isolated_hf_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Tests never touch the user's Hugging Face or elir-cli cache."""
    home = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("ELIR_CACHE", str(home / "elir"))
    # Precision calibrations are keyed by the weights' sha256 and the tiny test weights are
    # seeded (same bytes in every test): share their records across the session, so each
    # file is calibrated once, as it would be for a user. Tests of calibration itself use
    # weights of their own.
    shared = tmp_path_factory.getbasetemp() / "shared-calibration-records"
    shared.mkdir(exist_ok=True)
    (home / "elir" / "records").mkdir(parents=True)
    (home / "elir" / "records" / "calibration").symlink_to(shared, target_is_directory=True)
    for name in ISOLATED_ENV:
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def hub_server(monkeypatch: pytest.MonkeyPatch) -> Iterator["HubServer"]:
    """A local stand-in for the Hugging Face Hub; HF_ENDPOINT points at it."""
    from tests.helpers.hub_server import HubServer

    server = HubServer()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    yield server
    server.stop()


@pytest.fixture
def release_server(monkeypatch: pytest.MonkeyPatch) -> Iterator["ReleaseServer"]:
    """A local stand-in for GitHub releases; ELIR_RELEASE_ENDPOINT points at it."""
    from tests.helpers.hub_server import ReleaseServer

    server = ReleaseServer()
    monkeypatch.setenv("ELIR_RELEASE_ENDPOINT", server.url)
    yield server
    server.stop()


@pytest.fixture
def tiny_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A registry with the real task names and files but tiny architectures (ELIR_MANIFEST)."""
    from tests.helpers.hubtools import write_tiny_manifest

    path = write_tiny_manifest(tmp_path / "manifest.json")
    monkeypatch.setenv("ELIR_MANIFEST", str(path))
    return path


@pytest.fixture
def hub_server_bfr(hub_server: "HubServer", tiny_manifest: Path) -> tuple["HubServer", bytes]:
    """The hub holding a tiny bfr model under the task's real file name."""
    from tests.helpers.hubtools import HUB_REPO, tiny_files

    data = tiny_files("bfr")["safetensors"]
    hub_server.add_commit(HUB_REPO, {"elir_bfr.safetensors": data})
    return hub_server, data


if TYPE_CHECKING:
    from tests.helpers.hub_server import HubServer, ReleaseServer
