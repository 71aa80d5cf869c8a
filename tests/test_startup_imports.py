"""Start-up: restoring a face photo imports neither torchvision nor facexlib; with
nothing to restore, not even torch.

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

from tests.helpers.cli_helpers import tiny_weights

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


def run_elir_then_report(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[bytes], dict]:
    """Run ``elir ARGS`` in a fresh interpreter; its output and {"code", "modules"} after it."""
    report = tmp_path / "modules.json"
    done = subprocess.run([sys.executable, "-c", RUN_ELIR_THEN_REPORT, str(report), *args],
                          capture_output=True, env={**os.environ, "COLUMNS": "200"}, timeout=300)
    return done, json.loads(report.read_text())


def test_restoring_a_face_photo_imports_neither_torchvision_nor_facexlib(tmp_path: Path) -> None:
    weights = tiny_weights(tmp_path, "bfr")
    out = tmp_path / "restored.jpg"
    # fp32: the same path as auto without its one-off calibration run (seconds on 2 cores)
    done, result = run_elir_then_report(
        tmp_path, "restore", str(PHOTO), "-o", str(out), "--weights", str(weights), "--steps", "1",
        "--seed", "1", "--device", "cpu", "--precision", "fp32", "--json")
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert result["code"] == 0, done.stderr.decode()[-2000:]
    record = json.loads(done.stdout)["files"][0]
    assert record["status"] == "restored" and record["faces"] == 1 and out.exists(), record
    modules = set(result["modules"])
    loaded = sorted(m for m in modules if any(m == name or m.startswith(name + ".")
                                              for name in NOT_ON_THE_RESTORE_PATH))
    assert loaded == [], f"imported on the restore path: {loaded[:10]}"
    # the check can see what a run imports: torch, the detector, the model
    assert {"torch", "elir_cli.faces.detection", "elir_cli.model.elir"} <= modules


def test_nothing_to_restore_imports_no_torch_even_for_reports(tmp_path: Path) -> None:
    """A finished batch run again, and a restore into an existing output, with --report/--json:
    the reports describe the settings without resolving the device (which imports torch)."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    for folder in (src, out):  # the output exists already
        (folder / PHOTO.name).write_bytes(PHOTO.read_bytes())
    done, result = run_elir_then_report(tmp_path, "batch", str(src), "-o", str(out),
                                        "--report", str(tmp_path / "run.json"))
    assert result["code"] == 0, done.stderr.decode()[-2000:]
    report = json.loads((tmp_path / "run.json").read_text())
    assert report["totals"] == {"restored": 0, "skipped": 1, "failed": 0}
    assert report["settings"]["device"] == "auto (auto), nothing loaded"
    assert "elir_cli.pipeline.files" in result["modules"] and "torch" not in result["modules"]

    done, result = run_elir_then_report(tmp_path, "restore", str(PHOTO), "-o", str(out / PHOTO.name), "--json")
    assert result["code"] == 1, done.stderr.decode()[-2000:]  # the output exists: refused
    assert json.loads(done.stdout)["files"][0]["status"] == "failed"
    assert "torch" not in result["modules"]


# What `elir --help` and `elir models list` must not import: each costs tens of ms to seconds of
# the start-up every command pays (torch ~3 s; pydantic, which typer 0.29 imports to check option
# values unless they are bools, ~85 ms; numpy ~60 ms).
NOT_ON_THE_QUICK_COMMANDS = ("torch", "numpy", "pydantic", "pydantic_core", "PIL", "cv2", "fastapi",
                             "huggingface_hub", "safetensors", "httpx", "requests", "yaml")
QUICK_COMMANDS = (("--help",), ("--version",), ("models", "--help"), ("models", "list"),
                  ("models", "list", "--json"), ("restore", "--help"), ("batch", "--help"))


def test_help_version_and_models_list_import_little(tmp_path: Path) -> None:
    for command in QUICK_COMMANDS:
        done, result = run_elir_then_report(tmp_path, *command)
        assert result["code"] in (0, None), (command, done.stderr.decode()[-2000:])
        assert done.stdout, command
        loaded = sorted({m.split(".")[0] for m in result["modules"]} & set(NOT_ON_THE_QUICK_COMMANDS))
        assert loaded == [], f"elir {' '.join(command)} imported {loaded}"
    # the check sees what a command imports: the table of `models list` is rich's
    done, result = run_elir_then_report(tmp_path, "models", "list")
    assert "rich.table" in result["modules"] and "typer" in result["modules"]


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
