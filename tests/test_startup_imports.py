"""Start-up: restoring a face photo imports neither torchvision nor facexlib.

torchvision 0.29 imports ``torch._dynamo`` (the compiler) when it is
imported, 1.2-3 s of every run's start-up, and facexlib imports torchvision;
detection uses our own copy of RetinaFace instead (``elir_cli.faces.retinaface``,
pinned to facexlib's by ``test_retinaface_parity.py``).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from cli_helpers import tiny_weights

ROOT = Path(__file__).resolve().parent.parent
PHOTO = Path(__file__).parent / "data" / "photos" / "faces" / "grace_hopper.jpg"
NOT_ON_THE_RESTORE_PATH = ("torchvision", "facexlib", "torch._dynamo")

# Runs the real ``elir`` entry point in this fresh interpreter, then reports what it imported.
RUN_ELIR_THEN_REPORT = """
import json, sys
from elir_cli.cli import main
report, sys.argv = sys.argv[1], ["elir", *sys.argv[2:]]
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code
with open(report, "w") as f:
    json.dump({"code": code, "modules": sorted(sys.modules)}, f)
"""


def test_restoring_a_face_photo_imports_neither_torchvision_nor_facexlib(tmp_path: Path) -> None:
    weights = tiny_weights(tmp_path, "bfr")
    report = tmp_path / "modules.json"
    out = tmp_path / "restored.jpg"
    # fp32: the same path as auto without its one-off calibration run (seconds on 2 cores)
    done = subprocess.run(
        [sys.executable, "-c", RUN_ELIR_THEN_REPORT, str(report), "restore", str(PHOTO), "-o", str(out),
         "--weights", str(weights), "--steps", "1", "--seed", "1", "--device", "cpu", "--precision", "fp32",
         "--json"],
        capture_output=True, env={**os.environ, "COLUMNS": "200"}, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    result = json.loads(report.read_text())
    assert result["code"] == 0, done.stderr.decode()[-2000:]
    record = json.loads(done.stdout)["files"][0]
    assert record["status"] == "restored" and record["faces"] == 1 and out.exists(), record
    modules = set(result["modules"])
    loaded = sorted(m for m in modules if any(m == name or m.startswith(name + ".")
                                              for name in NOT_ON_THE_RESTORE_PATH))
    assert loaded == [], f"imported on the restore path: {loaded[:10]}"
    # the check can see what a run imports: torch, the detector, the model
    assert {"torch", "elir_cli.faces.detection", "elir_cli.model.elir"} <= modules


def imported_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_no_module_of_the_package_imports_torchvision_or_facexlib() -> None:
    """Lazy imports included: none of our code needs them (evaluation's pyiqa may, on its own)."""
    offenders = {}
    for path in sorted((ROOT / "elir_cli").rglob("*.py")):
        bad = {n for n in imported_names(path) if n.split(".")[0] in ("torchvision", "facexlib")}
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert offenders == {}
    # the walk sees lazy imports: the detector imports torch inside a method
    assert "torch" in imported_names(ROOT / "elir_cli" / "faces" / "detection.py")
