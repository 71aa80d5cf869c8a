"""``elir batch --engine ray``: the local batch's guarantees, on a local Ray instance.

One Ray instance (2 CPUs) serves the whole module; the CLI runs in a
subprocess and joins it with ``--ray-address``. The model is the tiny random
denoiser, ``--steps 1``, on small real photos (good and awkward files, nested).

Outputs are compared with the local engine's run under ``OMP_NUM_THREADS=1``:
each Ray worker has one CPU and runs torch on one thread, and oneDNN's float
sums (hence the last bit of some pixels) depend on the thread count.

``--precision auto`` throughout: the driver decides the precision once (from
the calibration record the local run left in the shared store) and the workers
use it, so both engines run at the same precision. The Ray instance's workers
get a store of their own (``WORKER_STORE``), where nothing must appear.

Folders as URLs run against a local S3-compatible server (moto) on 127.0.0.1,
found through ``AWS_ENDPOINT_URL`` as a user would point at MinIO or the like.
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

from tests.helpers.cli_helpers import TRACEBACK, assert_one_line_error, run_elir, tiny_weights
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.ray
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
# Written by make_tree beside the photos: a text file (passed over) and one whose name says JPEG
# though its bytes are not one (reported as failed, as the bad photos are).
NAMED_AS_IMAGE = "fake.jpg"
FAILING = [*BAD, NAMED_AS_IMAGE]
WORKERS = 2
COMMON = ["--task", "denoising", "--steps", "1", "--seed", "0", "--device", "cpu"]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
JOB_TIMEOUT_S = 400
# The credentials of the Ray nodes (moto takes any; it refuses requests without).
NODE_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true"}


def make_tree(root: Path, files: dict[str, str], *, named_as_image: bool = True) -> dict[str, Path]:
    made = {}
    for name, source in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PHOTOS / source, root / name)
        made[name] = root / name
    (root / "notes.txt").write_text("not an image")
    if named_as_image:
        (root / NAMED_AS_IMAGE).write_text("not a jpeg either")
    return made


def outputs(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def stamps(out: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(out).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}


def comparable(report: dict[str, Any]) -> dict[str, Any]:
    """A report without its timings."""
    return {**report, "seconds": None, "files": [dict(f, seconds=None) for f in report["files"]]}


@pytest.fixture(scope="module")
def worker_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The elir store the Ray workers see (their node's): the driver's decisions must not need it."""
    return tmp_path_factory.mktemp("worker-store")


