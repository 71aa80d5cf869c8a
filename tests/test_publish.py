"""`elir models publish`: convert the authors' files, upload them, then download them back.

End to end against the local hub (tests/helpers/hub_server.py), which takes real
uploads from ``HfApi.create_repo`` / ``upload_folder``: the real CLI in a
subprocess publishes tiny authors'-style ``.pth`` files for the five tasks of
the tiny manifest, and the normal download path (``ensure_task_weights``)
then fetches every task at the published commit and checks its sha256.
"""

from __future__ import annotations

import copy
import difflib
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers.cli_helpers import assert_one_line_error, run_elir
from elir_cli.model.checkpoint import split_header
from elir_cli.errors import (
    CheckpointError,
    DownloadError,
    StateDictMismatchError,
    UnsafeCheckpointError,
    UploadError,
    UsageError,
)
from elir_cli.model.config import ModelConfig
from elir_cli.model.elir import ElirModel
from elir_cli.registry import hub, store, tasks
from elir_cli.registry.publish import PublishedFile, Publication, publish_weights, write_manifest_entries
from elir_cli.registry.tasks import weights_dir
from tests.helpers.hub_server import WRITE_TOKEN, HubServer, ReleaseServer
from tests.helpers.hubtools import real_manifest, release_path, sha256, tiny_config

REPO = "elir-cli/elir"
TASKS = ("bfr", "sr", "denoising", "inpainting", "bsr")
SEEDS = {task: i + 1 for i, task in enumerate(TASKS)}  # one model per task: no two files alike
COMMIT = re.compile(r"^[0-9a-f]{40}$")


def release_name(task: str) -> str:
    return release_path(task).rsplit("/", 1)[-1]


@lru_cache(maxsize=None)
def authors_pth(task: str) -> bytes:
    """A tiny model for ``task`` saved as the authors save theirs (a flat state dict, torch.save).

    Random float16 tensors with the task's names and shapes: only those are
    checked, the dtype is kept as it is, and half the bytes halve the time of
    five uploads and downloads.
    """
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in ElirModel(tiny_config(real_manifest()["tasks"][task]["model"]))
                  .state_dict().items()}
    generator = torch.Generator().manual_seed(SEEDS[task])
    buffer = io.BytesIO()
    torch.save({k: torch.randn(shape, generator=generator).half() for k, shape in shapes.items()}, buffer)
    return buffer.getvalue()


@pytest.fixture
def release_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "release"
    folder.mkdir()
    for task in TASKS:
        (folder / release_name(task)).write_bytes(authors_pth(task))
    return folder


@pytest.fixture
def staging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A write token in HF_TOKEN, and temporary folders (in and out of process) where we can see them."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def two_task_manifest(tiny_manifest: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tiny manifest with only bfr and sr: half the bytes for the in-process round trips."""
    data = json.loads(tiny_manifest.read_text())
    data["tasks"] = {name: data["tasks"][name] for name in ("bfr", "sr")}
    path = tiny_manifest.with_name("two.json")
    path.write_text(json.dumps(data, indent=2))
    monkeypatch.setenv("ELIR_MANIFEST", str(path))
    return path


def check_downloads(entries: dict, repo: str) -> None:
    """Every task through the normal download path: the published bytes, the authors' tensors."""
    tasks._load_manifest.cache_clear()
    revision = entries["hub"]["revision"]
    for task in TASKS:
        expected = entries["tasks"][task]["sources"]["hub"]["sha256"]
        path = hub.ensure_task_weights(task)
        assert sha256(path.read_bytes()) == expected
        assert path.parent.name == revision and f"models--{repo.replace('/', '--')}" in str(path)
        record = store.read_record("tasks", task)
        assert record is not None and record.source == "hub" and record.verified_against_manifest
        original = torch.load(io.BytesIO(authors_pth(task)), weights_only=True)
        converted, header = split_header(load_file(str(path)))
        assert header is not None and header["task"] == task
        assert converted.keys() == original.keys()
        assert all(torch.equal(converted[k], original[k]) and converted[k].dtype == original[k].dtype
                   for k in original)


# -- end to end, through the real CLI ---------------------------------------------------------

