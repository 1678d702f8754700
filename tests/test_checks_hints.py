"""Every checked task of lessons 01-05: a goal-stating prompt, two hint levels (a nudge, then the approach),
no code in the hints (only solution() shows code), and a solution that is code."""

from __future__ import annotations

import importlib
import re

import pytest

from course_lib.exercise import Task

LESSONS = ("01", "02", "03", "04", "05")
TASKS = [
    task
    for lesson in LESSONS
    for task in vars(importlib.import_module(f"course_lib.checks.lesson{lesson}")).values()
    if isinstance(task, Task)
]
# what code looks like in a sentence: a call, an attribute of a library, an assignment, a slice, a comparison
CODE = re.compile(r"\b\w+\(|\b(np|pd|torch|cl|F)\.\w|\w\s*=\s*\w|\[[^\]]*:[^\]]*\]|==|<=|>=|\*\*")


@pytest.mark.parametrize("task", TASKS, ids=[t.name for t in TASKS])
def test_two_hint_levels_without_code(task):
    assert len(task.hints) == 2, f"{task.name}: give a nudge and an approach"
    nudge, approach = task.hints
    assert len(nudge) < len(approach), f"{task.name}: the nudge should say less than the approach"
    for text in task.hints:
        found = CODE.search(text)
        assert not found, f"{task.name}: hint contains code-like text {found.group(0)!r}: {text}"


@pytest.mark.parametrize("task", TASKS, ids=[t.name for t in TASKS])
def test_prompt_names_a_kind_and_solution_is_code(task, capsys):
    assert task.prompt.split(":")[0].split()[0] in {"Write", "Fix", "Predict", "Experiment", "Interpret"}, task.prompt
    task.solution()
    shown = capsys.readouterr().out
    assert "=" in shown or "def " in shown or "return" in shown, f"{task.name}: solution() shows no code"


def test_task_names_are_unique_and_numbered_in_order():
    for lesson in LESSONS:
        names = [t.name for t in TASKS if t.name.startswith(f"lesson{lesson}.")]
        assert names == [f"lesson{lesson}.q{i}" for i in range(1, len(names) + 1)], names


def _notebook_sources(folder: str, lesson: str) -> str:
    import json

    from course_lib.notebook_runner import ROOT

    (path,) = (ROOT / folder).glob(f"{lesson}_*.ipynb")
    return "\n".join("".join(c["source"]) for c in json.loads(path.read_text(encoding="utf-8"))["cells"])


@pytest.mark.parametrize("folder", ["exercises", "solutions"])
@pytest.mark.parametrize("lesson", [f"{i:02d}" for i in range(1, 10)])
def test_every_task_shows_where_its_second_hint_is(folder, lesson):
    """Each task's cell offers ``hint()`` and ``hint(2)`` (commented out), in every lesson alike."""
    module = importlib.import_module(f"course_lib.checks.lesson{lesson}")
    text = _notebook_sources(folder, lesson)
    for name, task in vars(module).items():
        if isinstance(task, Task) and len(task.hints) > 1 and f"{name}.hint()" in text:
            assert f"{name}.hint(2)" in text, f"{folder}/{lesson}: {name} offers hint() but never hint(2)"