@pytest.fixture(scope="module")
def ray_address(tmp_path_factory: pytest.TempPathFactory, worker_store: Path) -> Iterator[str]:
    """A local Ray instance for the module: 2 CPUs, no dashboard, a small object store.

    Its workers inherit this environment: their own elir store and the nodes' AWS credentials.
    """
    temp = tmp_path_factory.mktemp("ray")
    node_env = {**NODE_AWS, "ELIR_CACHE": str(worker_store / "elir"), "HF_HOME": str(worker_store)}
    saved = {name: os.environ.get(name) for name in node_env}
    os.environ.update(node_env)
    try:
        ray.init(num_cpus=WORKERS, include_dashboard=False, object_store_memory=200 * 1024 * 1024,
                 _temp_dir=str(temp), logging_level="ERROR", log_to_driver=False)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_weights(tmp_path_factory.mktemp("weights"), "denoising")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The drivers' store for the module's runs (module fixtures run outside the per-test one):
    its calibration records are the session's shared ones, as in every test's store."""
    home = tmp_path_factory.mktemp("driver-store")
    (home / "elir" / "records").mkdir(parents=True)
    (home / "elir" / "records" / "calibration").symlink_to(
        tmp_path_factory.getbasetemp() / "shared-calibration-records", target_is_directory=True)
    (tmp_path_factory.getbasetemp() / "shared-calibration-records").mkdir(exist_ok=True)
    return {"HF_HOME": str(home), "ELIR_CACHE": str(home / "elir")}


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory, weights: Path, store: dict[str, str]) -> dict[str, Any]:
    """The local engine on the tree, one torch thread: the reference outputs and report."""
    root = tmp_path_factory.mktemp("local")
    src, out = root / "in", root / "out"
    make_tree(src, {**GOOD, **BAD})
    # Relative folders, as a user types them (Ray's workers start elsewhere and must find them).
    done = run_elir("batch", "in", "-o", "out", "--weights", str(weights), *COMMON,
                    "--report", str(root / "report.json"), env={**ONE_THREAD, **store}, cwd=root)
    assert done.returncode == 1, done.stderr.decode()
    report = json.loads((root / "report.json").read_text())
    return {"src": src, "out": out, "report": report, "outputs": outputs(out)}


def test_ray_engine_matches_the_local_engine_and_a_rerun_restores_nothing(
        ray_address: str, weights: Path, local_run: dict[str, Any], store: dict[str, str], worker_store: Path,
        tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    make_tree(src, {**GOOD, **BAD})
    args = ["batch", "in", "-o", "out", "--weights", str(weights), *COMMON, "--engine", "ray",
            "--ray-address", ray_address, "--num-model-workers", str(WORKERS), "--report", str(tmp_path / "r1.json")]
    first = run_elir(*args, timeout=JOB_TIMEOUT_S, cwd=tmp_path, env=store)
    err = first.stderr.decode()
    assert first.returncode == 1, err  # the bad files failed
    assert TRACEBACK not in err
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == len(FAILING), err
    for name in FAILING:
        assert sum(line.startswith(f"Error: in/{name}:") for line in errors) == 1, (name, errors)
    assert "files/s" in err  # progress with a rate, on stderr

    # Byte for byte the local engine's outputs, under the same names.
    assert outputs(out) == local_run["outputs"]
    assert len(local_run["outputs"]) == len(GOOD)
    # The same report, apart from timings and the folders' locations.
    r1 = json.loads((tmp_path / "r1.json").read_text())
    assert comparable(r1) == comparable(local_run["report"])
    assert r1["totals"] == {"restored": len(GOOD), "skipped": 0, "failed": len(FAILING)}
    assert not [p for p in out.rglob(".*")], "a temporary file was left behind"

    before = stamps(out)
    assert r1["settings"]["device"] == local_run["report"]["settings"]["device"]  # "cpu (<precision>, auto)"
    assert not list(worker_store.rglob("*.json")), "a worker calibrated on its own"

    again = run_elir(*args[:-1], str(tmp_path / "r2.json"), timeout=JOB_TIMEOUT_S, cwd=tmp_path, env=store)
    assert again.returncode == 1, again.stderr.decode()
    r2 = json.loads((tmp_path / "r2.json").read_text())
    assert r2["totals"] == {"restored": 0, "skipped": len(GOOD), "failed": len(FAILING)}
    assert stamps(out) == before, "a finished output was written again"


def _registry_class():  # defined in a function, so Ray ships it by value to the cluster
    @ray.remote(num_cpus=0)
    class Registry:
        """Learns the model workers' handles as they start."""

        def __init__(self) -> None:
            self.handles: list[Any] = []

        def register(self, handle: Any, ready_at: float) -> None:
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
    from elir_cli.pipeline.settings import RestoreSettings

    copies = 2  # enough files that the kill lands with work left
    files = {f"{k}/{name}": source for k in range(copies) for name, source in GOOD.items()}
    src, out = tmp_path / "in", tmp_path / "out"
    make_tree(src, {**files, **BAD})
    settings = RestoreSettings(task="denoising", weights=str(weights), steps=1, seed=0, device="cpu", suffix="")
    options = RayOptions(address=ray_address, num_model_workers=WORKERS)
    registry_name = f"elir-test-registry-{os.getpid()}"
    registry = _registry_class().options(name=registry_name).remote()
    done: list[Any] = []
    results: list[Any] = []
    three_done = threading.Event()  # set when three files are done, or when the job ends before

    def on_done(record: Any) -> None:
        done.append(record)
        if len(done) >= 3:
            three_done.set()

    def run() -> None:
        try:
            results.append(run_ray_batch(settings, plan_batch(src, out), options, on_done=on_done,
                                         worker_registry=registry_name))
        finally:
            three_done.set()

    job = threading.Thread(target=run)
    job.start()
    assert three_done.wait(JOB_TIMEOUT_S), "three files were not done in time"
    wait_until(lambda: ray.get(registry.workers.remote()) or not job.is_alive(), JOB_TIMEOUT_S,
               "a model worker registered")
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


@pytest.mark.parametrize("output", ["out", "s3://elir-restored/out"])
def test_without_ray_the_cli_says_how_to_install_it(tmp_path: Path, output: str) -> None:
    """Ray Data (and pyarrow, which comes with it and opens URL folders) missing: one line."""
    for module in ("ray", "pyarrow"):
        hide = tmp_path / "hide" / module
        hide.mkdir(parents=True)
        (hide / "__init__.py").write_text(f"raise ModuleNotFoundError(\"No module named '{module}'\", name='{module}')\n")
    src = tmp_path / "in"
    make_tree(src, {"hopper.webp": "hopper.webp"})
    path = os.pathsep.join([str(tmp_path / "hide"), os.environ.get("PYTHONPATH", "")])
    done = run_elir("batch", str(src), "-o", output if "://" in output else str(tmp_path / output), *COMMON,
                    "--engine", "ray", env={"PYTHONPATH": path})
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


