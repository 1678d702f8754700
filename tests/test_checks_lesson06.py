"""The lesson 06 checks accept right answers, catch the typical mistakes by name, and never pass a blank."""

from __future__ import annotations

import numpy as np
import pandas as pd

from course_lib import ____
from course_lib.checks import lesson06 as ex


def _pick(scores, end_pos, query_pos, horizon, k, exclusion, *, causal=True, distinct=True, query_gap=True,
          strict=False):  # fmt: skip
    chosen = []
    for i in np.argsort(-np.asarray(scores), kind="stable"):
        e = end_pos[i]
        if causal and (e + horizon >= query_pos if strict else e + horizon > query_pos):
            continue
        if query_gap and query_pos - e < exclusion:
            continue
        if not distinct or all((abs(e - end_pos[j]) > exclusion if strict else abs(e - end_pos[j]) >= exclusion)
                               for j in chosen):  # fmt: skip
            chosen.append(int(i))
        if len(chosen) == k:
            break
    return chosen


def test_q1_pick_analogs():
    assert ex.q1.evaluate(_pick).status == "correct"
    res = ex.q1.evaluate(lambda *a: _pick(*a, causal=False))
    assert res.status == "incorrect" and "not yet known" in res.message
    res = ex.q1.evaluate(lambda *a: _pick(*a, distinct=False))
    assert res.status == "incorrect" and "overlapping neighbours" in res.message
    res = ex.q1.evaluate(lambda *a: _pick(*a, query_gap=False))
    assert res.status == "incorrect" and "overlaps the query" in res.message
    res = ex.q1.evaluate(lambda *a: _pick(*a, strict=True))
    assert res.status == "incorrect" and "boundary" in res.message
    res = ex.q1.evaluate(lambda *a: sorted(_pick(*a)))
    assert res.status == "incorrect"
    assert ex.q1.evaluate(lambda *a: ____).status == "not attempted"
    assert ex.q1.evaluate().status == "not attempted"


def test_q2_simplex_weights():
    def right(d):
        d = np.asarray(d, float)
        w = (d == d.min()).astype(float) if d.min() == 0 else np.exp(-d / d.min())
        return w / w.sum()

    assert ex.q2.evaluate(right).status == "correct"
    res = ex.q2.evaluate(lambda d: np.exp(-np.asarray(d) / max(np.min(d), 1e-12)))
    assert res.status == "incorrect" and "sum to one" in res.message
    res = ex.q2.evaluate(lambda d: (lambda w: w / w.sum())(np.exp(-np.asarray(d))))
    assert res.status == "incorrect" and "NEAREST" in res.message
    with np.errstate(divide="ignore", invalid="ignore"):
        res = ex.q2.evaluate(lambda d: (lambda w: w / w.sum())(np.exp(-np.asarray(d) / np.min(d))))
    assert res.status == "incorrect" and "twin" in res.message
    assert ex.q2.evaluate(lambda d: ____).status == "not attempted"


def test_q3_time_shuffle():
    def right(close, seed):
        r = np.random.default_rng(seed).permutation(np.diff(np.log(close.to_numpy())))
        return pd.Series(np.exp(np.log(close.iloc[0]) + np.r_[0.0, np.cumsum(r)]), index=close.index)

    assert ex.q3.evaluate(right).status == "correct"
    res = ex.q3.evaluate(lambda c, s: pd.Series(np.random.default_rng(s).permutation(c.to_numpy()), index=c.index))
    assert res.status == "incorrect" and "PRICES" in res.message

    def with_replacement(close, seed):
        r = np.diff(np.log(close.to_numpy()))
        r = np.random.default_rng(seed).choice(r, size=len(r), replace=True)
        return pd.Series(np.exp(np.log(close.iloc[0]) + np.r_[0.0, np.cumsum(r)]), index=close.index)

    res = ex.q3.evaluate(with_replacement)
    assert res.status == "incorrect" and "permutation" in res.message
    assert "nothing was shuffled" in ex.q3.evaluate(lambda c, s: c.copy()).message
    assert ex.q3.evaluate(lambda c, s: ____).status == "not attempted"


def test_q4_and_q5_questions():
    truth = ex.plain_neighbour_episodes()
    assert 1 <= truth < 10
    assert ex.q4.evaluate(truth).status == "correct"
    assert "number of neighbours" in ex.q4.evaluate(10).message
    assert ex.q4.evaluate(truth + 1).status == "incorrect"
    assert ex.q4.evaluate("two").status == "incorrect"
    assert ex.q4.evaluate().status == "not attempted"
    assert ex.q5.evaluate("b").status == "correct" and ex.q5.evaluate(" B ").status == "correct"
    for wrong in "acd":
        res = ex.q5.evaluate(wrong)
        assert res.status == "incorrect" and res.message
    assert ex.q5.evaluate("e").status == "incorrect"


def test_hints_have_two_levels_and_no_code():
    for task in (ex.q1, ex.q2, ex.q3, ex.q4, ex.q5):
        assert len(task.hints) == 2
        for hint in task.hints:
            assert "(" not in hint.replace("(a", "").replace("(end", "") or "=" not in hint
            assert "np." not in hint and "def " not in hint


def test_q1_end_bars_instead_of_indices_is_named():
    res = ex.q1.evaluate(lambda s, e, q, h, k, x: [int(e[i]) for i in _pick(s, e, q, h, k, x)])
    assert res.status == "incorrect" and "end bars" in res.message, res.message


def test_q4_calendar_days_are_named_and_no_message_spells_the_procedure():
    import re

    truth = ex.plain_neighbour_episodes()
    ends = np.sort(ex._plain_neighbour_ends().to_numpy())
    by_calendar = int(1 + (np.diff(ends).astype("timedelta64[D]").astype(int) >= 64).sum())
    assert by_calendar != truth  # the slip gives a different count on this query
    res = ex.q4.evaluate(by_calendar)
    assert res.status == "incorrect" and "calendar days" in res.message, res.message
    for wrong in (10, by_calendar, truth + 3, 0):
        msg = ex.q4.evaluate(wrong).message
        assert not re.search(r"exclusion=0|K=10|2008-10-10|>= ?SEQ", msg), msg
