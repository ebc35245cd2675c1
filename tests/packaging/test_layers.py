"""The import layers: client -> hooks -> operators, sensors and triggers; the sandbox stands apart."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "airflow_provider_bitrix24"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE
#: Layers from the bottom; a module may import its own layer and the ones below it, never one above.
LAYERS = {
    "client": 0,
    "version_compat": 1,
    "failures": 1,
    "history": 1,
    "validation": 1,
    "get_provider_info": 1,
    "hooks": 2,
    "operators": 3,
    "sensors": 3,
    "triggers": 3,
}


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    """The product modules ``path`` imports (``TYPE_CHECKING`` blocks left out)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PACKAGE):
                base = ROOT.parent.joinpath(*node.module.split("."))
                for alias in node.names:  # ``from package import submodule`` imports the submodule
                    submodule = (base / alias.name).with_suffix(".py").exists()
                    found.add(f"{node.module}.{alias.name}" if submodule else node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names if alias.name.startswith(PACKAGE))
            if top_level_only and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                continue
            for field in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(node, field, None)
                if isinstance(inner, list):
                    visit([n for n in inner if isinstance(n, ast.stmt | ast.ExceptHandler)])  # type: ignore[misc]

    visit(tree.body)
    return found


def _area(module: str) -> str:
    return module.split(".")[1] if module.count(".") >= 1 else ""


SOURCES = sorted(p for p in ROOT.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_only_go_down_and_never_touch_the_sandbox(path):
    here = _module(path)
    area = _area(here)
    for target in _imports(path, top_level_only=False):
        there = _area(target)
        if area == "sandbox" or there == "sandbox":
            assert area == there, f"{here} imports {target}: the product and the sandbox never import each other"
            continue
        if area in LAYERS and there in LAYERS:
            assert LAYERS[there] <= LAYERS[area], f"{here} imports {target}, a layer above it"


def test_module_level_imports_form_no_cycle():
    graph = {_module(p): {t for t in _imports(p, top_level_only=True)} for p in SOURCES}
    done: set[str] = set()

    def walk(node: str, path: list[str]) -> None:
        if node in path:
            pytest.fail("import cycle: " + " -> ".join([*path[path.index(node) :], node]))
        if node in done:
            return
        for nxt in sorted(graph.get(node, ())):
            walk(nxt, [*path, node])
        done.add(node)

    for module in sorted(graph):
        walk(module, [])


def test_the_hook_uses_only_public_names_of_the_client():
    text = (ROOT / "hooks" / "bitrix24.py").read_text()
    assert "_extra_get" not in text
