"""Cold-start time of the fast ``elir`` commands (target: under 0.5 s each).

Each run starts a fresh process (a new interpreter, nothing imported yet), as a
user typing the command does. Prints a table of median / min / max wall time
per command and writes the raw numbers to JSON.

    python benchmarks/bench_cold_start.py --runs 15 --out cold_start.json
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
DEFAULT_OUT = Path(__file__).parent / "results" / "cold_start.json"


def elir_command() -> list[str]:
    script = Path(sys.executable).parent / "elir"
    if script.exists():
        return [str(script)]
    found = shutil.which("elir")
    return [found] if found else [sys.executable, "-m", "elir_cli"]


def time_once(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.decode()[-500:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="runs per command")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the JSON results")
    args = parser.parse_args()

    base = elir_command()
    results = []
    with tempfile.TemporaryDirectory() as home:
        # An empty cache, so `models list` does the same work on every machine.
        env = {**os.environ, "HF_HOME": home, "ELIR_CACHE": str(Path(home) / "elir")}
        for sub in COMMANDS:
            command = base + list(sub)
            times = [time_once(command, env) for _ in range(args.runs)]
            results.append({"command": "elir " + " ".join(sub), "runs": args.runs,
                            "median_s": statistics.median(times), "min_s": min(times),
                            "max_s": max(times), "times_s": times})

    print(f"{'command':<20} {'median':>8} {'min':>8} {'max':>8}  target < {TARGET_S} s")
    for r in results:
        verdict = "ok" if r["median_s"] < TARGET_S else "SLOW"
        print(f"{r['command']:<20} {r['median_s']:>8.3f} {r['min_s']:>8.3f} {r['max_s']:>8.3f}  {verdict}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"python": sys.version.split()[0], "platform": platform.platform(),
              "cpus": os.cpu_count(), "target_s": TARGET_S, "results": results}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