# -- --precision auto: decided once, by the driver ---------------------------------------------

def test_the_workers_use_the_drivers_precision(ray_address: str, worker_store: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The driver's store says bf16 failed for these weights: the workers run fp32, and calibrate nothing.

    Left to themselves the workers would calibrate (their store has no record) and might pick bf16.
    """
    from elir_cli.model.runtime import cpu_supports_bf16
    from elir_cli.registry.store import CalibrationRecord, sha256_file, write_calibration

    if not cpu_supports_bf16():
        pytest.skip("auto is fp32 on a CPU without bf16: there is no choice for the driver to make")
    weights = tiny_weights(tmp_path / "w", "denoising", seed=7)  # weights of its own: no shared record
    driver_home = tmp_path / "driver"
    monkeypatch.setenv("ELIR_CACHE", str(driver_home / "elir"))
    write_calibration(CalibrationRecord(sha256=sha256_file(weights), precision="bf16", device_kind="cpu",
                                        psnr_db=10.0, threshold_db=45.0, passed=False, images=1, seconds=0.0,
                                        task="denoising", per_image_db=(10.0,)))
    src = tmp_path / "in"
    make_tree(src, {name: GOOD[name] for name in ("a/gray.jpg",)}, named_as_image=False)
    store = {"HF_HOME": str(driver_home), "ELIR_CACHE": str(driver_home / "elir")}
    ran = {}
    for engine, extra in (("ray", ["--engine", "ray", "--ray-address", ray_address, "--num-model-workers", "1"]),
                          ("fp32", ["--precision", "fp32"]), ("bf16", ["--precision", "bf16"])):
        done = run_elir("batch", "in", "-o", engine, "--weights", str(weights), *COMMON, *extra,
                        "--report", f"{engine}.json", env={**ONE_THREAD, **store}, cwd=tmp_path,
                        timeout=JOB_TIMEOUT_S)
        assert done.returncode == 0, done.stderr.decode()
        ran[engine] = outputs(tmp_path / engine)
    report = json.loads((tmp_path / "ray.json").read_text())
    assert report["settings"]["device"] == "cpu (fp32, auto)"
    assert ran["fp32"] != ran["bf16"], "the two precisions give the same bytes: the test cannot tell them apart"
    assert ran["ray"] == ran["fp32"]
    assert not list(worker_store.rglob("*.json")), "a worker calibrated on its own"


def test_a_driver_without_the_workers_device_decides_in_a_ray_task(
        ray_address: str, weights: Path, worker_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU head node of a GPU cluster: the decision runs in a Ray task with a worker's resources.

    Here the driver pretends it has no CPU device, so a decision can only come from the task.
    """
    import elir_cli.model.runtime as runtime
    from elir_cli.distributed.cluster import RayOptions
    from elir_cli.distributed.precision import decide_precision
    from elir_cli.errors import UsageError
    from elir_cli.pipeline.settings import RestoreSettings

    def no_device(name: str = "auto") -> Any:
        raise UsageError(f"this driver has no {name} device")

    monkeypatch.setattr(runtime, "resolve_device", no_device)
    assert ray.is_initialized()  # the module's instance: the task runs on its workers
    settings = RestoreSettings(task="denoising", weights=str(weights), steps=1, seed=0, device="cpu")
    before = set(worker_store.rglob("*.json"))
    try:
        decision = decide_precision(settings, {str(weights): weights}, RayOptions(address=ray_address))
    finally:
        for made in set(worker_store.rglob("*.json")) - before:  # the task calibrated in the workers' store
            made.unlink()
    assert decision is not None and decision.precision in ("bf16", "fp32")
    assert decision.device == f"cpu ({decision.precision}, auto)"


# -- videos: restored by the local engine after the Ray job ----------------------------------

def test_videos_in_a_ray_batch_are_restored_after_the_photos(ray_address: str, weights: Path,
                                                              store: dict[str, str], tmp_path: Path) -> None:
    from tests.helpers.videoclips import ffmpeg_exe, make_clip

    pytest.importorskip("av", reason='video needs PyAV: pip install "elir-cli[video]"')
    if ffmpeg_exe() is None:
        pytest.skip("no ffmpeg executable to make a clip (PATH or imageio-ffmpeg)")
    src = tmp_path / "in"
    make_tree(src, {"hopper.webp": "hopper.webp", "a/gray.jpg": "hopper_gray.jpg"}, named_as_image=False)
    make_clip(src / "a" / "clip.mov", seconds=0.5, fps=10)
    runs = {}
    for engine, extra in (("ray", ["--engine", "ray", "--ray-address", ray_address, "--num-model-workers", "1"]),
                          ("local", [])):
        done = run_elir("batch", "in", "-o", engine, "--weights", str(weights), *COMMON, "--aligned", *extra,
                        "--report", f"{engine}.json", env={**ONE_THREAD, **store}, cwd=tmp_path,
                        timeout=JOB_TIMEOUT_S)
        assert done.returncode == 0, done.stderr.decode()[-3000:]
        runs[engine] = (done.stderr.decode(), json.loads((tmp_path / f"{engine}.json").read_text()))
    err, report = runs["ray"]
    assert "1 video: restored by the local engine on this machine" in err
    assert [f["input"] for f in report["files"]] == [f["input"] for f in runs["local"][1]["files"]]
    assert [f["status"] for f in report["files"]] == ["restored"] * 3
    video = next(f for f in report["files"] if f["input"].endswith("clip.mov"))
    assert video["frames"] == 5 and Path(tmp_path / video["output"]).is_file()
    assert outputs(tmp_path / "ray") == outputs(tmp_path / "local")


# -- folders as URLs: a local S3-compatible server -------------------------------------------

IN_BUCKET, OUT_BUCKET = "elir-photos", "elir-restored"
FEW = ("a/gray.jpg", "c/palette.png")  # a smaller tree, for the S3-to-local run


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """moto's S3 on 127.0.0.1 with the test tree under s3://elir-photos/in, and an empty output bucket."""
    pytest.importorskip("moto.server", reason="the S3 tests need moto[server] (in the test extra)")
    boto3 = pytest.importorskip("boto3", reason="the S3 tests need boto3 (with moto)")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {**NODE_AWS, "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    for bucket in (IN_BUCKET, OUT_BUCKET):
        client.create_bucket(Bucket=bucket)
    root = tmp_path_factory.mktemp("s3tree")
    make_tree(root, {**GOOD, **BAD})
    for path in sorted(root.rglob("*")):
        if path.is_file():
            name = path.relative_to(root).as_posix()
            client.put_object(Bucket=IN_BUCKET, Key=f"in/{name}", Body=path.read_bytes())
            if name in FEW:
                client.put_object(Bucket=IN_BUCKET, Key=f"few/{name}", Body=path.read_bytes())
    try:
        yield {"env": env, "client": client}
    finally:
        server.stop()


def bucket_files(client: Any, bucket: str, prefix: str) -> dict[str, bytes]:
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for o in page.get("Contents", [])]
    return {k[len(prefix):]: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in sorted(keys)}


def test_s3_folders_give_the_local_engines_outputs_and_a_rerun_skips(
        ray_address: str, weights: Path, local_run: dict[str, Any], store: dict[str, str], s3: dict[str, Any],
        tmp_path: Path) -> None:
    client = s3["client"]
    args = ["batch", f"s3://{IN_BUCKET}/in", "-o", f"s3://{OUT_BUCKET}/run1", "--weights", str(weights), *COMMON,
            "--engine", "ray", "--ray-address", ray_address, "--num-model-workers", str(WORKERS)]
    env = {**s3["env"], **store}
    first = run_elir(*args, "--report", str(tmp_path / "r1.json"), env=env, timeout=JOB_TIMEOUT_S)
    err = first.stderr.decode()
    assert first.returncode == 1, err
    assert TRACEBACK not in err
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == len(FAILING), err
    for name in FAILING:
        assert sum(line.startswith(f"Error: s3://{IN_BUCKET}/in/{name}:") for line in errors) == 1, (name, errors)

    written = bucket_files(client, OUT_BUCKET, "run1/")
    assert written == local_run["outputs"]  # byte for byte, same names, no temporary objects
    r1 = json.loads((tmp_path / "r1.json").read_text())
    assert r1["totals"] == {"restored": len(GOOD), "skipped": 0, "failed": len(FAILING)}
    local_files = local_run["report"]["files"]
    assert [f["input"] for f in r1["files"]] == [f"s3://{IN_BUCKET}/" + f["input"] for f in local_files]
    assert [f["output"] for f in r1["files"]] == [
        None if f["output"] is None else f"s3://{OUT_BUCKET}/run1/" + f["output"][len("out/"):] for f in local_files]
    same = ("status", "faces", "face_boxes", "size", "hint")
    assert [{k: f[k] for k in same} for f in r1["files"]] == [{k: f[k] for k in same} for f in local_files]
    assert [len(f["warnings"]) for f in r1["files"]] == [len(f["warnings"]) for f in local_files]

    stamps_before = {o["Key"]: o["ETag"] + str(o["LastModified"])
                     for o in client.list_objects_v2(Bucket=OUT_BUCKET, Prefix="run1/")["Contents"]}
    again = run_elir(*args, "--report", str(tmp_path / "r2.json"), env=env, timeout=JOB_TIMEOUT_S)
    assert again.returncode == 1, again.stderr.decode()
    r2 = json.loads((tmp_path / "r2.json").read_text())
    assert r2["totals"] == {"restored": 0, "skipped": len(GOOD), "failed": len(FAILING)}
    assert {o["Key"]: o["ETag"] + str(o["LastModified"])
            for o in client.list_objects_v2(Bucket=OUT_BUCKET, Prefix="run1/")["Contents"]} == stamps_before


def test_an_s3_folder_into_a_local_folder(ray_address: str, weights: Path, local_run: dict[str, Any],
                                          store: dict[str, str], s3: dict[str, Any], tmp_path: Path) -> None:
    """An s3:// SRC with a local DST: written through a temporary name and a move, the same bytes."""
    expected = {k: v for k, v in local_run["outputs"].items() if k.startswith(tuple(n.rsplit(".", 1)[0] + "." for n in FEW))}
    assert len(expected) == len(FEW)
    down = run_elir("batch", f"s3://{IN_BUCKET}/few", "-o", "down", "--weights", str(weights), *COMMON,
                    "--engine", "ray", "--ray-address", ray_address, "--num-model-workers", "1",
                    env={**s3["env"], **store}, timeout=JOB_TIMEOUT_S, cwd=tmp_path)
    assert down.returncode == 0, down.stderr.decode()
    assert outputs(tmp_path / "down") == expected  # no temporary file left either


@pytest.mark.parametrize("case", ["missing input bucket", "missing output bucket", "bad credentials",
                                  "local engine"])
def test_storage_errors_are_one_line(case: str, weights: Path, s3: dict[str, Any], tmp_path: Path) -> None:
    src, dst, env = f"s3://{IN_BUCKET}/in", f"s3://{OUT_BUCKET}/x", dict(s3["env"])
    engine = ["--engine", "ray", "--num-model-workers", "1"]
    expect = ""
    if case == "missing input bucket":
        src, expect = "s3://no-such-bucket-elir/in", "Error: cannot list s3://no-such-bucket-elir/in: "
    elif case == "missing output bucket":
        dst, expect = "s3://no-such-bucket-elir/out", "Error: the output bucket 'no-such-bucket-elir'"
    elif case == "bad credentials":
        env.update(AWS_ACCESS_KEY_ID="AKIAWRONGWRONGWRONG0", AWS_SECRET_ACCESS_KEY="wrong")
        env["AWS_ENDPOINT_URL"] = s3_strict_endpoint(tmp_path)
        expect = f"Error: cannot list {src}: "
    else:
        engine, expect = [], f"Error: {src} is a URL; the local engine"
    done = run_elir("batch", src, "-o", dst, "--weights", str(weights), *COMMON, *engine, env=env, timeout=120)
    line = assert_one_line_error(done)
    assert line.startswith(expect), line
    if case == "bad credentials":
        assert "INVALID_ACCESS_KEY_ID" in line
    assert "Hint:" in done.stderr.decode()
    assert bucket_files(s3["client"], OUT_BUCKET, "x/") == {}


def s3_strict_endpoint(tmp_path: Path) -> str:
    """A second moto server that checks credentials (none are valid), in a process of its own."""
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _STRICT.append(server)

    def listening() -> bool:
        assert server.poll() is None, f"the strict moto server exited ({server.returncode})"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    wait_until(listening, 30, "the strict moto server listening")
    return f"http://127.0.0.1:{port}"


_STRICT: list[Any] = []


@pytest.fixture(autouse=True)
def _stop_strict_servers() -> Iterator[None]:
    yield
    while _STRICT:
        server = _STRICT.pop()
        server.terminate()
        server.wait(10)
