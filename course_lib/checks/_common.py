"""Helpers shared by the lesson checks: calling a learner's function, and checking an experiment's answer.

An experiment task asks the learner to change one thing, run it and report what happened. Its checker
recomputes the truth itself (seeded, on the same data, in the same process), so the answer cannot be
copied from anywhere and the message on a wrong answer never contains the expected value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from ..exercise import CheckFailed, _PlaceholderReturned, call_answer, is_placeholder

__all__: list[str] = []


def call(func: Any, *args: Any, **kwargs: Any) -> Any:
    """Call the learner's function; a blank ``____`` reached inside it means 'not attempted'."""
    try:
        out = call_answer(func, *args, **kwargs)
    except (CheckFailed, _PlaceholderReturned, NotImplementedError):
        raise
    except Exception as exc:  # noqa: BLE001 - arithmetic on ____ fails with an error naming it
        if "_Placeholder" in str(exc) or "____" in str(exc):
            raise _PlaceholderReturned from exc
        raise
    if isinstance(out, tuple) and any(is_placeholder(o) for o in out):
        raise _PlaceholderReturned
    return out


def as_number(value: Any, what: str) -> float:
    """One finite float from a number, a 0-d/1-element array, Series or tensor; else a clear message."""
    if is_placeholder(value):
        raise _PlaceholderReturned
    if hasattr(value, "item") and not isinstance(value, (int, float)):
        size = value.numel() if hasattr(value, "numel") else np.size(value)  # torch tensors, numpy, pandas
        if size == 1:
            value = value.item()
    if isinstance(value, (pd.Series, np.ndarray, list, tuple)):
        raise CheckFailed(f"{what}: give one number, not a collection of {np.size(value)} values.")
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise CheckFailed(f"{what}: give a number, got {type(value).__name__}.")
    out = float(value)
    if not math.isfinite(out):
        raise CheckFailed(f"{what}: got {out}; a NaN usually means a NaN row was not dropped before measuring.")
    return out


def numeric_checker(truth: Callable[[], float], what: str, abs_tol: float, rel_tol: float = 0.0,
                    mistakes: Callable[[float], str | None] | None = None,
                    tol: Callable[[], float] | None = None) -> Callable[[Any], None]:
    """A checker that accepts a number within ``abs_tol`` (or ``rel_tol``) of ``truth()``.

    ``tol()``, when given, computes the absolute tolerance when the check runs (e.g. half of one window's
    share of a count, so that only the exact count passes) and replaces ``abs_tol``.

    ``mistakes(answer)`` may name a typical slip (a percentage, a flipped sign, the other arm of the
    experiment); it must return a message that does not contain the expected value, or None.
    """

    abs_tol_given = abs_tol

    def check(answer: Any) -> None:
        got = as_number(answer, what)
        want = float(truth())
        abs_tol = float(tol()) if tol is not None else abs_tol_given
        if math.isclose(got, want, abs_tol=abs_tol, rel_tol=rel_tol):
            return
        hint = mistakes(got) if mistakes else None
        if hint:
            raise CheckFailed(hint)
        if want != 0 and math.isclose(got, 100 * want, rel_tol=0.02):
            raise CheckFailed(f"{what}: this looks like a percentage; give the plain number (a fraction).")
        if want != 0 and math.isclose(got, -want, abs_tol=abs_tol, rel_tol=rel_tol):
            raise CheckFailed(f"{what}: the size is right but the sign is not; check what you subtract from what.")
        raise CheckFailed(
            f"{what}: not what this experiment gives. Run it with exactly the settings the task names "
            "(same data, seed and sizes), change only the one thing it asks, and measure on the rows it names."
        )

    return check


def choice_checker(options: Mapping[str, str], truth: Callable[[], str], what: str) -> Callable[[Any], None]:
    """A multiple-choice checker: ``options`` maps letters to statements, ``truth()`` computes the letter."""

    def check(answer: Any) -> None:
        if is_placeholder(answer):
            raise _PlaceholderReturned
        letter = str(answer).strip().lower().rstrip(")").strip()
        if letter not in options:
            raise CheckFailed(f"{what}: answer with one of the letters {', '.join(repr(k) for k in options)}.")
        if letter != truth():
            raise CheckFailed(
                f"{what}: that is not what the experiment shows. Run both settings and compare the numbers "
                "themselves before choosing; the other statements describe outcomes this data does not give."
            )

    return check


def format_options(options: Mapping[str, str]) -> str:
    return "; ".join(f"({k}) {v}" for k, v in options.items())
