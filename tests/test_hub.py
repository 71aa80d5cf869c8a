"""Weights registry: hub downloads, release fallback, checks and the cache (real HTTP).

Every test talks to local servers (tests/helpers/hub_server.py) through the real
huggingface_hub client; nothing is mocked. Models are tiny (tests/helpers/hubtools.py)
and the registry is the tiny manifest (ELIR_MANIFEST).
"""

from __future__ import annotations

import time

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from elir_cli.registry import hub, inventory, store
from elir_cli.registry.loading import load_float32_model
from elir_cli.model.checkpoint import split_header
from elir_cli.errors import (
    CacheError,
    ChecksumMismatchError,
    DownloadError,
    ModelNotAvailableError,
    StateDictMismatchError,
    UnsafeCheckpointError,
    UsageError,
)
from elir_cli.registry.tasks import load_manifest
from tests.helpers.hub_server import HubServer, ReleaseServer
from tests.helpers.hubtools import (HUB_REPO, detector_path, evil_pth, release_path, sha256, tiny_files,
                                    write_tiny_manifest)


def leftovers(*roots: Path) -> list[Path]:
    """Partial or temporary files left behind anywhere under ``roots``."""
    return [p for root in roots if root.exists() for p in root.rglob("*")
            if p.name.endswith((".incomplete", ".tmp"))]


# -- the hub ------------------------------------------------------------------------

