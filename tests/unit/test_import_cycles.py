"""No import cycles inside `core/`: read from the source with `ast`, nothing is imported.

Two graphs are checked. The module-level one (what runs at import time) must have no cycle at all.
The one that adds imports inside functions (deferred only to dodge a cycle) must have none but
the few listed in `WAITING` (none since the catalog's field reader has its own module); an
entry that no longer closes a cycle fails too, so the list only shrinks. `if TYPE_CHECKING:`
imports are left out: they never run.
"""

from __future__ import annotations

import ast
from collections.abc import Collection
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "core"

# (importer, imported) edges through a function-level import that close a cycle today.
WAITING: set[tuple[str, str]] = set()  # none left since the catalog's field reader has its own module


def _modules() -> dict[str, Path]:
    modules = {}
    for path in CORE.rglob("*.py"):
        parts = list(path.relative_to(CORE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _targets(module: str, node: ast.Import | ast.ImportFrom, is_package: bool, modules: dict[str, Path]) -> set[str]:
    """The core modules an import statement loads (`from .x import y` loads `x`, or `x.y` if a module)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = module.split(".") if is_package else module.split(".")[:-1]
        if node.level:
            base = base[: len(base) - (node.level - 1)]
            prefix = ".".join([*base, *([node.module] if node.module else [])])
        else:
            prefix = node.module or ""
        names = [f"{prefix}.{alias.name}" if f"{prefix}.{alias.name}" in modules else prefix for alias in node.names]
    found = set()
    for name in names:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name.startswith("core") and name != module:
            found.add(name)
    return found


def _is_type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def import_graph(*, functions: bool) -> dict[str, dict[str, str]]:
    """importer → {imported: 'module' | 'function'}; `functions` adds imports inside functions."""
    modules = _modules()
    graph: dict[str, dict[str, str]] = {name: {} for name in modules}

    def walk(module: str, node: ast.AST, is_package: bool, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for item in child.orelse:
                    walk(module, item, is_package, where)
                continue
            inner = "function" if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) else where
            if isinstance(child, ast.Import | ast.ImportFrom) and (where == "module" or functions):
                for target in _targets(module, child, is_package, modules):
                    graph[module].setdefault(target, where)
            walk(module, child, is_package, inner)

    for module, path in modules.items():
        walk(module, ast.parse(path.read_text(encoding="utf-8")), path.name == "__init__.py", "module")
    return graph


def cycles(graph: dict[str, dict[str, str]], skip: Collection[tuple[str, str]] = ()) -> list[list[str]]:
    """Each strongly connected group of more than one module (Tarjan), as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if (node, target) in skip:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_the_graph_sees_the_imports_it_checks() -> None:
    graph = import_graph(functions=True)
    assert graph["core.catalog.columns"]["core.read.segments"] == "module"
    assert graph["core.catalog.parse"]["core.catalog.alerts"] == "module"
    assert graph["core.cli"]["core.control.service"] == "function"
    assert "core.catalog.parse" not in graph["core.read.segments"]  # the cycle this test was written for stays broken
    assert cycles({"a": {"b": "module"}, "b": {"c": "module"}, "c": {"a": "module"}, "d": {"a": "module"}}) == [
        ["a", "b", "c"]
    ]


def test_no_cycle_at_import_time() -> None:
    assert cycles(import_graph(functions=False)) == []


def test_no_cycle_through_deferred_imports_but_the_listed_ones() -> None:
    graph = import_graph(functions=True)
    assert cycles(graph, WAITING) == []
    for importer, imported in sorted(WAITING):
        assert graph[importer].get(imported) == "function", f"{importer} no longer imports {imported} in a function"
        assert cycles(graph, WAITING - {(importer, imported)}), f"{importer} → {imported} closes no cycle any more"
