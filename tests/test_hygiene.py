"""Committed notebooks are clean: no outputs, no absolute paths, one `parameters` cell, a title with a Colab
badge, a Colab setup cell and a GPU check;
every exercise has its solution and every lesson its exercise."""

from __future__ import annotations

import json
import re

import pytest

from course_lib.notebook_runner import ROOT, discover, small_parameters

NOTEBOOKS = discover()
ABSOLUTE = re.compile(r"(/home/|/root/|/Users/|/work/|[A-Z]:\\\\)")


def _load(path):
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[f"{p.parent.name}/{p.stem}" for p in NOTEBOOKS])
def test_notebook_is_clean(path):
    nb = _load(path)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), f"{path.name}: clear outputs"
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: needs exactly one cell tagged 'parameters'"
    text = json.dumps(nb)
    assert not ABSOLUTE.search(text), f"{path.name}: contains an absolute path"
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