def test_first_download_then_cached_reuse_offline(hub_server_bfr: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    server, data = hub_server_bfr
    path = hub.ensure_task_weights("bfr")
    assert path.read_bytes() == data
    assert path.is_relative_to(store.hub_cache_dir())
    record = store.read_record("tasks", "bfr")
    assert record is not None and record.sha256 == sha256(data) and record.source == "hub"
    assert server.count("GET", "/cdn/") == 1

    # Second call: a HEAD to check the revision, no second transfer.
    assert hub.ensure_task_weights("bfr") == path
    assert server.count("GET", "/cdn/") == 1

    # The network goes away: offline mode and a stopped server both use the cache.
    server.stop()
    assert hub.ensure_task_weights("bfr") == path
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.ensure_task_weights("bfr") == path
    assert hub.cached_task_weights("bfr") == path
    model = load_float32_model("bfr")  # load_float32_model(task name) goes through ensure_task_weights
    assert model.task == "bfr" and model.config.k_steps == load_manifest().tasks["bfr"].model.k_steps


def test_offline_and_not_cached_says_what_to_run(tiny_manifest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError) as err:
        hub.ensure_task_weights("sr")
    assert "not cached" in err.value.message and "HF_HUB_OFFLINE" in err.value.message
    assert "elir models download sr" in (err.value.hint or "")


def test_pinned_revision(hub_server: HubServer, tiny_manifest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = tiny_files("bfr", seed=1)["safetensors"], tiny_files("bfr", seed=2)["safetensors"]
    first = hub_server.add_commit(HUB_REPO, {"elir_bfr.safetensors": old})
    hub_server.add_commit(HUB_REPO, {"elir_bfr.safetensors": new})

    assert hub.ensure_task_weights("bfr").read_bytes() == new  # main moved on
    assert hub.ensure_task_weights("bfr", revision=first).read_bytes() == old

    # A manifest pinned to the first commit gets that commit, also offline afterwards.
    data = json.loads(tiny_manifest.read_text())
    data["hub"]["revision"] = first
    pinned_manifest = tiny_manifest.with_name("pinned.json")
    pinned_manifest.write_text(json.dumps(data))
    monkeypatch.setenv("ELIR_MANIFEST", str(pinned_manifest))
    pinned = hub.ensure_task_weights("bfr")
    assert pinned.read_bytes() == old and pinned.parent.name == first
    hub_server.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.ensure_task_weights("bfr") == pinned
    assert hub.cached_task_weights("bfr") == pinned


def test_repo_override_from_env(hub_server: HubServer, tiny_manifest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tiny_files("bfr")["safetensors"]
    hub_server.add_commit("my-org/elir-mirror", {"elir_bfr.safetensors": data})
    monkeypatch.setenv("ELIR_HUB_REPO", "my-org/elir-mirror")
    path = hub.ensure_task_weights("bfr")
    assert "models--my-org--elir-mirror" in str(path) and path.read_bytes() == data


def test_gated_repo_needs_a_token(hub_server: HubServer, tiny_manifest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub_server.add_commit(HUB_REPO, {"elir_bfr.safetensors": tiny_files("bfr")["safetensors"]})
    hub_server.repos[HUB_REPO].gated, hub_server.repos[HUB_REPO].token = True, "hf_testtoken"
    with pytest.raises(DownloadError) as err:
        hub.ensure_task_weights("bfr")
    assert "gated" in err.value.message and "HF_TOKEN" in (err.value.hint or "")
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(DownloadError) as err:
        hub.ensure_task_weights("bfr")
    assert "refused access (HTTP 401)" in err.value.message and "HF_TOKEN" in (err.value.hint or "")
    monkeypatch.setenv("HF_TOKEN", "hf_testtoken")
    assert hub.ensure_task_weights("bfr").is_file()


def test_checksum_mismatch_removes_the_hub_file(hub_server: HubServer, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    data = tiny_files("bfr")["safetensors"]
    hub_server.add_commit(HUB_REPO, {"elir_bfr.safetensors": data})
    manifest = write_tiny_manifest(tmp_path / "m.json", sha256s={("bfr", "hub"): "0" * 64})
    monkeypatch.setenv("ELIR_MANIFEST", str(manifest))
    with pytest.raises(ChecksumMismatchError) as err:
        hub.ensure_task_weights("bfr")
    assert sha256(data) in err.value.message and "removed" in err.value.message
    repo_dir = store.hub_repo_dir(HUB_REPO)
    assert not list((repo_dir / "snapshots").rglob("*.safetensors"))
    assert not list((repo_dir / "blobs").iterdir())
    assert store.read_record("tasks", "bfr") is None
    assert hub.cached_task_weights("bfr") is None

    # With the right hash registered, the same server passes.
    manifest = write_tiny_manifest(tmp_path / "m2.json", sha256s={("bfr", "hub"): sha256(data)})
    monkeypatch.setenv("ELIR_MANIFEST", str(manifest))
    record_path = hub.ensure_task_weights("bfr")
    assert store.read_record("tasks", "bfr").verified_against_manifest  # type: ignore[union-attr]
    assert record_path.read_bytes() == data


def test_dropped_connection_resumes_with_range(hub_server_bfr: tuple) -> None:
    server, data = hub_server_bfr
    server.faults[sha256(data)] = "drop_once"
    path = hub.ensure_task_weights("bfr")
    assert path.read_bytes() == data
    assert any(m == "GET" and status == 206 for m, _, status in server.log)  # resumed, not restarted
    assert not leftovers(store.hub_cache_dir())


def test_truncated_transfer_is_an_error_and_leaves_nothing(hub_server_bfr: tuple) -> None:
    server, data = hub_server_bfr
    server.faults[sha256(data)] = "short"
    with pytest.raises(DownloadError) as err:
        hub.ensure_task_weights("bfr")
    assert "cut short" in err.value.message
    assert not list((store.hub_repo_dir(HUB_REPO) / "blobs").glob("*[!.lock]"))
    assert not leftovers(store.hub_cache_dir())
    assert hub.cached_task_weights("bfr") is None


# -- the release fallback -------------------------------------------------------------

@pytest.mark.parametrize("miss", ["file", "repo"])
def test_hub_miss_falls_back_to_release_and_converts_once(miss: str, hub_server: HubServer,
                                                          release_server: ReleaseServer,
                                                          tiny_manifest: Path, tmp_path: Path) -> None:
    if miss == "file":
        hub_server.add_commit(HUB_REPO, {"README.md": b"no weights here"})
    pth = tiny_files("sr")["pth"]
    release_server.add(release_path("sr"), pth)
    path = hub.ensure_task_weights("sr")
    assert path == store.store_task_path("sr", "elir_sr.safetensors")
    original = torch.load(write_file(tmp_path / "original.pth", pth), weights_only=True)
    converted, header = split_header(load_file(str(path)))
    assert converted.keys() == original.keys()
    assert all(torch.equal(converted[k], original[k]) for k in original)
    assert header is not None and header["task"] == "sr"  # the task travels with the tensors too
    record = store.read_record("tasks", "sr")
    assert record is not None and record.source == "release" and record.origin_sha256 == sha256(pth)
    assert not list(store.downloads_dir().iterdir())  # the .pth is not kept

    # From now on: no network at all.
    before = (len(hub_server.log), len(release_server.log))
    assert hub.ensure_task_weights("sr") == path
    assert (len(hub_server.log), len(release_server.log)) == before
    model = load_float32_model("sr")
    assert model.config.k_steps == 3 and model.config.hid_channels == 32


def test_unresolvable_hub_falls_back_to_release_at_once(release_server: ReleaseServer, tiny_manifest: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # ".invalid" never resolves (RFC 2606): no DNS answer means no hub, without retries.
    monkeypatch.setenv("HF_ENDPOINT", "http://hub.elir-cli.invalid")
    release_server.add(release_path("sr"), tiny_files("sr")["pth"])
    started = time.monotonic()
    path = hub.ensure_task_weights("sr")
    assert time.monotonic() - started < 10  # huggingface_hub's own retries would take ~25 s
    assert store.read_record("tasks", "sr").source == "release"
    assert path.exists()


def write_file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_release_checksum_mismatch(hub_server: HubServer, release_server: ReleaseServer, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    release_server.add(release_path("sr"), tiny_files("sr")["pth"])
    manifest = write_tiny_manifest(tmp_path / "m.json", sha256s={("sr", "release"): "f" * 64})
    monkeypatch.setenv("ELIR_MANIFEST", str(manifest))
    with pytest.raises(ChecksumMismatchError):
        hub.ensure_task_weights("sr")
    assert not store.store_task_path("sr", "elir_sr.safetensors").exists()
    assert not list(store.downloads_dir().iterdir())


def test_malicious_release_pth_is_refused_and_never_runs(hub_server: HubServer, release_server: ReleaseServer,
                                                         tiny_manifest: Path, tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    release_server.add(release_path("sr"), evil_pth(tmp_path / "evil.pth", marker).read_bytes())
    with pytest.raises(UnsafeCheckpointError):
        hub.ensure_task_weights("sr")
    assert not marker.exists()
    assert not store.store_task_path("sr", "elir_sr.safetensors").exists()
    assert not list(store.downloads_dir().iterdir())


def test_nothing_anywhere_is_a_clear_404(hub_server: HubServer, release_server: ReleaseServer, tiny_manifest: Path) -> None:
    with pytest.raises(ModelNotAvailableError) as err:
        hub.ensure_task_weights("bfr")
    assert "does not exist" in err.value.message and "HTTP 404" in err.value.message


def test_unreachable_release_host_fails_fast(hub_server: HubServer, tiny_manifest: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    dead = ReleaseServer()
    dead.stop()  # a port nobody listens on
    monkeypatch.setenv("ELIR_RELEASE_ENDPOINT", dead.url)
    with pytest.raises(DownloadError) as err:
        hub.ensure_task_weights("sr")
    assert "cannot be reached" in err.value.message and "does not exist" in err.value.message
    with pytest.raises(ModelNotAvailableError) as err:
        hub.ensure_detector_weights("retinaface_resnet50")
    assert "cannot be reached" in err.value.message


# -- import, shapes, verify, remove -------------------------------------------------------

def test_import_checks_shapes_and_leaves_input_alone(tiny_manifest: Path, tmp_path: Path) -> None:
    src = tmp_path / "elir_bfr.pth"
    src.write_bytes(tiny_files("bfr")["pth"])
    before = (sha256(src.read_bytes()), src.stat().st_mtime_ns)
    path = hub.import_task_weights(src, "bfr")
    assert (sha256(src.read_bytes()), src.stat().st_mtime_ns) == before
    assert load_float32_model("bfr").task == "bfr"
    assert inventory.task_status("bfr").source == "import" and inventory.task_status("bfr").path == path

    # A file with other shapes (the real task's, here) is refused with the mismatches listed.
    from elir_cli.model.elir import ElirModel
    from elir_cli.model.config import ModelConfig

    wide = ModelConfig(k_steps=5, sigma_s=0.1, hid_channels=64, n_mid_blocks=1, rrdb_c_hid=16, n_rrdb=1)
    other = tmp_path / "other.pth"
    torch.save(ElirModel(wide).state_dict(), other)
    with pytest.raises(StateDictMismatchError) as err:
        hub.import_task_weights(other, "sr")
    assert "wrong shape" in err.value.message
    assert hub.cached_task_weights("sr") is None

    # Our safetensors for one task cannot be filed under another.
    st = tmp_path / "sr.safetensors"
    st.write_bytes(tiny_files("sr")["safetensors"])
    with pytest.raises(UsageError):
        hub.import_task_weights(st, "denoising")


def test_import_refuses_malicious_pickle(tiny_manifest: Path, tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    with pytest.raises(UnsafeCheckpointError):
        hub.import_task_weights(evil_pth(tmp_path / "evil.pth", marker), "bfr")
    assert not marker.exists() and hub.cached_task_weights("bfr") is None


def test_verify_and_remove(hub_server_bfr: tuple, tmp_path: Path) -> None:
    server, data = hub_server_bfr
    path = hub.ensure_task_weights("bfr")
    src = tmp_path / "sr.pth"
    src.write_bytes(tiny_files("sr")["pth"])
    stored = hub.import_task_weights(src, "sr")
    results = {r.name: r for r in inventory.verify_cache()}
    assert results["bfr"].status == "ok" and results["sr"].status == "ok"
    assert results["retinaface_mobilenet0.25"].status == "ok"

    with open(stored, "r+b") as fh:  # bit rot in the store
        fh.seek(-1, os.SEEK_END)
        last = fh.read(1)
        fh.seek(-1, os.SEEK_END)
        fh.write(bytes([last[0] ^ 1]))
    assert {r.name: r.status for r in inventory.verify_cache()}["sr"] == "mismatch"

    removed = inventory.remove_task_weights("bfr")
    assert path in removed and not path.exists()
    assert not list((store.hub_repo_dir(HUB_REPO) / "blobs").iterdir())
    assert hub.cached_task_weights("bfr") is None


def test_cache_lookup_agrees_with_huggingface_hub(hub_server: HubServer, tiny_manifest: Path) -> None:
    from huggingface_hub import try_to_load_from_cache

    commit = hub_server.add_commit(HUB_REPO, {"elir_bfr.safetensors": tiny_files("bfr")["safetensors"]})
    hub.ensure_task_weights("bfr")
    for revision in ("main", commit, "v9", "0" * 40):
        for filename in ("elir_bfr.safetensors", "elir_sr.safetensors"):
            theirs = try_to_load_from_cache(HUB_REPO, filename, cache_dir=store.hub_cache_dir(), revision=revision)
            ours = store.hub_cached_file(HUB_REPO, filename, revision)
            assert (str(ours) if ours else None) == (theirs if isinstance(theirs, str) else None)


# -- face detectors -------------------------------------------------------------------------

def test_bundled_detector_needs_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("ELIR_RELEASE_ENDPOINT", "http://127.0.0.1:9")
    path = hub.ensure_detector_weights("retinaface_mobilenet0.25")
    assert sha256(path.read_bytes()) == load_manifest().detectors["retinaface_mobilenet0.25"].sha256
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert any("body" in k or "conv" in k for k in state)


def test_optional_detector_downloads_once_into_our_cache(release_server: ReleaseServer, monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    state_file = tmp_path / "det.pth"
    torch.save({"body.conv1.weight": torch.randn(4, 3, 3, 3)}, state_file)
    release_server.add(detector_path("retinaface_resnet50"), state_file.read_bytes())
    path = hub.ensure_detector_weights("retinaface_resnet50")
    assert path.is_relative_to(store.elir_cache_dir()) and path.read_bytes() == state_file.read_bytes()
    record = store.read_record("detectors", "retinaface_resnet50")
    assert record is not None and record.sha256 == sha256(state_file.read_bytes())
    release_server.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.ensure_detector_weights("retinaface_resnet50") == path


def test_missing_detector_is_one_clear_error(release_server: ReleaseServer) -> None:
    with pytest.raises(DownloadError) as err:
        hub.ensure_detector_weights("retinaface_resnet50")
    assert "HTTP 404" in err.value.message
    assert not store.store_detector_path("detection_Resnet50_Final.pth").exists()


def test_malicious_detector_is_refused(release_server: ReleaseServer, tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    release_server.add(detector_path("retinaface_resnet50"), evil_pth(tmp_path / "evil.pth", marker).read_bytes())
    with pytest.raises(UnsafeCheckpointError):
        hub.ensure_detector_weights("retinaface_resnet50")
    assert not marker.exists()
    assert not store.store_detector_path("detection_Resnet50_Final.pth").exists()


# -- the disk --------------------------------------------------------------------------------

def _mount_tmpfs(where: Path, options: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                          capture_output=True, check=False)
    return done.returncode == 0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    where = tmp_path / "small"
    if os.geteuid() != 0 or not _mount_tmpfs(where, "size=1m"):
        pytest.skip("needs root and tmpfs mounts to make a real full disk")
    yield where
    subprocess.run(["umount", str(where)], check=False)


@pytest.mark.filterwarnings("ignore:Not enough free disk space")
def test_disk_full_is_one_clear_error(hub_server_bfr: tuple, small_disk: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(small_disk))
    monkeypatch.setenv("ELIR_CACHE", str(small_disk / "elir"))
    with pytest.raises(CacheError) as err:
        hub.ensure_task_weights("bfr")
    assert "no space left" in err.value.message
    assert not leftovers(small_disk)


def test_read_only_cache_is_one_clear_error(tiny_manifest: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    where = tmp_path / "ro"
    mounted = os.geteuid() == 0 and _mount_tmpfs(where, "ro,size=1m")
    if not mounted:
        if os.geteuid() == 0:
            pytest.skip("root ignores file modes and tmpfs cannot be mounted here")
        where.mkdir()
        where.chmod(0o555)
    try:
        monkeypatch.setenv("ELIR_CACHE", str(where / "elir"))
        src = tmp_path / "bfr.pth"
        src.write_bytes(tiny_files("bfr")["pth"])
        with pytest.raises(CacheError) as err:
            hub.import_task_weights(src, "bfr")
        assert "cannot write" in err.value.message
    finally:
        if mounted:
            subprocess.run(["umount", str(where)], check=False)


def test_read_only_cache_still_serves_what_it_holds(hub_server_bfr: tuple, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    where = tmp_path / "shared"
    if os.geteuid() != 0 or not _mount_tmpfs(where, "size=64m"):
        pytest.skip("needs root and tmpfs mounts to make a read-only cache")
    try:
        monkeypatch.setenv("HF_HOME", str(where))
        monkeypatch.setenv("ELIR_CACHE", str(where / "elir"))
        path = hub.ensure_task_weights("bfr")
        for record in (where / "elir" / "records").rglob("*.json"):
            record.unlink()  # a cache filled by another tool: nothing recorded yet
        assert subprocess.run(["mount", "-o", "remount,ro", str(where)], check=False).returncode == 0
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        assert hub.ensure_task_weights("bfr") == path  # usable; the record just cannot be written
        monkeypatch.delenv("HF_HUB_OFFLINE")
        with pytest.raises(CacheError) as err:  # sr is not on the hub: converting needs a writable store
            hub.ensure_task_weights("sr")
        assert "cannot write" in err.value.message
    finally:
        subprocess.run(["umount", str(where)], check=False)
