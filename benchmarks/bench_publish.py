"""What `elir models publish` costs before the upload, at the real model sizes.

Writes five authors'-style ``.pth`` files (random float32 tensors with each
task's real names and shapes, from the bundled manifest) into a temporary
folder, then times ``publish_weights(..., dry_run=True)``: hashing each file,
reading it with ``torch.load(weights_only=True)``, checking it against its
task, writing our ``.safetensors``, hashing that, and writing the model card.
The upload itself is the network's business and is not timed. Prints the
wall time, the throughput and the peak resident memory, and writes JSON.

    python benchmarks/bench_publish.py --runs 3 --out publish.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RUNS = 1
DEFAULT_OUT = Path(__file__).parent / "results" / "publish.json"
MB = 1_000_000
KB_PER_MB = 1000  # ru_maxrss is in kB on Linux


def write_release_files(folder: Path) -> int:
    """Random real-size release files for every task; returns their total size in bytes."""
    import torch

    from elir_cli.model.elir import ElirModel
    from elir_cli.registry.publish import release_filename
    from elir_cli.registry.tasks import load_manifest

    total = 0
    for seed, task in enumerate(load_manifest().tasks.values()):
        with torch.device("meta"):
            shapes = {k: v.shape for k, v in ElirModel(task.model).state_dict().items()}
        generator = torch.Generator().manual_seed(seed)
        path = folder / release_filename(task)
        torch.save({k: torch.randn(shape, generator=generator) for k, shape in shapes.items()}, path)
        total += path.stat().st_size
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from elir_cli.registry.publish import publish_weights

    with tempfile.TemporaryDirectory(prefix="bench-publish-") as tmp:
        folder = Path(tmp)
        size = write_release_files(folder)
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            publication = publish_weights("bench/elir", source_dir=folder, dry_run=True)
            times.append(time.perf_counter() - start)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KB_PER_MB
    median = statistics.median(times)
    result = {"runs": times, "median_s": median, "input_mb": size / MB, "throughput_mb_s": size / MB / median,
              "peak_rss_mb": peak_mb, "files": [f.filename for f in publication.files],
              "machine": platform.platform(), "python": platform.python_version()}
    print(f"dry run of five real-size files ({size / MB:.0f} MB): median {median:.1f} s "
          f"(min {min(times):.1f}, max {max(times):.1f}, {args.runs} runs), "
          f"{size / MB / median:.0f} MB/s, peak RSS {peak_mb:.0f} MB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
