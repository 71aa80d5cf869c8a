"""Cold-start time of the ``elir`` commands, as a user typing them sees it.

Each run starts a fresh process (a new interpreter, nothing imported yet).
Two parts:

- the fast commands (help, version, models list), target under 0.5 s each;
- ``--photo-runs`` (default 3, 0 skips it): restoring one real photo (one
  face, bfr, the real model size with random weights imported into a
  temporary cache, calibrated once by an untimed first run), split into the
  model's share (the file's own time from ``--json``) and start-up (imports
  and loading), with the start-up's share of the total. Two variants, run
  alternately in the same round so that the machine's load hits both alike:
  *after* is today's ``elir restore``; *before* is the same command in a
  process that first imports ``facexlib.detection``, as the detector did
  until it got its own copy of RetinaFace (facexlib imports torchvision,
  which imports ``torch._dynamo``): the difference is the start-up that was
  cut. Then where the start-up goes, phase by phase, in a fresh process
  that does what ``elir restore`` does through the library; the imports on
  their own (``import torch``; our detector; facexlib's); the two commands
  that have nothing to restore (an output that exists; a finished batch
  run again), which must answer without loading anything; and a restore
  with no weights cached and the Hub offline, which must fail before torch
  is imported.

Prints tables of median / min / max wall time and writes the raw numbers to JSON.

    python benchmarks/bench_cold_start.py                  # --runs 3: 5 min at load average 5 on 2 cores
    python benchmarks/bench_cold_start.py --runs 15 --photo-runs 5 --out cold_start.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = (("--help",), ("--version",), ("models", "list"), ("restore", "--help"), ("batch", "--help"))
TARGET_S = 0.5
DEFAULT_RUNS = 10
DEFAULT_PHOTO_RUNS = 3
PHOTO = Path(__file__).resolve().parent.parent / "examples" / "grace_hopper_degraded.jpg"
DEFAULT_OUT = Path(__file__).parent / "results" / "cold_start.json"


def elir_command() -> list[str]:
    script = Path(sys.executable).parent / "elir"
    if script.exists():
        return [str(script)]
    found = shutil.which("elir")
    return [found] if found else [sys.executable, "-m", "elir_cli"]


def run_timed(command: list[str], env: dict[str, str], expect: int = 0) -> tuple[float, bytes]:
    """Wall time and standard output of one run; exits unless it returns ``expect``."""
    start = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != expect:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}, expected {expect}: "
                         f"{done.stderr.decode()[-500:]}")
    return elapsed, done.stdout


def time_once(command: list[str], env: dict[str, str], expect: int = 0) -> float:
    return run_timed(command, env, expect)[0]


def summary(name: str, times: list[float], **extra: object) -> dict[str, object]:
    return {"command": name, "runs": len(times), "median_s": statistics.median(times), "min_s": min(times),
            "max_s": max(times), "times_s": times, **extra}


def import_weights(base: list[str], env: dict[str, str], folder: Path) -> None:
    """Random full-size bfr weights, imported into the cache as a user would import real ones."""
    import torch

    from elir_cli.model.checkpoint import save_safetensors
    from elir_cli.model.elir import ElirModel
    from elir_cli.registry.tasks import get_task

    torch.manual_seed(0)
    config = get_task("bfr").model
    path = save_safetensors(folder / "random_bfr.safetensors", ElirModel(config).state_dict(), config, task="bfr")
    time_once(base + ["models", "import", str(path), "--task", "bfr"], env)


# `elir` run by the interpreter itself, so that both variants start the same way; the
# entry point asks for transparent huge pages before torch is imported, and so does
# the "before" launcher before it imports facexlib (which imports torch).
LAUNCH_AFTER = "import sys; from elir_cli.cli import main; main()"
LAUNCH_BEFORE = ("import sys; from elir_cli.model.runtime import request_huge_pages; request_huge_pages(); "
                 "import facexlib.detection; from elir_cli.cli import main; main()")

# What `elir restore photo.jpg -o out.jpg --seed 1 --device cpu` does, through the library,
# with a clock between the phases of its start-up. Prints JSON.
PHASES = r"""
import json, sys, time
from pathlib import Path
clock = [("start", time.perf_counter())]
def mark(name):
    clock.append((name, time.perf_counter()))
