"""Execute every notebook, exercise and solution with its small test parameters (papermill).

The executed copies land in build/test-notebooks/, where the second step of ``make test`` re-runs them
with nbval (--nbval-lax) and compares the outputs of cells marked ``# NBVAL_CHECK_OUTPUT``.
"""

from __future__ import annotations

import importlib
import json
import re

import pytest

from course_lib.exercise import Task
from course_lib.notebook_runner import ROOT, discover, execute, small_parameters

OUT = ROOT / "build" / "test-notebooks"
MARKER = re.compile(r"\[check\] (\S+): (correct|incorrect|not attempted)")

NOTEBOOKS = discover()


def _stream_text(nb: dict) -> str:
    chunks = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                chunks.append("".join(out.get("text", "")))
            elif "data" in out and "text/plain" in out["data"]:
                chunks.append("".join(out["data"]["text/plain"]))
    return "\n".join(chunks)


def _lesson_tasks(path) -> set[str]:
    """Names of every checked task of the notebook's lesson (``course_lib.checks.lessonNN``)."""
    module = importlib.import_module(f"course_lib.checks.lesson{path.stem[:2]}")
    return {t.name for t in vars(module).values() if isinstance(t, Task)}


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[f"{p.parent.name}/{p.stem}" for p in NOTEBOOKS])
def test_notebook_executes(path):
    executed = execute(path, OUT, small_parameters(path), timeout=600)
    nb = json.loads(executed.read_text(encoding="utf-8"))
    verdicts = MARKER.findall(_stream_text(nb))
    if path.parent.name in ("solutions", "exercises"):
        missing = _lesson_tasks(path) - {name for name, _ in verdicts}
        assert not missing, f"{path.name}: these tasks never report a verdict: {sorted(missing)}"
    if path.parent.name == "solutions":
        assert verdicts, f"{path.name}: a solution notebook must run its checks"
        failed = [v for v in verdicts if v[1] != "correct"]
        assert not failed, f"{path.name}: checks not passing in the solution: {failed}"
    elif path.parent.name == "exercises":
        assert verdicts, f"{path.name}: an exercise notebook must call its checks"
        passed = [v for v in verdicts if v[1] == "correct"]
        assert not passed, f"{path.name}: untouched exercise passes {passed}: the check cannot fail"
