"""``elir batch --engine ray``: the local batch's guarantees, on a local Ray instance.

One Ray instance (2 CPUs) serves the whole module; the CLI runs in a
subprocess and joins it with ``--ray-address``. The model is the tiny random
denoiser, ``--steps 1``, on small real photos (good and awkward files, nested).

Outputs are compared with the local engine's run under ``OMP_NUM_THREADS=1``:
each Ray worker has one CPU and runs torch on one thread, and oneDNN's float
sums (hence the last bit of some pixels) depend on the thread count.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from cli_helpers import TRACEBACK, assert_one_line_error, run_elir, tiny_weights

ray = pytest.importorskip("ray", reason='Ray is an optional extra: pip install "elir-cli[ray]"')

PHOTOS = Path(__file__).parent / "data" / "photos" / "awkward"
# (name in the tree, source photo): nested folders, a name clash (hopper.webp / hopper.gif),
# EXIF rotation, grayscale, palette, 16-bit, CMYK, float TIFF.
GOOD = {
    "hopper.webp": "hopper.webp",
    "hopper.gif": "hopper.gif",
    "a/gray.jpg": "hopper_gray.jpg",
    "a/b/rotated.jpg": "hopper_orientation_6.jpg",
    "a/b/sixteen.tif": "16bit.cropped.tif",
    "a/cmyk.jpg": "pil_sample_cmyk.jpg",
    "c/palette.png": "p_trns_single.png",
    "c/float.tiff": "10ct_32bit_128.tiff",
}
BAD = {
    "a/truncated.jpg": "truncated.jpg",
    "c/corrupt.jpg": "corrupt-header.jpg",
    "c/d/bomb.gif": "decompression_bomb.gif",
}
WORKERS = 2
# fp32: the byte-for-byte comparisons are about the engines, not about which precision each
# process's calibration picked (a worker whose calibration cannot run falls back to fp32).
COMMON = ["--task", "denoising", "--steps", "1", "--seed", "0", "--device", "cpu", "--precision", "fp32"]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
JOB_TIMEOUT_S = 400


def make_tree(root: Path, files: dict[str, str]) -> dict[str, Path]:
    made = {}
    for name, source in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PHOTOS / source, root / name)
        made[name] = root / name
    (root / "notes.txt").write_text("not an image")
    (root / "fake.jpg").write_text("not a jpeg either")
    return made


def outputs(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def stamps(out: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(out).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}


def comparable(report: dict[str, Any]) -> dict[str, Any]:
    """A report without its timings."""
    return {**report, "seconds": None, "files": [dict(f, seconds=None) for f in report["files"]]}


@pytest.fixture(scope="module")
def ray_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local Ray instance for the module: 2 CPUs, no dashboard, a small object store."""
    temp = tmp_path_factory.mktemp("ray")
    ray.init(num_cpus=WORKERS, include_dashboard=False, object_store_memory=200 * 1024 * 1024,
             _temp_dir=str(temp), logging_level="ERROR", log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_weights(tmp_path_factory.mktemp("weights"), "denoising")


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory, weights: Path) -> dict[str, Any]:
    """The local engine on the tree, one torch thread: the reference outputs and report."""
    root = tmp_path_factory.mktemp("local")
    src, out = root / "in", root / "out"
    make_tree(src, {**GOOD, **BAD})
    # Relative folders, as a user types them (Ray's workers start elsewhere and must find them).
    done = run_elir("batch", "in", "-o", "out", "--weights", str(weights), *COMMON,
                    "--report", str(root / "report.json"), env=ONE_THREAD, cwd=root)
    assert done.returncode == 1, done.stderr.decode()
    report = json.loads((root / "report.json").read_text())
    return {"src": src, "out": out, "report": report, "outputs": outputs(out)}


