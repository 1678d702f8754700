"""Committed notebooks are clean: no outputs, no absolute paths, one `parameters` cell, a title with a Colab
badge, a Colab setup cell and a GPU check;
every exercise has its solution and every lesson its exercise."""

from __future__ import annotations

import json
import re

import pytest

from course_lib.notebook_runner import ROOT, discover, small_parameters

NOTEBOOKS = discover()
# A machine-specific path: a Unix root folder (not inside a URL or a relative path: the character before the
# "/" must not be part of a name), a Windows drive ("C:\\" or "C:/", but not "https://"), or a file:// URL.
ABSOLUTE = re.compile(
    r"(?<![\w.~-])/(?:home|root|Users|work|tmp|content|mnt|opt|var|private|Volumes)\b"
    r"|(?<![A-Za-z])[A-Z]:[\\/]"
    r"|\bfile:/",
)


def _load(path):
    return json.loads(path.read_text(encoding="utf-8"))


def _strings(node) -> list[str]:
    """Every string in a notebook's JSON (keys, sources, metadata), decoded, for the path search."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [text for key, value in node.items() for text in [key, *_strings(value)]]
    if isinstance(node, list):
        return [text for value in node for text in _strings(value)]
    return []


@pytest.mark.parametrize(
    "text",
    ["/home/me/x.csv", "cd /tmp", "'/content/drive/MyDrive/prices.csv'", "/mnt/data/x.csv", "/opt/conda/lib",
     "/var/folders/x", "/Users/me", "(/work/main)", "C:\\Users\\me\\prices.csv", "C:/Users/me", "D:\\data",
     "file:///home/me/x.csv", "file:/C:/x"],
)  # fmt: skip
def test_absolute_path_pattern_flags(text):
    assert ABSOLUTE.search(text)


@pytest.mark.parametrize(
    "text",
    ["https://github.com/memory-transformers-course/course", "https://example.com/tmp/x", "data/cache/x.csv",
     "../data/tmp/x", "build/content/x", "x = df.loc[:, 'close']", "ratio 1:2", "~/course"],
)  # fmt: skip
def test_absolute_path_pattern_spares(text):
    assert not ABSOLUTE.search(text)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[f"{p.parent.name}/{p.stem}" for p in NOTEBOOKS])
def test_notebook_is_clean(path):
    nb = _load(path)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), f"{path.name}: clear outputs"
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: needs exactly one cell tagged 'parameters'"
    found = [m.group(0) for text in _strings(nb) for m in ABSOLUTE.finditer(text)]
    assert not found, f"{path.name}: contains absolute path(s) {found}; use paths relative to the repository"
    assert "IS_COLAB" in "".join("".join(c["source"]) for c in code[:2]), f"{path.name}: Colab setup cell first"
    assert "cuda.is_available" in "".join("".join(c["source"]) for c in code[:3]), f"{path.name}: GPU check cell"
    first = "".join(nb["cells"][0]["source"])
    assert nb["cells"][0]["cell_type"] == "markdown" and first.startswith("# "), f"{path.name}: title cell first"
    assert "colab-badge" in first and path.name in first, f"{path.name}: 'Open in Colab' badge to this notebook"
    params = small_parameters(path)
    assigned = set(re.findall(r"^(\w+)\s*=", "".join(tagged[0]["source"]), flags=re.M))
    assert set(params) <= assigned, f"{path.name}: test parameters {set(params) - assigned} not in the parameters cell"


def test_every_lesson_has_exercise_and_solution():
    lessons = {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}
    exercises = {p.stem for p in (ROOT / "exercises").glob("*.ipynb")}
    solutions = {p.stem for p in (ROOT / "solutions").glob("*.ipynb")}
    assert exercises == solutions, "every exercise needs a solution with the same name"
    assert exercises <= lessons, "exercise without a lesson"


def _min_python() -> tuple[int, ...]:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    found = re.search(r'^requires-python\s*=\s*">=(\d+(?:\.\d+){1,2})"', text, flags=re.M)
    return tuple(int(p) for p in found[1].split("."))


def test_requires_python_admits_no_version_the_lock_cannot_install():
    """Every pinned package (as installed here) must support the oldest Python pyproject.toml admits."""
    import importlib.metadata

    from packaging.specifiers import SpecifierSet

    oldest = ".".join(str(p) for p in (*_min_python(), 0, 0)[:3])
    too_new = []
    for line in (ROOT / "requirements-lock.txt").read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;#]+)", line)
        if not match:
            continue
        try:
            meta = importlib.metadata.metadata(match[1])
        except importlib.metadata.PackageNotFoundError:
            continue
        if meta["Version"].split("+")[0] != match[2].split("+")[0] or not meta["Requires-Python"]:
            continue
        if oldest not in SpecifierSet(meta["Requires-Python"]):
            too_new.append(f"{match[1]}=={match[2]} (Requires-Python {meta['Requires-Python']})")
    assert not too_new, f"requires-python admits {oldest} but the lock pins {too_new}"


def test_python_version_claims_agree_with_pyproject():
    version = _min_python()
    dotted = ".".join(map(str, version))
    assert f"Python {dotted} or newer" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"Python {dotted} или новее" in (ROOT / "README.ru.md").read_text(encoding="utf-8")
    assert f"sys.version_info < {version}" in (ROOT / "Makefile").read_text(encoding="utf-8")


def _public_definitions() -> dict[str, list[str]]:
    """Every public name of course_lib (in its module's ``__all__``, or any top-level name of a module without
    one), mapped to the modules that define it. The per-lesson exercise modules (``checks/``) and the
    ``__main__``-style entry points are their own namespaces and never star-imported, so they are left out.

    Read from the source (ast), so a name defined in two modules is seen even when one ``import *`` hides the
    other (the later star import silently wins, and a notebook calls a function it did not expect)."""
    import ast

    package = ROOT / "course_lib"
    found: dict[str, list[str]] = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if "checks" in parts or parts[-1] in ("__init__", "__main__", "cli", "notebook_runner"):
            continue
        module = ".".join(parts)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        exported = None
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets):
                exported = set(ast.literal_eval(node.value))
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names = [node.name]
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = [t.id for t in targets if isinstance(t, ast.Name)]
            else:
                continue
            for name in names:
                public = name in exported if exported is not None else not name.startswith("_")
                if public:
                    found.setdefault(name, []).append(module)
    return found


def test_no_public_name_is_defined_in_two_modules():
    twice = {n: m for n, m in _public_definitions().items() if len(m) > 1}
    assert not twice, f"public names defined in more than one module (one shadows the other): {twice}"


def test_every_exported_name_resolves_to_its_single_definition():
    import course_lib

    defs = _public_definitions()
    for name in course_lib.__all__ if hasattr(course_lib, "__all__") else dir(course_lib):
        obj = getattr(course_lib, name, None)
        home = getattr(obj, "__module__", None)
        if name in defs and callable(obj) and home and home.startswith("course_lib"):
            assert home in defs[name], f"course_lib.{name} comes from {home}, defined in {defs[name]}"


def test_notebook_runner_logs_no_kernel_warning(tmp_path, capfd):
    """`make course` prints progress and results only: the runner's kernel must not warn on start (ipykernel's
    "Kernel is running over TCP without encryption" came once per notebook)."""
    import sys

    import nbformat

    from course_lib.notebook_runner import execute

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print(1 + 1)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "tiny.ipynb")
    out = execute(tmp_path / "tiny.ipynb", tmp_path / "out")
    assert "2" in "".join(o.get("text", "") for o in nbformat.read(out, as_version=4).cells[0].outputs)
    logged = capfd.readouterr()
    if sys.platform != "win32":
        assert "WARNING" not in logged.err + logged.out, logged.err


def test_runner_sends_no_interrupt_to_a_finished_kernel():
    """jupyter_client interrupts a kernel before shutting it down; landing in the idle kernel's message loop,
    the signal printed "KeyboardInterrupt caught in kernel." into the make course log now and then."""
    import asyncio

    from course_lib.notebook_runner import local_kernel_manager

    km = local_kernel_manager()()
    km.shutting_down = True
    asyncio.run(km._async_interrupt_kernel())  # no kernel and no signal: returns quietly
