"""``elir tune`` on several processes: ``torchrun`` (DDP over gloo) and Ray Train (``--engine ray``).

The run of ``tests/test_tune.py`` (a tiny denoiser, real photos, 64 px, ``--teacher self``),
two steps of a batch of 2, compared with the same run in one process on one torch thread:

- ``torchrun --nproc-per-node 2``: each rank computes one image of the batch, the ranks
  average their gradients; the result equals the one-process run up to the order of float
  sums (the gradient of the mean over two images is the mean of the two halves' gradients);
- ``--engine ray`` with one Ray Train worker on a local Ray instance (2 CPUs): the same code as
  one rank of one, on one thread, so the weights are bitwise the one-process run's; the
  driver registers the result in its own store.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from elir_cli.tuning import Tuner, TuneSettings
from elir_cli.tuning.loop import CHECKPOINT_FILE
from tests.helpers.torch_threads import one_torch_thread  # noqa: F401  (autouse: one torch thread)
from tests.helpers.tunephotos import TASK, photos, weights  # noqa: F401  (fixtures)

STEPS = 2
SIZE = 64
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
DDP_TOLERANCE = 1e-5  # float sums in another order; AdamW's first steps are ~lr / |g| * g
LR = 1e-4


def settings(photos: Path, weights: Path, out: Path) -> TuneSettings:
    return TuneSettings(task=TASK, hq=str(photos), out=out, weights=str(weights), teacher="self", steps=STEPS,
                        batch_size=2, size=SIZE, val_every=STEPS, best_by="loss", device="cpu", lr=LR, seed=5)


def flags(s: TuneSettings) -> list[str]:
    return ["--task", s.task, "--hq", str(s.hq), "--weights", str(s.weights), "--teacher", "self",
            "--steps", str(s.steps), "--batch-size", str(s.batch), "--size", str(s.crop), "--val-every",
            str(s.val_every), "--best-by", s.best_by, "--device", "cpu", "--lr", str(LR), "--seed", str(s.seed)]


def trained(run: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(str(run / CHECKPOINT_FILE)).items() if k.startswith(("model.", "ema."))}


def test_torchrun_two_processes_compute_the_one_process_run(photos: Path, weights: Path, tmp_path: Path) -> None:
    import subprocess

    alone = settings(photos, weights, tmp_path / "alone")
    Tuner(alone, register=False).run()
    ddp = tmp_path / "ddp"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "elir_cli", "tune", *flags(alone), "-o", str(ddp), "--name", "ddp", "--json"],
                          capture_output=True, timeout=300, env={**os.environ, **ONE_THREAD})
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    result = json.loads(done.stdout)  # rank 0 alone prints
    assert result["name"] == "ddp" and result["steps"] == STEPS
    a, b = trained(tmp_path / "alone"), trained(ddp)
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < DDP_TOLERANCE, worst
    moved = max(float((a[k] - load_file(str(weights))[k[len("model."):]]).abs().max()) for k in a if k.startswith("model."))
    assert moved > 10 * DDP_TOLERANCE  # the steps did move the weights: the comparison can fail


@pytest.mark.ray
@pytest.mark.slow
def test_ray_train_one_worker_is_the_one_process_run(photos: Path, weights: Path, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray", reason='Ray is an optional extra: pip install "elir-cli[ray]"')
    pytest.importorskip("ray.train.torch", reason='Ray Train: pip install "elir-cli[ray]"')
    from elir_cli.distributed.cluster import RayOptions
    from elir_cli.registry.local import read_local_model
    from elir_cli.tuning import tune_on_ray

    alone = settings(photos, weights, tmp_path / "alone")
    Tuner(alone, register=False).run()
    on_ray = settings(photos, weights, tmp_path / "ray")
    events, logs = [], []
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        result = tune_on_ray(on_ray, RayOptions(num_model_workers=1), on_event=events.append, log=logs.append)
    finally:
        ray.shutdown()
    assert [e.step for e in events if e.kind == "validation"] == [0, STEPS] and events[-1].kind == "done"
    assert any("1 worker(s)" in line for line in logs) and any("training images" in line for line in logs)
    a, b = trained(tmp_path / "alone"), trained(tmp_path / "ray")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert result.name == "ray" and read_local_model("ray") is not None
    assert json.loads((tmp_path / "ray" / "summary.json").read_text())["name"] == "ray"
