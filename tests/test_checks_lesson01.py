"""Lesson 01 checks: right answers pass, blanks are 'not attempted', typical mistakes fail with a message
that names the mistake (look-ahead above all) without revealing expected numbers."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from course_lib import ____
from course_lib.checks import lesson01 as ex


def verdict(task, answer):
    return task.evaluate(answer)


# --- q1 log returns ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "answer",
    [
        lambda close: np.log(close).diff(),
        lambda close: np.log(close / close.shift(1)),
        lambda close: pd.Series(np.r_[np.nan, np.diff(np.log(close.to_numpy()))], index=close.index),
    ],
)
def test_q1_correct(answer):
    assert verdict(ex.q1, answer).status == "correct"


@pytest.mark.parametrize(
    "answer, words",
    [
        (lambda close: close.pct_change(), "simple returns"),
        (lambda close: np.log(close.shift(-1) / close), "future"),
        (lambda close: np.log(close).diff().fillna(0.0), "NaN"),
        (lambda close: np.log(close).diff().dropna(), "one value per bar"),
        (lambda close: -np.log(close).diff(), "sign"),
        (lambda close: np.log(close).diff(2), "differ"),
        (lambda close: 1 / 0, "ZeroDivisionError"),
    ],
)
def test_q1_wrong(answer, words):
    result = verdict(ex.q1, answer)
    assert result.status == "incorrect"
    assert words in result.message
    assert not re.search(r"shift\(|log\(|close_\{?t|/ close", result.message), f"gives the answer: {result.message}"


# --- q2 causal z-score ------------------------------------------------------------------------------
def _z(x, w):
    r = x.rolling(w)
    return (x - r.mean()) / r.std()


@pytest.mark.parametrize(
    "answer",
    [
        _z,
        lambda x, w: (x - x.rolling(w).mean()) / x.rolling(w).std(ddof=0),
        lambda x, w: (x - x.rolling(w, min_periods=w).mean()) / x.rolling(w).std(),
    ],
)
def test_q2_correct(answer):
    assert verdict(ex.q2, answer).status == "correct"


@pytest.mark.parametrize(
    "answer, words",
    [
        (lambda x, w: (x - x.rolling(w, center=True).mean()) / x.rolling(w, center=True).std(), "centred"),
        (lambda x, w: (x - x.mean()) / x.std(), "whole"),
        (lambda x, w: (x - x.expanding().mean()) / x.std(), "looks ahead"),
        (lambda x, w: (x - x.rolling(w, min_periods=2).mean()) / x.rolling(w, min_periods=2).std(), "NaN"),
        (lambda x, w: (x - x.shift(1).rolling(w).mean()) / x.shift(1).rolling(w).std(), "before"),
        (lambda x, w: _z(x, w + 1), "window is"),
        (lambda x, w: x - x.rolling(w).mean(), "divides"),
    ],
)
def test_q2_wrong(answer, words):
    result = verdict(ex.q2, answer)
    assert result.status == "incorrect", result
    assert words in result.message, result.message


# --- q3 embargoed split -----------------------------------------------------------------------------
def _split(n, tf, vf, gap):
    n_train, n_val = int(n * tf), int(n * vf)
    train = np.arange(0, n_train)
    val = np.arange(n_train + gap, n_train + gap + n_val)
    return train, val, np.arange(val[-1] + 1 + gap, n)


def test_q3_correct():
    assert verdict(ex.q3, _split).status == "correct"
    # the library's own split agrees with the task
    from course_lib import chronological_split

    def lib(n, tf, vf, gap):
        s = chronological_split(n, tf, vf, gap)
        return s.train, s.val, s.test

    assert verdict(ex.q3, lib).status == "correct"
    assert verdict(ex.q3, lambda *a: [list(p) for p in _split(*a)]).status == "correct"


def _no_gap(n, tf, vf, gap):
    return _split(n, tf, vf, 0)


def _shuffled(n, tf, vf, gap):
    idx = np.random.default_rng(0).permutation(n)
    a, b = int(n * tf), int(n * (tf + vf))
    return idx[:a], idx[a:b], idx[b:]


def _gap_only_first(n, tf, vf, gap):
    train, val, _ = _split(n, tf, vf, gap)
    return train, val, np.arange(val[-1] + 1, n)


@pytest.mark.parametrize(
    "answer, words",
    [
        (_no_gap, "no embargo"),
        (_shuffled, "contiguous"),
        (_gap_only_first, "between val and test"),
        (lambda n, tf, vf, gap: _split(n, tf, vf, max(gap - 1, 0) if gap > 1 else 2), "skipped"),
        (lambda n, tf, vf, gap: _split(n, tf, vf, gap)[:2], "three arrays"),
        (lambda n, tf, vf, gap: (lambda t, v, s: (v, t, s))(*_split(n, tf, vf, gap)), "follow each other"),
    ],
)
def test_q3_wrong(answer, words):
    result = verdict(ex.q3, answer)
    assert result.status == "incorrect", result
    assert words in result.message, result.message


# --- q4 target ----------------------------------------------------------------------------------------
def test_q4_correct():
    assert verdict(ex.q4, lambda c, h: np.log(c.shift(-h) / c)).status == "correct"
    from course_lib import forward_log_return

    assert verdict(ex.q4, forward_log_return).status == "correct"


@pytest.mark.parametrize(
    "answer, words",
    [
        (lambda c, h: np.log(c / c.shift(h)), "ended"),
        (lambda c, h: np.log(c.shift(-h - 1) / c.shift(-1)), "one bar late"),
        (lambda c, h: c.shift(-h) / c - 1, "simple returns"),
        (lambda c, h: np.log(c.shift(-h) / c).fillna(0.0), "NaN"),
        (lambda c, h: np.log(c.shift(-1) / c), "bar(s) ahead"),
        (lambda c, h: np.log(c.shift(-h) / c) * 1.01, "differ"),
    ],
)
def test_q4_wrong(answer, words):
    result = verdict(ex.q4, answer)
    assert result.status == "incorrect", result
    assert words in result.message, result.message


# --- blanks, and no expected values leaked ------------------------------------------------------------
def _blank_split(n, tf, vf, gap):
    train = np.arange(0, int(n * tf))
    val = ____
    test = ____
    return train, val, test


@pytest.mark.parametrize(
    "task, answer",
    [
        (ex.q1, ____),
        (ex.q1, lambda close: ____),
        (ex.q1, lambda close: np.log(____)),
        (ex.q2, lambda x, w: (x - ____) / ____),
        (ex.q2, lambda x, w: x.rolling(____).mean()),
        (ex.q3, _blank_split),
        (ex.q3, lambda n, tf, vf, gap: (np.arange(____), np.arange(3), np.arange(4))),
        (ex.q4, lambda c, h: np.log(c.shift(____) / c)),
    ],
)
def test_blanks_are_not_attempted(task, answer):
    result = verdict(task, answer)
    assert result.status == "not attempted", result


def test_messages_do_not_reveal_values():
    wrong = [
        (ex.q1, lambda close: np.log(close).diff(2)),
        (ex.q2, lambda x, w: _z(x, w) * 1.01),
        (ex.q4, lambda c, h: np.log(c.shift(-h) / c) * 1.01),
    ]
    for task, answer in wrong:
        msg = verdict(task, answer).message
        assert "differ" in msg
        # no value printed: no number with decimals (dates and counts are fine)
        assert not re.search(r"\d\.\d", msg), msg


def test_check_prints_marker(capsys):
    ex.q1.check(lambda close: np.log(close).diff())
    ex.q2.check()
    out = capsys.readouterr().out
    assert "[check] lesson01.q1: correct" in out
    assert "[check] lesson01.q2: not attempted" in out
    ex.q3.hint()
    ex.q3.solution()
    assert "np.arange" not in capsys.readouterr().out.split("Solution")[0]
    ex.q3.solution()
    assert "np.arange" in capsys.readouterr().out


def _raise(*args):
    raise NotImplementedError


@pytest.mark.parametrize("task", [ex.q1, ex.q2, ex.q3, ex.q4])
def test_blank_or_not_implemented_is_not_attempted(task):
    assert task.evaluate(____).status == "not attempted"
    assert task.evaluate(lambda *a: ____).status == "not attempted"
    assert task.evaluate(_raise).status == "not attempted"


# --- q5, q6 experiment: a centred (leaky) feature ----------------------------------------------------------
def _centred_ic(w, centred=True):
    close = ex.load_sample("sp500")["close"]
    r, y = np.log(close).diff(), np.log(close.shift(-1) / close)
    f = r.rolling(w, center=centred).mean()
    ok = f.notna() & y.notna()
    return f[ok].rank().corr(y[ok].rank())


def test_q5_accepts_the_measured_ic_and_names_the_usual_slips():
    truth = _centred_ic(5)
    assert verdict(ex.q5, truth).status == "correct"
    assert verdict(ex.q5, truth + 0.003).status == "correct"  # tolerant
    assert "trailing" in verdict(ex.q5, _centred_ic(5, centred=False)).message
    assert "percentage" in verdict(ex.q5, 100 * truth).message
    wrong = verdict(ex.q5, truth + 0.05)
    assert wrong.status == "incorrect" and not re.search(r"\d\.\d", wrong.message)
    assert verdict(ex.q5, "0.4").status == "incorrect"
    assert verdict(ex.q5, ____).status == "not attempted"


def test_q6_truth_is_computed_and_only_letters_count():
    ics = {w: _centred_ic(w) for w in (3, 5, 21)}
    right = {3: "a", 5: "b", 21: "c"}[max(ics, key=ics.get)]
    assert verdict(ex.q6, right).status == "correct"
    assert verdict(ex.q6, right.upper() + ")").status == "correct"
    for other in set("abcd") - {right}:
        result = verdict(ex.q6, other)
        assert result.status == "incorrect" and right not in result.message.split("'")
    assert "letters" in verdict(ex.q6, "e").message
    assert verdict(ex.q6, ____).status == "not attempted"
