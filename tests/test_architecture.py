"""The shape of ``course_lib``: no import circles, no function a learner cannot read in one screen.

Import graph: one node per module of ``course_lib`` (a package's ``__init__.py`` is the package's node). Every
import statement a file contains is an edge, wherever it stands: at module level, inside a function (a "lazy"
import) and under ``if TYPE_CHECKING:``. A lazy import still means a reader of one file must know the other
one, so it counts. ``from pkg import name`` points at ``pkg.name`` when that is a module, else at ``pkg``.
The parent packages Python runs on the way (importing ``course_lib.memory.bank`` runs
``course_lib/memory/__init__.py`` first) are not edges: the file does not name them.

Run ``python tests/test_architecture.py`` for the report: the circles, then every function over the limit.
"""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "course_lib"

#: the longest function a learner should meet, in lines from ``def`` to its last line (docstring included)
MAX_FUNCTION_LINES = 80

#: Functions still longer than ``MAX_FUNCTION_LINES``, with their length when this list was written. The
#: list may only shrink: a function listed here may not grow, and a function not listed may not pass the
#: limit. They sit in files that were being changed by other work when the rest was split; split one, then
#: delete its line here.
LONG_FUNCTIONS_ALLOWED: dict[str, int] = {}

#: A lesson's main class must fit one sitting.
CLASS_LINE_LIMITS: dict[str, int] = {
    "course_lib/agents/store.py::AgentMemory": 400,
    "course_lib/memory/bank.py::ExternalMemoryBank": 350,
    "course_lib/training/trainer.py::MemoryTransformerTrainer": 300,
}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of course_lib: dotted name -> file."""
    return {module_name(p, root): p for p in sorted((root / PACKAGE.name).rglob("*.py"))}


def _imported(node: ast.Import | ast.ImportFrom, here: str, is_package: bool, known: set[str]) -> set[str]:
    """The course_lib modules one import statement names."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in known}
    if node.level:
        package = here.split(".") if is_package else here.split(".")[:-1]
        base_parts = package[: len(package) - (node.level - 1)]
        base = ".".join(base_parts + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    out = set()
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        if sub in known:
            out.add(sub)
        elif base in known:
            out.add(base)
    return out


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module -> the course_lib modules it imports (every import statement, see the module docstring)."""
    mods = modules(root)
    known = set(mods)
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                edges |= _imported(node, name, path.name == "__init__.py", known)
        edges.discard(name)
        graph[name] = edges
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that reach each other (Tarjan's algorithm); a group of two or more holds a circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [g for g in groups if len(g) > 1]


def shortest_cycle(graph: dict[str, set[str]], start: str) -> list[str]:
    """The shortest import path from ``start`` back to itself (breadth first), e.g. ``[a, b, a]``."""
    came_from: dict[str, str] = {}
    todo = deque([start])
    while todo:
        v = todo.popleft()
        for w in sorted(graph[v]):
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [start, *reversed(path[:-1]), start] if v != start else [start, start]
            if w not in came_from:
                came_from[w] = v
                todo.append(w)
    return []


def import_cycles(root: Path = ROOT) -> list[str]:
    """One line per circle: its modules, then one concrete path around it."""
    graph = import_graph(root)
    return [f"{', '.join(g)}: {' -> '.join(shortest_cycle(graph, g[0]))}" for g in strongly_connected(graph)]


def function_lengths() -> dict[str, int]:
    """``"course_lib/x.py::Class.method"`` -> lines from ``def`` to the function's last line."""
    out: dict[str, int] = {}

    def walk(node: ast.AST, prefix: str, rel: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                out[f"{rel}::{name}"] = child.end_lineno - child.lineno + 1
                walk(child, f"{name}.", rel)
            elif isinstance(child, ast.ClassDef):
                walk(child, f"{prefix}{child.name}.", rel)
            else:
                walk(child, prefix, rel)

    for path in modules().values():
        rel = path.relative_to(ROOT).as_posix()
        walk(ast.parse(path.read_text(encoding="utf-8")), "", rel)
    return out


def class_lengths() -> dict[str, int]:
    """``"course_lib/x.py::Class"`` -> lines of each top-level class."""
    out = {}
    for path in modules().values():
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef):
                out[f"{rel}::{node.name}"] = node.end_lineno - node.lineno + 1
    return out


# ---------------------------------------------------------------------------------------------- tests
def test_graph_sees_lazy_and_relative_imports(tmp_path):
    """The checker itself: a circle made only of a function-level import and a parent-relative import is found."""
    pkg = tmp_path / "course_lib"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from .sub.b import g\n    return g\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("from .. import a\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import f\n")
    assert import_graph(tmp_path)["course_lib.c"] == {"course_lib.a"}
    assert import_cycles(tmp_path) == [
        "course_lib.a, course_lib.sub.b: course_lib.a -> course_lib.sub.b -> course_lib.a"]


def test_no_import_cycles():
    cycles = import_cycles()
    assert not cycles, ("course_lib has import circles; give each pair a direction (move the shared piece down "
                        "into a module both can import):\n" + "\n".join(cycles))


def test_no_long_functions_outside_the_allow_list():
    lengths = function_lengths()
    too_long = {f: n for f, n in lengths.items() if n > MAX_FUNCTION_LINES and n > LONG_FUNCTIONS_ALLOWED.get(f, 0)}
    assert not too_long, (f"functions over {MAX_FUNCTION_LINES} lines (or longer than their allow-list entry); "
                          f"split them into named steps: {too_long}")


def test_allow_list_only_shrinks():
    """A listed function that was split (or renamed) must leave the list, so the list cannot hide a new one."""
    lengths = function_lengths()
    stale = {f: n for f, n in LONG_FUNCTIONS_ALLOWED.items() if lengths.get(f, 0) <= MAX_FUNCTION_LINES}
    assert not stale, f"these are no longer over {MAX_FUNCTION_LINES} lines: delete them from the list: {stale}"


def test_lesson_classes_fit_their_limit():
    lengths = class_lengths()
    over = {c: (lengths.get(c), limit) for c, limit in CLASS_LINE_LIMITS.items() if lengths.get(c, 0) > limit}
    missing = [c for c in CLASS_LINE_LIMITS if c not in lengths]
    assert not missing, f"classes named in CLASS_LINE_LIMITS no longer exist there: {missing}"
    assert not over, f"classes over their line limit (lines, limit): {over}; move engineering paths to modules"


if __name__ == "__main__":
    print("import circles:", *(import_cycles() or ["none"]), sep="\n  ")
    print(f"functions over {MAX_FUNCTION_LINES} lines:")
    for f, n in sorted(function_lengths().items(), key=lambda kv: -kv[1]):
        if n > MAX_FUNCTION_LINES:
            print(f"  {n:4d}  {f}")
    print("classes over 300 lines:")
    for c, n in sorted(class_lengths().items(), key=lambda kv: -kv[1]):
        if n > 300:
            print(f"  {n:4d}  {c}")
