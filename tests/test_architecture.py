"""The package's shape: dependencies flow one way, no import cycles, small modules, no
colliding module names (docs/architecture.md)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "eoextract"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_only(tree: ast.AST) -> set[int]:
    """Ids of the import nodes under ``if TYPE_CHECKING:`` (never run)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            found |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return found


def _imports(name: str, path: Path, *, type_only: bool = True) -> set[str]:
    """Every eoextract module ``name`` imports, anywhere in the file (also inside functions,
    and with ``type_only`` under TYPE_CHECKING): a dependency is a dependency, whenever it is
    loaded."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = set() if type_only else _type_only(tree)
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from pkg import submodule`` depends on the submodule, not on the package
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                       for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name and target.startswith("eoextract"):
                found.add(target)
    return found


#: Every import, annotations-only ones included (for the one-way flow of dependencies).
GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}
#: Imports that run (for cycles: an annotation-only import of a module that imports this one
#: is not a cycle).
RUNTIME_GRAPH = {name: _imports(name, path, type_only=False) for name, path in MODULES.items()}


def _package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_import_cycle():
    # Tarjan's strongly connected components; any component of two or more modules is a cycle
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in RUNTIME_GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in RUNTIME_GRAPH:
        if v not in index:
            visit(v)
    assert cycles == []


FORBIDDEN = {
    "jobs": {"extract", "stac", "dataset", "report", "cli", "backend"},
    "stac": {"jobs", "extract", "dataset", "report", "cli", "backend"},
    "split": {"jobs", "extract", "stac", "report", "cli", "backend"},
    "extract": {"report", "cli", "backend"},
    "dataset": {"extract", "split", "report", "cli", "backend"},
    "backend": {"jobs", "extract", "stac", "split", "report", "cli"},
    "_util": {"jobs", "extract", "stac", "split", "report", "cli", "backend"},
    "errors": {"jobs", "extract", "stac", "split", "report", "cli", "backend"},
    "dataset": {"extract", "report", "cli", "backend"},
}


def test_dependencies_flow_one_way():
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        for target in targets
        if _package_of(target) in FORBIDDEN.get(_package_of(module), set())
    )
    assert wrong == []


def test_the_graph_sees_imports():
    # the checks above mean something only if imports are found
    assert "eoextract.jobs.db" in GRAPH["eoextract.extract._extraction"] or any(
        t.startswith("eoextract.jobs") for t in GRAPH["eoextract.extract._extraction"])
    assert any(t.startswith("eoextract._util") for t in GRAPH["eoextract.extract._store"])


@pytest.mark.parametrize("limit", [500])
def test_no_module_over_the_size_limit(limit):
    long = {name: n for name, path in MODULES.items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > limit}
    assert long == {}


def test_module_names_do_not_collide():
    by_name: dict[str, list[str]] = defaultdict(list)
    for name, path in MODULES.items():
        if not path.stem.startswith("__"):  # __init__, __main__: Python's names, not concepts
            by_name[path.stem.lstrip("_")].append(name)
    assert {k: v for k, v in by_name.items() if len(v) > 1} == {}
