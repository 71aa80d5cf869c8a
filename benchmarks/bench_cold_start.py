"""Cold-start time of the ``elir`` commands, as a user typing them sees it.

Each run starts a fresh process (a new interpreter, nothing imported yet).
Two parts:

- the fast commands (help, version, models list), target under 0.5 s each;
- ``--photo-runs`` (default 3, 0 skips it): restoring one real photo (one
  face, bfr, the real model size with random weights imported into a
  temporary cache), split into the model's share (the file's own time from
  ``--json``) and start-up (imports and loading); the imports on their own
  (``import torch``; facexlib's detector, which imports torchvision, which
  imports ``torch._dynamo``); the two commands that have nothing to
  restore (an output that exists; a finished batch run again), which must
  answer without loading anything; and a restore with no weights cached
  and the Hub offline, which must fail before torch is imported.

Prints tables of median / min / max wall time and writes the raw numbers to JSON.

    python benchmarks/bench_cold_start.py --runs 15 --photo-runs 3 --out cold_start.json
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


def photo_results(base: list[str], env: dict[str, str], runs: int, folder: Path) -> list[dict[str, object]]:
    import_weights(base, env, folder)
    python = [sys.executable, "-c"]
    imports = [
        summary("import torch", [time_once(python + ["import torch"], env) for _ in range(runs)]),
        summary("import torch + facexlib detector",
                [time_once(python + ["import torch, facexlib.detection"], env) for _ in range(runs)]),
    ]
    walls, model = [], []
    for i in range(runs):
        wall, out = run_timed(base + ["restore", str(PHOTO), "-o", str(folder / f"out{i}.jpg"), "--seed", "1",
                                      "--device", "cpu", "--json"], env)
        walls.append(wall)
        model.append(float(json.loads(out)["files"][0]["seconds"]))
    first = summary("elir restore photo.jpg (1 face)", walls,
                    file_seconds=model, startup_s=[w - m for w, m in zip(walls, model)])
    exists = summary("elir restore, output exists",
                     [time_once(base + ["restore", str(PHOTO), "-o", str(folder / "out0.jpg")], env, expect=1)
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
    return [*imports, first, exists, rerun, missing]


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
        print(f"\n{'one photo, fresh process':<34} {'median':>8} {'min':>8} {'max':>8}")
        for r in photo:
            print(f"{r['command']:<34} {r['median_s']:>8.3f} {r['min_s']:>8.3f} {r['max_s']:>8.3f}")
            if "file_seconds" in r:
                print(f"{'  of which restoring the file':<34} {statistics.median(r['file_seconds']):>8.3f}")
                print(f"{'  of which start-up and loading':<34} {statistics.median(r['startup_s']):>8.3f}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"python": sys.version.split()[0], "platform": platform.platform(),
              "cpus": os.cpu_count(), "target_s": TARGET_S, "results": results, "photo": photo}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