def test_publish_from_a_folder_then_download_every_task(hub_server: HubServer, tiny_manifest: Path,
                                                        release_dir: Path, staging: Path) -> None:
    before = tiny_manifest.read_text()
    done = run_elir("models", "publish", "--repo", REPO, "--from", str(release_dir), "--write-manifest")
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    entries = json.loads(done.stdout)

    # The revision is the commit the upload made; it holds the card and the five files.
    revision = entries["hub"]["revision"]
    assert COMMIT.match(revision) and hub_server.repos[REPO].refs["main"] == revision
    tree = hub_server.repos[REPO].commits[revision]
    assert sorted(tree) == sorted([".gitattributes", "README.md", *(f"elir_{t}.safetensors" for t in TASKS)])
    assert {t: sha256(tree[f"elir_{t}.safetensors"]) for t in TASKS} == \
        {t: entries["tasks"][t]["sources"]["hub"]["sha256"] for t in TASKS}

    # The manifest got exactly the new values: the revision and five sha256 lines, nothing else moved.
    after = tiny_manifest.read_text()
    changed = [line for line in difflib.ndiff(before.splitlines(), after.splitlines()) if line[:2] in ("- ", "+ ")]
    assert len(changed) == 12 and all('"revision"' in line or '"sha256"' in line for line in changed), changed
    assert after.endswith("}") == before.endswith("}")
    manifest = json.loads(after)
    assert manifest["hub"] == {"repo_id": REPO, "revision": revision}

    check_downloads(entries, REPO)

    # The model card: licence, paper, the task table and every sha256 (ours and the authors' files').
    from huggingface_hub import ModelCard

    card = ModelCard(tree["README.md"].decode())
    assert card.data.license == "apache-2.0"
    assert "@inproceedings{cohen2025elir" in card.text and "arXiv:2502.03500" in card.text
    for task in TASKS:
        row = next(line for line in card.text.splitlines() if line.startswith(f"| {task} |"))
        assert f"elir_{task}.safetensors" in row
        files_row = next(line for line in card.text.splitlines() if line.startswith(f"| `elir_{task}.safetensors`"))
        assert entries["tasks"][task]["sources"]["hub"]["sha256"] in files_row
        assert sha256(authors_pth(task)) in files_row
    assert not list(staging.iterdir())  # the staging folder is gone


def test_publish_from_the_release_prints_entries_ready_to_paste(hub_server: HubServer,
                                                                release_server: ReleaseServer,
                                                                tiny_manifest: Path, staging: Path,
                                                                tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    for task in TASKS:
        release_server.add(release_path(task), authors_pth(task))
    before = tiny_manifest.read_bytes()
    # Without hf_xet, upload_folder takes huggingface_hub's other (create_commit) path.
    done = run_elir("models", "publish", "--repo", "my-org/elir-mirror", env={"HF_HUB_DISABLE_XET": "1"})
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert tiny_manifest.read_bytes() == before  # printed, not written
    assert release_server.count("GET", "/objects/") == len(TASKS)
    assert not list(store.downloads_dir().glob("*"))  # the downloaded .pth files are not kept

    entries = json.loads(done.stdout)
    pasted = copy.deepcopy(json.loads(before))
    pasted["hub"].update(entries["hub"])
    for task, entry in entries["tasks"].items():
        pasted["tasks"][task]["sources"]["hub"].update(entry["sources"]["hub"])
    path = tmp_path / "pasted.json"
    path.write_text(json.dumps(pasted, indent=2))
    monkeypatch.setenv("ELIR_MANIFEST", str(path))
    check_downloads(entries, "my-org/elir-mirror")


def test_a_file_that_does_not_fit_its_task_is_one_line_and_uploads_nothing(hub_server: HubServer,
                                                                           tiny_manifest: Path,
                                                                           release_dir: Path,
                                                                           staging: Path) -> None:
    wide = ModelConfig(k_steps=5, sigma_s=0.1, hid_channels=64, n_mid_blocks=1, rrdb_c_hid=16, n_rrdb=1)
    torch.save(ElirModel(wide).state_dict(), release_dir / release_name("bfr"))
    done = run_elir("models", "publish", "--repo", REPO, "--from", str(release_dir))
    line = assert_one_line_error(done)
    assert "elir_bfr.pth (task bfr) does not fit" in line and "wrong shape" in line
    assert not [entry for entry in hub_server.log if entry[0] == "POST"]
    assert REPO not in hub_server.repos
    assert not list(staging.iterdir())


def test_a_refused_token_is_one_line(hub_server: HubServer, tiny_manifest: Path, release_dir: Path,
                                     staging: Path) -> None:
    done = run_elir("models", "publish", "--repo", REPO, "--from", str(release_dir),
                    env={"HF_TOKEN": "hf_not_a_token"})
    line = assert_one_line_error(done)
    assert line == f"Error: the hub refused the upload to {REPO} (HTTP 401)"
    assert "HF_TOKEN" in done.stderr.decode()
    assert not [entry for entry in hub_server.log if entry[0] == "POST"] and REPO not in hub_server.repos


def test_help_has_examples_and_imports_no_torch() -> None:
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "elir_cli", "models", "publish", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "Examples:" in done.stdout and "--write-manifest" in done.stdout
    modules = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()
               if line.startswith("import time:")}
    assert "elir_cli.cli.models" in modules and not {"torch", "huggingface_hub"} & modules
    both = run_elir("models", "publish", "--repo", REPO, "--dry-run", "--write-manifest")
    assert "--dry-run uploads nothing" in assert_one_line_error(both)


