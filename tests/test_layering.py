"""The package layers cleanly: arrows point down only, and nothing imports in a circle.

Each subpackage's docstring declares what it may import (``May import: ...``).
This test reads every module with ``ast`` (imports inside functions included,
since a lazy import is still a dependency), checks each import against the
importing subpackage's declaration, and looks for cycles among modules.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "elir_cli"
# Modules every layer may use; they import no subpackage themselves.
BASE = {"elir_cli.errors", "elir_cli.atomicwrite", "elir_cli._version", "elir_cli._lazy"}
MAY_IMPORT = re.compile(r"May import:\s*(?P<what>[^\n]+)")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def subpackage_of(module: str) -> str | None:
    """``elir_cli.registry.hub`` -> ``elir_cli.registry``; base and top-level modules -> None."""
    parts = module.split(".")
    if len(parts) >= 2 and (PACKAGE / parts[1] / "__init__.py").exists():
        return ".".join(parts[:2])
    return None


def imports_of(path: Path) -> set[str]:
    """Every elir_cli module ``path`` imports, at any depth of the file, resolved to absolute names."""
    return imports_in(path.read_text(), module_name(path), is_package=path.name == "__init__.py")


def imports_in(source: str, me: str, *, is_package: bool = False) -> set[str]:
    tree = ast.parse(source)
    package = me if is_package else me.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "elir_cli")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "elir_cli":
                continue
            for alias in node.names:  # ``from pkg import module`` names a module
                candidate = f"{target}.{alias.name}"
                sub = PACKAGE.joinpath(*candidate.split(".")[1:])
                found.add(candidate if sub.with_suffix(".py").exists() or sub.is_dir() else target)
    found.discard(me)
    return found


def declared_layers() -> dict[str, set[str]]:
    """Subpackage -> the subpackages its docstring says it may import."""
    allowed: dict[str, set[str]] = {}
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        match = MAY_IMPORT.search(doc)
        assert match, f"{init.relative_to(ROOT)}: the docstring must say 'May import: ...'"
        what = match.group("what").strip().rstrip(".")
        name = module_name(init)
        if what.startswith("everything"):
            allowed[name] = {"*"}
        else:
            allowed[name] = {w.strip() for w in what.split(",") if w.strip().startswith("elir_cli.")}
    return allowed


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def test_every_subpackage_declares_its_layer() -> None:
    layers = declared_layers()
    assert {"elir_cli.model", "elir_cli.registry", "elir_cli.images", "elir_cli.faces",
            "elir_cli.pipeline", "elir_cli.cli"} <= set(layers)
    for name, allowed in layers.items():
        for other in allowed - {"*"}:
            assert other in layers, f"{name} declares it may import {other}, which is not a subpackage"


def test_lower_layers_never_import_higher_ones() -> None:
    layers = declared_layers()
    wrong = []
    for module, path in all_modules().items():
        mine = subpackage_of(module)
        for target in imports_of(path):
            theirs = subpackage_of(target)
            if module in BASE:
                if theirs is not None or target == "elir_cli":
                    wrong.append(f"{module} (a base module) imports {target}")
                continue
            if theirs is None:
                if target in BASE:
                    continue
                # The public face (elir_cli/__init__) and __main__ sit above every layer but the CLI.
                if mine is None or "*" in layers[mine]:
                    continue
                wrong.append(f"{module} imports the top-level {target}")
                continue
            if mine is None or theirs == mine or "*" in layers[mine] or theirs in layers[mine]:
                continue
            wrong.append(f"{module} imports {target}: {mine} may import only {sorted(layers[mine]) or 'the base modules'}")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles() -> None:
    modules = all_modules()
    graph = {m: {t for t in imports_of(p) if t in modules} for m, p in modules.items()}
    # A package's __init__ that re-exports a submodule (cli/__init__ -> cli.app) is not a cycle
    # with that submodule importing a sibling; only real module-to-module loops count.
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("source, expected", [
    ("from elir_cli.pipeline.photo import restore_image\n", "elir_cli.pipeline.photo"),
    ("def f():\n    from ..pipeline import photo\n", "elir_cli.pipeline.photo"),
    ("def f():\n    from ..pipeline.tiling import restore_tiled\n", "elir_cli.pipeline.tiling"),
    ("import elir_cli.faces.paste\n", "elir_cli.faces.paste"),
    ("from .store import sha256_file\n", "elir_cli.registry.store"),
])
def test_the_walker_sees_lazy_and_relative_imports(source: str, expected: str) -> None:
    """The walker must see the imports that would break the layering, or the tests above prove nothing."""
    assert expected in imports_in(source, "elir_cli.registry.probe")


def test_a_lower_layer_importing_a_higher_one_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plant a lazy registry -> pipeline import and the layering test must fail."""
    real = imports_of
    probe = PACKAGE / "registry" / "hub.py"
    monkeypatch.setitem(globals(), "imports_of",
                        lambda path: real(path) | ({"elir_cli.pipeline.photo"} if path == probe else set()))
    with pytest.raises(AssertionError, match="elir_cli.registry.hub imports elir_cli.pipeline.photo"):
        test_lower_layers_never_import_higher_ones()


def test_a_cycle_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plant model.checkpoint -> registry.loading (which imports checkpoint back): a cycle."""
    real = imports_of
    probe = PACKAGE / "model" / "checkpoint.py"
    monkeypatch.setitem(globals(), "imports_of",
                        lambda path: real(path) | ({"elir_cli.registry.loading"} if path == probe else set()))
    with pytest.raises(AssertionError, match="import cycles"):
        test_no_import_cycles()
