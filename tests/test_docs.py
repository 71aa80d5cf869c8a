"""The documentation: the site builds with ``mkdocs build --strict``, the generated CLI
reference is current, the API reference covers the public names, and the README keeps
what CI reads from it and the examples it shows."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
TEST_COMMAND = 'python -m pip install -e ".[test]" && python -m pytest'

# Pages the site must have; the build puts each at NAME/index.html.
KEY_PAGES = ["index.html", "guides/photos/index.html", "guides/python/index.html", "guides/video/index.html",
             "guides/server/index.html", "guides/cluster/index.html", "guides/precision/index.html",
             "guides/weights/index.html", "guides/export/index.html", "guides/eval/index.html",
             "guides/tune/index.html",
             "performance/index.html", "performance-log/index.html", "development/index.html",
             "reference/cli/index.html", "reference/options/index.html", "reference/api/index.html",
             "images/serve-page.png", "images/batch-report.png"]


def load_tool(name: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_cli_reference_is_current() -> None:
    """docs/reference/cli.md is what tools/gen_cli_reference.py makes from the Typer app now."""
    generator = load_tool("gen_cli_reference")
    committed = (DOCS / "reference" / "cli.md").read_text(encoding="utf-8")
    assert generator.render() == committed, "docs/reference/cli.md is out of date: run python tools/gen_cli_reference.py"


def test_cli_reference_has_every_command() -> None:
    page = (DOCS / "reference" / "cli.md").read_text(encoding="utf-8")
    for command in ["restore", "batch", "degrade", "eval", "serve", "export", "models list", "models download",
                    "models info", "models import", "models verify", "models remove", "models publish", "tune"]:
        assert f"`elir {command}`" in page, command
    assert "--fidelity" in page and "--engine" in page and "--write-manifest" in page


def test_cli_reference_does_not_depend_on_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    generator = load_tool("gen_cli_reference")
    monkeypatch.setenv("COLUMNS", "40")
    narrow = generator.render()
    monkeypatch.setenv("COLUMNS", "300")
    assert generator.render() == narrow


def test_api_reference_documents_every_public_name() -> None:
    """Each name in elir_cli.__all__ has its "::: elir_cli.NAME" block in docs/reference/api.md."""
    import elir_cli

    page = (DOCS / "reference" / "api.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^::: elir_cli\.(\w+)\s*$", page, re.M))
    missing = sorted(set(elir_cli.__all__) - documented - {"__version__"})
    assert not missing, f"add a '::: elir_cli.NAME' block to docs/reference/api.md for: {', '.join(missing)}"
    for name in ["restore_image", "restore_array", "load_model", "restore_video", "read_image", "write_image",
                 "ElirError", "ImageError"]:
        assert name in documented


def test_readme_keeps_the_test_command_that_ci_runs() -> None:
    """.ci/run takes the fenced block after the marker; the README must keep it, unchanged."""
    lines = README.read_text(encoding="utf-8").splitlines()
    marker = lines.index("<!-- test-command -->")
    assert lines[marker + 1] == "```bash" and lines[marker + 3] == "```"
    assert lines[marker + 2] == TEST_COMMAND


def test_readme_stays_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines: move the details into a guide under docs/"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(encoding="utf-8"), re.M | re.S)


def api_calls(code: str) -> list[tuple[str, str, list[str]]]:
    """(module, name, keyword arguments) of every elir_cli name an example uses."""
    tree = ast.parse(code)
    imported: dict[str, tuple[str, str]] = {}
    used: list[tuple[str, str, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "elir_cli":
            for alias in node.names:
                imported[alias.asname or alias.name] = (node.module, alias.name)
                used.append((node.module, alias.name, []))
    for node in ast.walk(tree):
        target = node.func if isinstance(node, ast.Call) else node
        keywords = [k.arg for k in node.keywords if k.arg] if isinstance(node, ast.Call) else []
        if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "elir_cli":
            used.append(("elir_cli", target.attr, keywords))
        elif isinstance(node, ast.Call) and isinstance(target, ast.Name) and target.id in imported:
            used.append((*imported[target.id], keywords))
    return used


@pytest.mark.parametrize("path", [README, *sorted(DOCS.rglob("*.md"))], ids=lambda p: str(p.relative_to(ROOT)))
def test_python_examples_name_real_api(path: Path) -> None:
    """Every Python example parses, and the elir_cli names it uses exist and take the keywords
    it passes (the examples need real weights to run, so this is what can be checked here)."""
    import importlib

    problems = []
    for code in python_blocks(path):
        for module, name, keywords in api_calls(code):
            try:
                value = getattr(importlib.import_module(module), name)
            except ImportError as exc:  # an extra's package that is not installed
                if exc.name and exc.name.split(".")[0] == "elir_cli":
                    raise
                continue
            except AttributeError:
                problems.append(f"{module}.{name} does not exist")
                continue
            if keywords and callable(value):
                parameters = inspect.signature(value).parameters
                if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
                    problems += [f"{module}.{name} takes no {k}=" for k in keywords if k not in parameters]
    assert not problems, problems


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    """The whole site builds with every warning (broken link, missing anchor, unreadable
    docstring) an error, and has its key pages."""
    for module, package in [("mkdocs", "mkdocs"), ("material", "mkdocs-material"),
                            ("mkdocstrings_handlers.python", "mkdocstrings[python]")]:
        pytest.importorskip(module, reason=f"needs {package}, which is not installed (pip install -e '.[docs]')")
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site),
                           "--config-file", str(ROOT / "mkdocs.yml")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr[-4000:]
    missing = [page for page in KEY_PAGES if not (site / page).is_file()]
    assert not missing, missing
    api = (site / "reference" / "api" / "index.html").read_text(encoding="utf-8")
    for name in ["restore_image", "restore_array", "load_model", "restore_video", "read_image", "write_image",
                 "ElirError"]:
        assert f'id="elir_cli.{name}"' in api, name
    assert ":func:" not in api  # Sphinx roles are rewritten (tools/griffe_sphinx_roles.py)
    cli = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    assert 'id="elir-models-publish"' in cli
