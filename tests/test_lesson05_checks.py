"""The lesson 05 checks accept correct answers, reject the classic mistakes, and say which mistake it was."""

from __future__ import annotations

import numpy as np

import course_lib as cl
from course_lib import ____
from course_lib.checks import lesson05 as ex


def test_q1_sharpe():
    def right(r):
        return r.mean() / r.std(ddof=1) * np.sqrt(cl.periods_per_year(r.index))

    def always_252(r):
        return r.mean() / r.std(ddof=1) * np.sqrt(252)

    assert ex.q1.evaluate(right).status == "correct"
    res = ex.q1.evaluate(always_252)
    assert res.status == "incorrect" and "252" in res.message
    assert (
        ex.q1.evaluate(lambda r: r.mean() / r.std(ddof=0) * np.sqrt(cl.periods_per_year(r.index))).status
        == "incorrect"
    )
    assert ex.q1.evaluate(lambda r: ____).status == "not attempted"
    assert ex.q1.evaluate().status == "not attempted"


def test_q2_drawdown():
    def right(r):
        eq = np.cumprod(1 + r)
        return (eq / np.maximum.accumulate(np.maximum(eq, 1.0)) - 1).min()

    def no_start(r):
        eq = np.cumprod(1 + r)
        return (eq / np.maximum.accumulate(eq) - 1).min()

    assert ex.q2.evaluate(right).status == "correct"
    res = ex.q2.evaluate(no_start)
    assert res.status == "incorrect" and "first bar" in res.message
    assert "sign" in ex.q2.evaluate(lambda r: -right(r)).message


def test_q3_lagged_returns():
    def right(pos, r, bps):
        held = pos.shift(1).fillna(0.0)
        return held * r - bps / 1e4 * pos.diff().fillna(pos.iloc[0]).abs()

    def lookahead(pos, r, bps):
        return pos * r - bps / 1e4 * pos.diff().fillna(pos.iloc[0]).abs()

    def cost_on_position(pos, r, bps):
        return pos.shift(1).fillna(0.0) * r - bps / 1e4 * pos.abs()

    assert ex.q3.evaluate(right).status == "correct"
    assert "look-ahead" in ex.q3.evaluate(lookahead).message
    assert "TURNOVER" in ex.q3.evaluate(cost_on_position).message
    assert ex.q3.evaluate(lambda p, r, b: ____).status == "not attempted"
