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
    code = "from elir_cli.registry.tasks import get_task, weights_dir; print(weights_dir()); print(get_task('bfr').name)"
    # -S: no site-packages, so no installed copy; "-c" in the checkout puts it first on sys.path.
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True,
                         cwd=root).stdout
    assert out.split() == [str(root / "weights"), "bfr"]


# Where an optional extra's packages may be imported: the feature's own modules (lazily elsewhere,
# behind the one-line install hint, is checked by each feature's "without the extra" test).
EXTRA_OF = {"elir_cli/serve/": "serve", "elir_cli/evaluation/": "eval", "elir_cli/distributed/": "ray",
            "elir_cli/video/": "video", "elir_cli/export/": "onnx", "elir_cli/model/openvino_backend.py": "openvino",
            "elir_cli/model/onnxruntime_backend.py": "onnx",
            "elir_cli/integrations/spandrel.py": "spandrel", "elir_cli/tuning/ray_engine.py": "ray"}
# Modules the host application provides, not PyPI: ComfyUI's own (the node pack runs inside it).
HOST_PROVIDED = {"elir_cli/integrations/comfyui/": {"comfy", "folder_paths"}}


def third_party_imports(path: Path) -> set[str]:
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "elir_cli"}


def requirement_names(requirements: list[str]) -> set[str]:
    import re

    return {re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def test_every_package_we_import_is_declared() -> None:
    """What a module imports is in the dependencies, or in the extra of the feature it belongs to
    (cv2 and numpy used to arrive only through facexlib and torch)."""
    from importlib.metadata import packages_distributions

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = requirement_names(project["dependencies"])
    extras = {name: requirement_names(reqs) for name, reqs in project["optional-dependencies"].items()}
    everything = core.union(*extras.values())
    providers = packages_distributions()
    undeclared = {}
    for path in sorted((ROOT / "elir_cli").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        extra = next((e for prefix, e in EXTRA_OF.items() if rel.startswith(prefix)), None)
        allowed = core | extras[extra] if extra else everything
        host = next((mods for prefix, mods in HOST_PROVIDED.items() if rel.startswith(prefix)), set())
        for module in sorted(third_party_imports(path) - host):
            dists = {d.lower().replace("_", "-") for d in providers.get(module, [module])}
            if not dists & allowed:
                undeclared.setdefault(rel, []).append(f"{module} ({', '.join(sorted(dists))})")
    assert undeclared == {}
    # the check sees imports, lazy ones too: the hub client maps httpx2's errors; alignment is NumPy
    assert "httpx2" in third_party_imports(ROOT / "elir_cli" / "registry" / "hub.py")
    assert "numpy" in third_party_imports(ROOT / "elir_cli" / "faces" / "alignment.py")


def test_the_test_extra_pulls_in_every_feature_extra() -> None:
    """CI installs .[test]: every feature's extra must be in it, so every feature's tests run."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    test = set(extras["test"])
    missing = {name: sorted(set(reqs) - test) for name, reqs in extras.items()
               if name not in ("test", "bench") and set(reqs) - test}  # bench: benchmarks only (spandrel)
    assert missing == {}
