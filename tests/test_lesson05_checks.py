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


# --- q4, q5: the cost experiment (truth recomputed, tolerant, nothing revealed) ----------------------------------
def _sharpe_lost(lookback):
    import course_lib as cl

    prices = cl.load_sample("sp500")
    pos = cl.MomentumStrategy(lookback).positions(prices["close"])
    s = [cl.Backtester(cl.BacktestConfig(cost_bps=c, n_boot=0)).run(pos, prices).metrics["sharpe"] for c in (0, 10)]
    return s[0] - s[1]


def test_q4_q5_cost_experiment():
    import re

    import course_lib as cl

    lost = {lb: _sharpe_lost(lb) for lb in (5, 20, 60)}
    assert ex.q4.evaluate(lost[5]).passed
    prices = cl.load_sample("sp500")
    m0 = cl.Backtester(cl.BacktestConfig(cost_bps=0, n_boot=0)).run(
        cl.MomentumStrategy(5).positions(prices["close"]), prices).metrics
    estimate = 10 / 1e4 * m0["turnover"] / m0["volatility"]
    assert ex.q4.evaluate(estimate).passed  # the prediction from the zero-cost run is close enough
    assert "basis points" in ex.q4.evaluate(estimate * 1e4).message
    assert "units of yearly volatility" in ex.q4.evaluate(10 / 1e4 * m0["turnover"]).message
    assert "already per year" in ex.q4.evaluate(estimate / m0["periods_per_year"]).message
    assert "can only lower" in ex.q4.evaluate(-lost[5]).message
    wrong = ex.q4.evaluate(lost[20])  # the 20-bar strategy's loss is not the 5-bar one's
    assert wrong.status == "incorrect" and not re.search(r"\d\.\d", wrong.message)
    right = {5: "a", 20: "b", 60: "c"}[min(lost, key=lost.get)]
    assert ex.q5.evaluate(right).passed
    assert all(ex.q5.evaluate(x).status == "incorrect" for x in "abcd" if x != right)
    assert ex.q4.evaluate().status == "not attempted" and ex.q5.evaluate().status == "not attempted"


_FORMULA = r"sqrt\(|cumprod|cummax|ddof=|10_000|\|pos|pos_\(|shift\(|\bx \|"


def _incorrect_without_formula(task, answer, words):
    import re

    res = task.evaluate(answer)
    assert res.status == "incorrect", res
    assert re.search(words, res.message), res.message
    assert not re.search(_FORMULA, res.message), f"message gives the formula away: {res.message}"


def test_q1_messages_name_the_convention_not_the_formula():
    P = cl.periods_per_year
    _incorrect_without_formula(ex.q1, lambda r: r.mean() / r.std(ddof=1), "per bar")
    _incorrect_without_formula(ex.q1, lambda r: r.mean() / r.std(ddof=1) * np.sqrt(252), "365")
    _incorrect_without_formula(ex.q1, lambda r: r.mean() / r.std(ddof=1) * P(r.index), "square root")
    _incorrect_without_formula(ex.q1, lambda r: r.mean() / r.std(ddof=0) * np.sqrt(P(r.index)), "sample")
    _incorrect_without_formula(ex.q1, lambda r: r.median() / r.std() * np.sqrt(P(r.index)), "Sharpe")


def test_q2_takes_a_series_as_the_task_says():
    def with_series_methods(returns):
        equity = (1 + returns).cumprod()
        return (equity / equity.cummax().clip(lower=1.0) - 1).min()

    assert ex.q2.evaluate(with_series_methods).status == "correct"
    _incorrect_without_formula(ex.q2, lambda r: (r.cumsum() - r.cumsum().cummax().clip(lower=0)).min(), "added")
    _incorrect_without_formula(ex.q2, lambda r: ((1 + r).cumprod() - 1).min(), "peak")


def test_q3_nan_message_points_at_both_blanks_and_messages_keep_the_formula():
    def nan_turnover(pos, r, bps):  # shift filled, but the difference left blank on the first bar
        return pos.shift(1).fillna(0.0) * r - bps / 1e4 * pos.diff().abs()

    _incorrect_without_formula(ex.q3, nan_turnover, "NaN at bar\\(s\\) 0.*difference")
    _incorrect_without_formula(ex.q3, lambda p, r, b: p.shift(1).fillna(0.0) * r, "no costs")
    _incorrect_without_formula(ex.q3, lambda p, r, b: p * r - b / 1e4 * p.diff().fillna(p.iloc[0]).abs(),
                               "look-ahead")
    _incorrect_without_formula(ex.q3, lambda p, r, b: p.shift(1).fillna(0.0) * r - b * p.diff().fillna(p.iloc[0]).abs(),
                               "basis points")