# -- the library, in process ---------------------------------------------------------------------

def test_publishing_the_same_files_again_changes_nothing(hub_server: HubServer, tiny_manifest: Path,
                                                         release_dir: Path, staging: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    two_task_manifest(tiny_manifest, monkeypatch)
    first = publish_weights(REPO, source_dir=release_dir)
    assert COMMIT.match(first.revision or "") and [f.task for f in first.files] == ["bfr", "sr"]

    # Same input, same bytes (safetensors' metadata order is made stable): no second commit,
    # and the branch asked for is created at that commit.
    again = publish_weights(REPO, source_dir=release_dir, branch="review")
    assert again.files == first.files and again.revision == first.revision
    assert hub_server.repos[REPO].refs["review"] == first.revision
    assert len(hub_server.commit_messages) == 1

    monkeypatch.delenv("HF_TOKEN")
    dry = publish_weights(REPO, source_dir=release_dir, dry_run=True)  # no token needed
    assert dry.files == first.files and dry.revision is None and dry.manifest_entries()["hub"]["revision"] is None
    assert len(hub_server.commit_messages) == 1 and not list(staging.iterdir())


def misnamed_manifest(tiny_manifest: Path, monkeypatch: pytest.MonkeyPatch) -> ModelConfig:
    """bsr wider than the others, so its file can be told apart by its shapes."""
    data = json.loads(tiny_manifest.read_text())
    data["tasks"]["bsr"]["model"]["hid_channels"] = 64
    tiny_manifest.write_text(json.dumps(data, indent=2))
    tasks._load_manifest.cache_clear()
    return ModelConfig.from_dict({k: tuple(v) if isinstance(v, list) else v
                                  for k, v in data["tasks"]["bsr"]["model"].items()})


@pytest.mark.parametrize("case", ["missing", "not weights", "pickled code", "same file twice", "misnamed"])
def test_files_that_cannot_be_published(case: str, tiny_manifest: Path, release_dir: Path, staging: Path,
                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "PWNED"
    if case == "missing":
        (release_dir / "elir_bsr.pth").unlink()
        expected, fragment = UsageError, "lacks elir_bsr.pth"
    elif case == "not weights":
        (release_dir / "elir_sr.pth").write_bytes(b"<html>Not Found</html>")
        expected, fragment = CheckpointError, "elir_sr.pth is not a weights file"
    elif case == "pickled code":
        class Payload:
            def __reduce__(self) -> tuple:
                return (open, (str(marker), "w"))

        torch.save({"enc.layers.0.weight": torch.zeros(2), "x": Payload()}, release_dir / "elir_sr.pth")
        expected, fragment = UnsafeCheckpointError, "refused"
    elif case == "same file twice":
        shutil.copy(release_dir / "elir_sr.pth", release_dir / "elir_denoising.pth")
        expected, fragment = CheckpointError, "elir_denoising.pth and elir_sr.pth are the same file"
    else:
        bsr = misnamed_manifest(tiny_manifest, monkeypatch)
        torch.save(ElirModel(bsr).state_dict(), release_dir / "elir_bfr.pth")
        expected, fragment = StateDictMismatchError, "elir_bfr.pth (task bfr) does not fit"
    with pytest.raises(expected) as err:
        publish_weights(REPO, source_dir=release_dir, dry_run=True)
    assert fragment in err.value.message
    if case == "misnamed":
        assert err.value.hint == "its tensors fit task bsr: is the file misnamed?"
    assert not marker.exists() and not list(staging.iterdir())


def test_tokens_and_hubs_that_cannot_take_the_upload(hub_server: HubServer, tiny_manifest: Path,
                                                     release_dir: Path, staging: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    hub_server.read_only_tokens.add("hf_read_only")
    monkeypatch.setenv("HF_TOKEN", "hf_read_only")
    with pytest.raises(UploadError) as err:
        publish_weights(REPO, source_dir=release_dir)
    assert "read-only" in err.value.message and "write access" in (err.value.hint or "")

    import huggingface_hub.constants

    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(staging / "no-token"))
    with pytest.raises(UsageError) as usage:
        publish_weights(REPO, source_dir=release_dir)
    assert "needs a Hugging Face token" in usage.value.message and "hf auth login" in (usage.value.hint or "")

    dead = HubServer()
    dead.stop()  # a port nobody listens on
    monkeypatch.setenv("HF_ENDPOINT", dead.url)
    with pytest.raises(UploadError) as err:
        publish_weights(REPO, source_dir=release_dir, token=WRITE_TOKEN)
    assert err.value.message == f"cannot reach the hub at {dead.url}"
    with pytest.raises(UsageError):
        publish_weights("not a repo", source_dir=release_dir, token=WRITE_TOKEN)
    assert not [entry for entry in hub_server.log if entry[0] == "POST"] and not list(staging.iterdir())


def test_release_files_that_cannot_be_fetched(hub_server: HubServer, release_server: ReleaseServer,
                                              tiny_manifest: Path, staging: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    release_server.add(release_path("bfr"), authors_pth("bfr"))  # and nothing for sr
    with pytest.raises(DownloadError) as err:
        publish_weights(REPO)
    assert "release file of task 'sr' is missing" in err.value.message and "HTTP 404" in err.value.message

    dead = ReleaseServer()
    dead.stop()  # a port nobody listens on
    monkeypatch.setenv("ELIR_RELEASE_ENDPOINT", dead.url)
    with pytest.raises(DownloadError) as err:
        publish_weights(REPO)
    assert "cannot be reached" in err.value.message and "--from DIR" in (err.value.hint or "")
    assert REPO not in hub_server.repos and not list(staging.iterdir())
    assert not list(store.downloads_dir().glob("*"))


@pytest.mark.parametrize("style", ["bundled", "indent 4 with a final newline"])
def test_writing_the_manifest_changes_only_the_new_values(style: str, tmp_path: Path) -> None:
    text = (weights_dir() / "manifest.json").read_text()
    if style != "bundled":
        text = json.dumps(json.loads(text), indent=4) + "\n"
    path = tmp_path / "manifest.json"
    path.write_text(text)
    files = tuple(PublishedFile(task=t, filename=f"elir_{t}.safetensors", sha256=f"{i:064x}", size=1,
                                source_name=f"elir_{t}.pth", source_sha256="0" * 64)
                  for i, t in enumerate(TASKS))
    publication = Publication(repo_id="my-org/elir", revision="a" * 40, commit_url=None, files=files)
    write_manifest_entries(publication, path)
    after = path.read_text()
    changed = [line for line in difflib.ndiff(text.splitlines(), after.splitlines()) if line[:2] in ("- ", "+ ")]
    assert len(changed) == 2 * (2 + len(TASKS))  # repo_id, revision and five sha256 lines, - and +
    assert after.endswith("\n") == text.endswith("\n")
    data = json.loads(after)
    assert data["hub"] == {"repo_id": "my-org/elir", "revision": "a" * 40}
    assert [data["tasks"][t]["sources"]["hub"]["sha256"] for t in TASKS] == [f.sha256 for f in files]
    assert not [p for p in tmp_path.iterdir() if p.name != "manifest.json"]  # no temporary file left
