"""Lesson 01 checks: right answers pass, blanks are 'not attempted', typical mistakes fail with a reason
that does not give the expected numbers away."""

from __future__ import annotations

import numpy as np
import pytest

from course_lib import ____
from course_lib.checks import lesson01 as ex


def _status(task, answer):
    return task.evaluate(answer)


def test_correct_answers_pass():
    assert _status(ex.q1, lambda c: np.log(c).diff()).passed
    assert _status(ex.q2, lambda x, w: (x - x.rolling(w).mean()) / x.rolling(w).std()).passed

    def split(n, tf, vf, gap):
        n_train, n_val = int(n * tf), int(n * vf)
        return np.arange(n_train), np.arange(n_train + gap, n_train + gap + n_val), np.arange(n_train + 2 * gap + n_val, n)

    assert _status(ex.q3, split).passed
    assert _status(ex.q4, lambda c, h: np.log(c.shift(-h) / c)).passed


@pytest.mark.parametrize("task", [ex.q1, ex.q2, ex.q3, ex.q4])
def test_blank_is_not_attempted(task):
    assert task.evaluate(____).status == "not attempted"
    assert task.evaluate(lambda *a: ____).status == "not attempted"


def _raise(*args):
    raise NotImplementedError


def test_not_implemented_is_not_attempted():
    assert ex.q1.evaluate(_raise).status == "not attempted"


@pytest.mark.parametrize(
    "task, wrong, words",
    [
        (ex.q1, lambda c: np.log(c.shift(-1) / c), "future"),
        (ex.q1, lambda c: c.pct_change(), "simple returns"),
        (ex.q2, lambda x, w: (x - x.mean()) / x.std(), "looks ahead"),
        (ex.q2, lambda x, w: (x - x.rolling(w, center=True).mean()) / x.rolling(w, center=True).std(), "centred"),
        (ex.q3, lambda n, tf, vf, gap: (np.arange(int(n * tf)), np.arange(int(n * tf), int(n * (tf + vf)) ),
                                          np.arange(int(n * (tf + vf)), n)), "embargo"),
        (ex.q3, lambda n, tf, vf, gap: tuple(np.random.default_rng(0).permutation(n)[s] for s in
                                             (slice(0, int(n * tf)), slice(int(n * tf), int(n * (tf + vf))),
                                              slice(int(n * (tf + vf)), n))), "contiguous"),
        (ex.q4, lambda c, h: np.log(c / c.shift(h)), "ended"),
    ],
)
def test_typical_mistakes_fail_with_a_reason(task, wrong, words):
    result = task.evaluate(wrong)
    assert result.status == "incorrect"
    assert words in result.message
