"""No import cycles among our modules — type-only and function-level imports included.

A cycle means two modules cannot be read, tested or moved apart; a type-only import still ties them
(use a Protocol in the module that needs the type instead). The graph is built from the source, so
it sees ``if TYPE_CHECKING:`` blocks and imports inside functions that a runtime check would miss.
"""

from __future__ import annotations

import ast
from pathlib import Path

from test_rooms import OURS, ROOT


def _module_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULE_FILES = {
    _module_of(path): path
    for package in OURS
    for path in (ROOT / package).rglob("*.py")
    if "__pycache__" not in path.parts
}


def _resolve(name: str) -> str | None:
    """The module of ours an imported dotted name lives in (``a.b.C`` → ``a.b``), if any."""
    while name:
        if name in MODULE_FILES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULE_FILES.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            for name in names:
                target = _resolve(name)
                # A package's __init__ importing its own submodules is how packages re-export.
                if target and target != module and not target.startswith(module + "."):
                    edges.add(target)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle_and_ignores_a_chain():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_our_modules_import_each_other_without_cycles():
    graph = imports_graph()
    assert len(graph) > 100  # the walk found the project, not an empty tree
    assert cycles(graph) == []
