"""The import graph of the childvault package has no cycle.

Read from the source with :mod:`ast`, so it counts every import: at module
level, inside functions (lazy imports) and under ``TYPE_CHECKING``. A cycle
that happens to work by import order today breaks when someone reorders an
import; this test names it instead.
"""

from __future__ import annotations

import ast
from pathlib import Path

import childvault

ROOT = Path(childvault.__file__).parent
PACKAGES = ("childvault",)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        folder = ROOT.parent.joinpath(*package.split("."))
        for path in folder.rglob("*.py"):
            found[_module_name(path)] = path
    return found


def _targets(node: ast.AST, here: str, is_package: bool, known: set[str]) -> list[str]:
    out: list[str] = []
    if isinstance(node, ast.Import):
        out.extend(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = here.split(".")
            base = base[: len(base) - node.level + (1 if is_package else 0)]
            origin = ".".join([*base, node.module] if node.module else base)
        else:
            origin = node.module or ""
        for alias in node.names:
            # `from package import submodule` depends on the submodule only.
            sub = f"{origin}.{alias.name}"
            out.append(sub if sub in known else origin)
    return [name for name in out if name in known]


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        edges: set[str] = set()
        for node in ast.walk(tree):
            edges.update(_targets(node, name, path.name == "__init__.py", known))
        edges.discard(name)
        graph[name] = edges
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that starts and ends at the same module, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_graph_is_read() -> None:
    graph = _graph()
    assert "childvault.vault._facade" in graph
    assert "childvault.vault._session" in graph["childvault.vault._facade"]
    assert "childvault.keys" in graph["childvault.vault._session"]


def test_no_import_cycle() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_one() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