from elir_cli.model.runtime import request_huge_pages
request_huge_pages()
import elir_cli.cli.app, elir_cli.cli.restore
mark("import the CLI (typer, rich)")
import torch
mark("import torch")
import cv2, numpy, PIL.Image
from elir_cli.pipeline.files import output_name_for
from elir_cli.pipeline.restorer import PhotoRestorer
from elir_cli.pipeline.settings import RestoreSettings
import elir_cli.faces.detection, elir_cli.faces.retinaface, elir_cli.pipeline.photo
import elir_cli.images.read, elir_cli.images.write, elir_cli.model.elir
mark("import numpy, cv2, PIL, the pipeline")
restorer = PhotoRestorer(RestoreSettings(seed=1, device="cpu"))
restorer.fetch_weights()
restorer.runtime
mark("find the weights, resolve device and precision")
restorer.model
mark("load the model, choose its precision (calibration record)")
restorer.detector
mark("build the face detector")
src = Path(sys.argv[1])
record, _ = restorer.restore_file(src, output_name_for(src, out=sys.argv[2], suffix="", many=False))
assert record.status == "restored", record.to_json()
mark("restore the file")
print(json.dumps([(name, t - clock[i][1]) for i, (name, t) in enumerate(clock[1:])]))
"""


def one_photo(command: list[str], env: dict[str, str], out: Path) -> tuple[float, float]:
    """Wall time of restoring the photo in a fresh process, and the file's own seconds."""
    wall, stdout = run_timed(command + ["restore", str(PHOTO), "-o", str(out), "--seed", "1", "--device", "cpu",
                                        "--json"], env)
    return wall, float(json.loads(stdout)["files"][0]["seconds"])


def photo_summary(name: str, runs: list[tuple[float, float]]) -> dict[str, object]:
    walls, model = [w for w, _ in runs], [m for _, m in runs]
    startup = [w - m for w, m in runs]
    return summary(name, walls, file_seconds=model, startup_s=startup,
                   startup_share=[s / w for s, w in zip(startup, walls)])


def photo_results(base: list[str], env: dict[str, str], runs: int, folder: Path) -> list[dict[str, object]]:
    import_weights(base, env, folder)
    # The first run with new weights at `auto` calibrates them once (recorded in the store);
    # it is not what this measures.
    run_timed(base + ["restore", str(PHOTO), "-o", str(folder / "warmup.jpg"), "--seed", "1", "--device", "cpu"], env)
    python = [sys.executable, "-c"]
    after, before = [], []
    for i in range(runs):  # alternating, so that load drifts hit both variants alike
        after.append(one_photo(python + [LAUNCH_AFTER], env, folder / f"after{i}.jpg"))
        before.append(one_photo(python + [LAUNCH_BEFORE], env, folder / f"before{i}.jpg"))
    photo = [photo_summary("after: elir restore photo.jpg (1 face)", after),
             photo_summary("before: same, facexlib's import first", before)]
    phases: dict[str, list[float]] = {}
    for i in range(runs):
        _, stdout = run_timed(python + [PHASES, str(PHOTO), str(folder / f"phases{i}.jpg")], env)
        for name, seconds in json.loads(stdout):
            phases.setdefault(name, []).append(seconds)
    interpreter = [time_once(python + ["pass"], env) for _ in range(runs)]
    phase_rows = [summary("python start and exit", interpreter)] + [summary(n, t) for n, t in phases.items()]
    imports = [
        summary("import torch", [time_once(python + ["import torch"], env) for _ in range(runs)]),
        summary("import torch + our detector",
                [time_once(python + ["import torch, elir_cli.faces.detection, elir_cli.faces.retinaface"], env)
                 for _ in range(runs)]),
        summary("import torch + facexlib detector",
                [time_once(python + ["import torch, facexlib.detection"], env) for _ in range(runs)]),
    ]
    exists = summary("elir restore, output exists",
                     [time_once(base + ["restore", str(PHOTO), "-o", str(folder / "warmup.jpg")], env, expect=1)
                      for _ in range(runs)])
    tree = folder / "tree"
    tree.mkdir()
    shutil.copy(PHOTO, tree / PHOTO.name)
    time_once(base + ["batch", str(tree), "-o", str(folder / "done")], env)
    rerun = summary("elir batch, all done",
                    [time_once(base + ["batch", str(tree), "-o", str(folder / "done")], env) for _ in range(runs)])
    # No weights anywhere (an empty cache) and the Hub offline: the one-line error.
    bare = {**env, "ELIR_CACHE": str(folder / "empty"), "HF_HUB_OFFLINE": "1"}
    missing = summary("elir restore, no weights, offline",
                      [time_once(base + ["restore", str(PHOTO), "-o", str(folder / "none.jpg")], bare, expect=1)
                       for _ in range(runs)])
    for row in phase_rows:
        row["kind"] = "phase"
    return [*photo, *phase_rows, *imports, exists, rerun, missing]


