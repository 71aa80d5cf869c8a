"""The installed (non-editable) package holds every module and its data."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")


def test_every_subpackage_is_listed_in_pyproject() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "elir_cli").rglob("__init__.py")}
    assert found | {"elir_cli.weights"} == listed


def test_wheel_contains_the_modules_manifest_and_detector(tmp_path: Path) -> None:
    import subprocess

    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    if done.returncode != 0 and "setuptools" in done.stderr:
        pytest.skip(f"no setuptools>=77 available to build without isolation: {done.stderr[-200:]}")
    assert done.returncode == 0, done.stderr[-2000:]
    wheel = next(tmp_path.glob("elir_cli-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in (ROOT / "elir_cli").rglob("*.py"):
        assert module.relative_to(ROOT).as_posix() in names, module
    for data in ("manifest.json", "retinaface_mobilenet0.25.pth", "NOTICE.retinaface", "__init__.py"):
        assert f"elir_cli/weights/{data}" in names
    for page in (ROOT / "elir_cli" / "serve" / "static").iterdir():  # elir serve's web page
        assert f"elir_cli/serve/static/{page.name}" in names
    for face in (ROOT / "elir_cli" / "pipeline" / "calibration_faces").glob("*.jpg"):  # the precision calibration set
        assert f"elir_cli/pipeline/calibration_faces/{face.name}" in names


def test_the_source_tree_finds_its_manifest_without_an_install() -> None:
    """``python -c "import elir_cli..."`` in a checkout imports the source tree, where the
    manifest lives in the top-level ``weights/``, not in an ``elir_cli.weights`` package."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    code = (f"import sys; sys.path.insert(0, {str(root)!r}); "  # -S: no site-packages, so no installed copy
            "from elir_cli.registry.tasks import get_task, weights_dir; print(weights_dir()); print(get_task('bfr').name)")
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == [str(root / "weights"), "bfr"]
