"""The modules of `longrope.search` import each other without a ring, and each can be imported first."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SEARCH = Path(__file__).resolve().parents[2] / "src" / "longrope" / "search"
MODULES = sorted(p.stem for p in SEARCH.glob("*.py") if p.stem != "__init__")


def search_imports(module: str) -> set[str]:
    """The `longrope.search` modules ``module`` imports anywhere in its source (top level, functions and
    ``if TYPE_CHECKING:`` blocks all count: a ring hidden behind TYPE_CHECKING is still a ring of ideas)."""
    tree = ast.parse((SEARCH / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[:2] == ["longrope", "search"] and len(parts) >= 3 and parts[2] in MODULES:
                found.add(parts[2])
    found.discard(module)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_ring():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_ring_among_search_modules():
    graph = {m: search_imports(m) for m in MODULES}
    assert "config" in graph and graph["config"] == set(), "config must stay a leaf: every search module names it"
    assert "evolution" not in graph["run"] | graph["generation"] | graph["outputs"]
    cycle = find_cycle(graph)
    assert cycle is None, f"import ring among longrope.search modules: {' -> '.join(cycle)}"


def test_each_search_module_imports_first_in_a_fresh_interpreter():
    """Every module imported first, with no longrope module loaded (one interpreter, torch kept loaded)."""
    code = (
        "import importlib, sys\n"
        f"for name in {MODULES!r}:\n"
        "    for loaded in [m for m in sys.modules if m == 'longrope' or m.startswith('longrope.')]:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module('longrope.search.' + name)\n"
        "from longrope.search.evolution import SearchConfig\n"
        "from longrope.search.config import SearchConfig as Same\n"
        "assert SearchConfig is Same\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
