"""A small learntools-style exercise checker: ``q1.check(answer)``, ``q1.hint()``, ``q1.solution()``.

Design choices:

* Answers are passed explicitly (``q1.check(my_function)``), so a check never digs through notebook
  globals and works the same in tests.
* An answer still equal to the placeholder ``____`` (or a function that returns it or raises
  ``NotImplementedError``) is reported as *not attempted*, never as a crash.
* A failed check says what is wrong (shape, a look-ahead, a wrong value at a place) without printing the
  expected value, so the learner still has something to find.
* Hints come in levels: ``hint()`` prints the nudge, ``hint(2)`` the approach; neither shows code, only
  ``solution()`` does.
* Every result prints one marker line (``[check] lesson01.q1: correct``) that the notebook tests read: all
  solutions must print ``correct``; no untouched exercise may.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["CheckFailed", "CheckResult", "Task", "____", "call_answer", "is_placeholder"]


class _Placeholder:
    """The blank a learner replaces. Any arithmetic on it keeps it a placeholder, so ``____ * 2`` is still blank."""

    _instance: _Placeholder | None = None

    def __new__(cls) -> _Placeholder:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "____"

    def _same(self, *args: Any, **kwargs: Any) -> _Placeholder:
        return self

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = _same
    __call__ = __getitem__ = _same


____ = _Placeholder()


class CheckFailed(AssertionError):
    """Raised inside a checker with a learner-facing explanation (must not reveal the expected answer)."""


def is_placeholder(value: Any) -> bool:
    return value is ____


@dataclass(frozen=True)
class CheckResult:
    task: str
    status: str  # "correct" | "incorrect" | "not attempted"
    message: str

    @property
    def passed(self) -> bool:
        return self.status == "correct"

    def __str__(self) -> str:
        return f"[check] {self.task}: {self.status}" + (f" - {self.message}" if self.message else "")


class Task:
    """One checked exercise task.

    Args:
        name: Stable id printed in the marker line, e.g. ``"lesson01.q1"``.
        prompt: One-line statement of the task.
        checker: ``checker(answer)`` raises :class:`CheckFailed` with a helpful message if wrong. It may call
            the answer if it is a function; a placeholder or ``NotImplementedError`` counts as not attempted.
        hint: The hints, weakest first: one string, or a sequence of them (a nudge, then the approach).
            ``hint()`` prints the first, ``hint(2)`` the second. Hints never contain code.
        solution: Reference code shown by ``solution()``.
    """

    def __init__(
        self, name: str, prompt: str, checker: Callable[[Any], None], hint: str | Sequence[str], solution: str
    ):
        self.name = name
        self.prompt = prompt
        self._checker = checker
        self._hints: tuple[str, ...] = (hint,) if isinstance(hint, str) else tuple(hint)
        if not self._hints or not all(isinstance(h, str) and h.strip() for h in self._hints):
            raise ValueError(f"{name}: give at least one non-empty hint")
        self._solution = solution

    def __repr__(self) -> str:
        return f"Task({self.name!r}: {self.prompt})"

    def evaluate(self, answer: Any = ____) -> CheckResult:
        """Run the checker and return a result without printing (used by tests)."""
        if is_placeholder(answer):
            return CheckResult(self.name, "not attempted", "replace ____ with your answer, then run check() again")
        try:
            self._checker(answer)
        except NotImplementedError:
            return CheckResult(self.name, "not attempted", "your function still raises NotImplementedError")
        except _PlaceholderReturned:
            return CheckResult(self.name, "not attempted", "your function still returns ____")
        except CheckFailed as exc:
            return CheckResult(self.name, "incorrect", str(exc))
        except Exception as exc:  # noqa: BLE001 - any learner bug becomes a readable message
            return CheckResult(self.name, "incorrect", f"your answer raised {type(exc).__name__}: {exc}")
        return CheckResult(self.name, "correct", "")

    def check(self, answer: Any = ____) -> None:
        """Check ``answer`` and print the verdict (use :meth:`evaluate` to get it as a value)."""
        print(self.evaluate(answer))

    @property
    def hints(self) -> tuple[str, ...]:
        """Every hint level, weakest first."""
        return self._hints

    def hint(self, level: int = 1) -> None:
        """Print hint ``level`` (1: a nudge, 2: the approach); asking past the last one says so."""
        if level < 1:
            raise ValueError(f"hint levels start at 1, got {level}")
        n = len(self._hints)
        if level > n:
            print(f"Hint ({self.name}): there are {n} hint level(s); call solution() to see the code.")
            return
        more = f"  (more: hint({level + 1}))" if level < n else "  (last hint; solution() shows the code)"
        print(f"Hint {level}/{n} ({self.name}): {self._hints[level - 1]}{more}")

    def solution(self) -> None:
        print(f"Solution ({self.name}):\n{self._solution}")


class _PlaceholderReturned(Exception):
    pass


def call_answer(func: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a learner's function; turn a returned placeholder into a 'not attempted' signal."""
    if not callable(func):
        raise CheckFailed(f"expected a function, got {type(func).__name__}")
    out = func(*args, **kwargs)
    if is_placeholder(out):
        raise _PlaceholderReturned
    return out