def test_ray_engine_matches_the_local_engine_and_a_rerun_restores_nothing(
        ray_address: str, weights: Path, local_run: dict[str, Any], tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    make_tree(src, {**GOOD, **BAD})
    args = ["batch", "in", "-o", "out", "--weights", str(weights), *COMMON, "--engine", "ray",
            "--ray-address", ray_address, "--num-model-workers", str(WORKERS), "--report", str(tmp_path / "r1.json")]
    first = run_elir(*args, timeout=JOB_TIMEOUT_S, cwd=tmp_path)
    err = first.stderr.decode()
    assert first.returncode == 1, err  # the bad files failed
    assert TRACEBACK not in err
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == len(BAD), err
    for name in BAD:
        assert sum(line.startswith(f"Error: in/{name}:") for line in errors) == 1, (name, errors)
    assert "files/s" in err  # progress with a rate, on stderr

    # Byte for byte the local engine's outputs, under the same names.
    assert outputs(out) == local_run["outputs"]
    assert len(local_run["outputs"]) == len(GOOD)
    # The same report, apart from timings and the folders' locations.
    r1 = json.loads((tmp_path / "r1.json").read_text())
    assert comparable(r1) == comparable(local_run["report"])
    assert r1["totals"] == {"restored": len(GOOD), "skipped": 0, "failed": len(BAD)}
    assert not [p for p in out.rglob(".*")], "a temporary file was left behind"

    before = stamps(out)
    again = run_elir(*args[:-1], str(tmp_path / "r2.json"), timeout=JOB_TIMEOUT_S, cwd=tmp_path)
    assert again.returncode == 1, again.stderr.decode()
    r2 = json.loads((tmp_path / "r2.json").read_text())
    assert r2["totals"] == {"restored": 0, "skipped": len(GOOD), "failed": len(BAD)}
    assert stamps(out) == before, "a finished output was written again"


def _registry_class():  # defined in a function, so Ray ships it by value to the cluster
    @ray.remote(num_cpus=0)
    class Registry:
        """Learns the model workers' handles as they start."""

        def __init__(self) -> None:
            self.handles: list[Any] = []

        def register(self, handle: Any) -> None:
            self.handles.append(handle)

        def workers(self) -> list[Any]:
            return self.handles

    return Registry


def test_a_killed_model_worker_loses_nothing(ray_address: str, weights: Path, local_run: dict[str, Any],
                                             tmp_path: Path) -> None:
    """``ray.kill`` one model worker mid-job: the job (or its rerun) restores every good file once, correctly."""
    from elir_cli.distributed import RayOptions, run_ray_batch
    from elir_cli.distributed.worker import APPEARED_HINT
    from elir_cli.pipeline.batch import plan_batch
    from elir_cli.pipeline.files import RestoreSettings

    copies = 2  # enough files that the kill lands with work left
    files = {f"{k}/{name}": source for k in range(copies) for name, source in GOOD.items()}
    src, out = tmp_path / "in", tmp_path / "out"
    make_tree(src, {**files, **BAD})
    settings = RestoreSettings(task="denoising", weights=str(weights), steps=1, seed=0, device="cpu",
                               precision="fp32", suffix="")
    options = RayOptions(address=ray_address, num_model_workers=WORKERS)
    registry_name = f"elir-test-registry-{os.getpid()}"
    registry = _registry_class().options(name=registry_name).remote()
    done: list[Any] = []
    results: list[Any] = []

    def run() -> None:
        results.append(run_ray_batch(settings, plan_batch(src, out), options, on_done=done.append,
                                     worker_registry=registry_name))

    job = threading.Thread(target=run)
    job.start()
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while (len(done) < 3 or not ray.get(registry.workers.remote())) and job.is_alive() \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    victims = ray.get(registry.workers.remote())
    assert victims and job.is_alive(), "the job ended before a worker could be killed"
    killed_at = len(done)
    ray.kill(victims[0], no_restart=False)  # as a lost node: Ray may restart it and retry its rows
    job.join(JOB_TIMEOUT_S)
    assert not job.is_alive()
    first = results[0]
    assert killed_at < len(files), "the kill did not land mid-job"

    restored = [r.input for r in first.summary.records if r.status == "restored"]
    appeared = [r.input for r in first.summary.records if r.status == "skipped" and r.hint == APPEARED_HINT]
    print(f"killed a worker after {killed_at} files; the job "
          + ("finished" if first.error is None else f"stopped ({first.error.message})"))
    if first.error is not None:  # the job stopped: the rerun completes it
        assert first.summary.interrupted
        second = run_ray_batch(settings, plan_batch(src, out), options)
        assert second.error is None
        restored += [r.input for r in second.summary.records if r.status == "restored"]
    good = sorted(str(src / name) for name in files)
    assert sorted(restored + appeared) == good, "a good file was restored twice or not at all"
    # Each copy folder mirrors the reference tree, so its outputs are the local engine's.
    expected = {f"{k}/{name}": data for k in range(copies) for name, data in local_run["outputs"].items()}
    assert outputs(out) == expected


def test_without_ray_the_cli_says_how_to_install_it(tmp_path: Path) -> None:
    hide = tmp_path / "hide" / "ray"
    hide.mkdir(parents=True)
    (hide / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'ray'\", name='ray')\n")
    src = tmp_path / "in"
    make_tree(src, {"hopper.webp": "hopper.webp"})
    path = os.pathsep.join([str(tmp_path / "hide"), os.environ.get("PYTHONPATH", "")])
    done = run_elir("batch", str(src), "-o", str(tmp_path / "out"), *COMMON, "--engine", "ray",
                    env={"PYTHONPATH": path})
    assert assert_one_line_error(done).startswith("Error: --engine ray needs Ray Data")
    assert 'Hint: pip install "elir-cli[ray]"' in done.stderr.decode()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_an_unreachable_ray_address_is_one_error_line(tmp_path: Path, weights: Path, scheme: str) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    src = tmp_path / "in"
    make_tree(src, {"hopper.webp": "hopper.webp"})
    started = time.monotonic()
    done = run_elir("batch", str(src), "-o", str(tmp_path / "out"), "--weights", str(weights), *COMMON,
                    "--engine", "ray", "--ray-address", f"{scheme}127.0.0.1:{port}", timeout=120)
    line = assert_one_line_error(done)
    assert line.startswith(f"Error: cannot reach the Ray cluster at {scheme}127.0.0.1:{port}"), line
    assert time.monotonic() - started < 60
    assert not (tmp_path / "out").exists()


def test_ray_options_need_the_ray_engine(tmp_path: Path) -> None:
    src = tmp_path / "in"
    make_tree(src, {"hopper.webp": "hopper.webp"})
    done = run_elir("batch", str(src), "-o", str(tmp_path / "out"), *COMMON, "--num-model-workers", "2")
    assert assert_one_line_error(done) == "Error: --num-model-workers needs --engine ray"


def test_a_local_pool_larger_than_the_machine_is_refused() -> None:
    from elir_cli.distributed.cluster import Cluster, RayOptions
    from elir_cli.errors import UsageError

    local = Cluster(address="", local=True, cpus=2, gpus=0)
    assert local.workers(RayOptions()) == 2
    assert local.workers(RayOptions(cpus_per_worker=2)) == 1
    local.check_fits(RayOptions(), 2)
    with pytest.raises(UsageError, match="3 model workers need 3 CPUs"):
        local.check_fits(RayOptions(), 3)
    with pytest.raises(UsageError, match="GPUs"):
        local.check_fits(RayOptions(gpus_per_worker=1), 1)
    Cluster(address="x:1", local=False, cpus=2, gpus=0).check_fits(RayOptions(), 8)  # a cluster may autoscale