def print_photo(photo: list[dict[str, object]]) -> None:
    med = statistics.median
    print(f"\n{'one photo, fresh process':<42} {'median':>8} {'min':>8} {'max':>8}")
    for r in photo:
        if r.get("kind") == "phase":
            continue
        print(f"{r['command']:<42} {r['median_s']:>8.3f} {r['min_s']:>8.3f} {r['max_s']:>8.3f}")
        if "file_seconds" in r:
            print(f"{'  of which restoring the file':<42} {med(r['file_seconds']):>8.3f}")
            print(f"{'  of which start-up and loading':<42} {med(r['startup_s']):>8.3f}"
                  f"   start-up share {100 * med(r['startup_share']):.0f} %")
    after, before = photo[0], photo[1]
    cut = med(before["startup_s"]) - med(after["startup_s"])
    paired = med([b - a for b, a in zip(before["startup_s"], after["startup_s"])])
    print(f"\nstart-up cut (before - after, same run): {cut:.2f} s between medians, {paired:.2f} s "
          f"paired by round; total {before['median_s']:.2f} -> {after['median_s']:.2f} s, start-up share "
          f"{100 * med(before['startup_share']):.0f} % -> {100 * med(after['startup_share']):.0f} %")
    print(f"\n{'where the start-up goes (fresh process)':<58} {'median':>8}")
    for r in photo:
        if r.get("kind") == "phase":
            print(f"{r['command']:<58} {r['median_s']:>8.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="runs per command")
    parser.add_argument("--photo-runs", type=int, default=DEFAULT_PHOTO_RUNS,
                        help="runs of the one-photo restore and the imports (0 skips them)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the JSON results")
    args = parser.parse_args()

    base = elir_command()
    results = []
    with tempfile.TemporaryDirectory() as home:
        # An empty cache, so `models list` does the same work on every machine.
        env = {**os.environ, "HF_HOME": home, "ELIR_CACHE": str(Path(home) / "elir")}
        for sub in COMMANDS:
            command = base + list(sub)
            results.append(summary("elir " + " ".join(sub), [time_once(command, env) for _ in range(args.runs)]))
        photo = photo_results(base, env, args.photo_runs, Path(home)) if args.photo_runs > 0 else []

    print(f"{'command':<20} {'median':>8} {'min':>8} {'max':>8}  target < {TARGET_S} s")
    for r in results:
        verdict = "ok" if r["median_s"] < TARGET_S else "SLOW"
        print(f"{r['command']:<20} {r['median_s']:>8.3f} {r['min_s']:>8.3f} {r['max_s']:>8.3f}  {verdict}")
    if photo:
        print_photo(photo)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"python": sys.version.split()[0], "platform": platform.platform(),
              "cpus": os.cpu_count(), "target_s": TARGET_S, "results": results, "photo": photo}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
