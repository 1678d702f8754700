"""Checks for exercises/05_backtesting: Sharpe with the right annualisation, max drawdown, one-bar-lag P&L,
and an experiment on what costs do to strategies that trade at different speeds.

Each checker runs the learner's function on series it builds here (seeded), compares with
:mod:`course_lib.metrics` / :func:`course_lib.simulate`, and recognises the classic mistakes (252 for hourly
bars, summing instead of compounding, trading on the same bar's return, charging costs on the position
instead of on turnover) to say which one was made, without printing the expected numbers. The experiment tasks
(q4, q5) re-run the same backtests here and compare.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from ..backtest.engine import simulate
from ..exercise import CheckFailed, Task
from ..metrics import max_drawdown, sharpe_ratio
from ._common import call as _call
from ._common import choice_checker, format_options, numeric_checker

__all__ = ["q1", "q2", "q3", "q4", "q5"]


def _number(out: Any, what: str) -> float:
    if isinstance(out, (pd.Series, np.ndarray)) and np.size(out) == 1:
        out = np.asarray(out).item()
    if not isinstance(out, (int, float, np.floating, np.integer)):
        raise CheckFailed(f"{what} should return one number, got {type(out).__name__}.")
    value = float(out)
    if not math.isfinite(value):
        raise CheckFailed(f"{what} returned {value}; check for a division by zero or NaN in the input.")
    return value


def _returns(index: pd.DatetimeIndex, seed: int, scale: float) -> pd.Series:
    rng = np.random.default_rng(seed)
    return pd.Series(rng.normal(scale * 0.08, scale, len(index)), index=index)


# --- q1: Sharpe with the right annualisation -------------------------------------------------------------
_CASES = (
    ("daily stock bars (weekdays only)", pd.bdate_range("2020-01-01", periods=400), 252),
    ("daily crypto bars (every day)", pd.date_range("2020-01-01", periods=400, freq="D"), 365),
    ("hourly crypto bars", pd.date_range("2023-01-01", periods=24 * 30, freq="h"), 24 * 365),
)


def _check_sharpe(func: Any) -> None:
    for k, (label, index, p) in enumerate(_CASES):
        r = _returns(index, 10 + k, 0.01)
        got = _number(_call(func, r.copy()), "annualised_sharpe")
        want = sharpe_ratio(r.to_numpy(), p)
        if math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-9):
            continue
        if math.isclose(got, r.mean() / r.std(ddof=1), rel_tol=1e-6):
            raise CheckFailed(f"{label}: this is the ratio per bar, not per year; a yearly figure must grow with "
                              "the number of bars in a year, the way a volatility grows with time.")
        for wrong in (252, 365, 24 * 252, 24 * 365):
            if wrong != p and math.isclose(got, r.mean() / r.std(ddof=1) * math.sqrt(wrong), rel_tol=1e-6):
                raise CheckFailed(
                    f"{label}: you annualised with {wrong} bars per year. Read it from the timestamps: the course "
                    "counts 252 bars a year for weekday-only daily bars, 365 for daily bars on every day, and "
                    "24 x 365 for hourly bars around the clock (the library has a helper that reads the index)."
                )
        if math.isclose(got, r.mean() / r.std(ddof=0) * math.sqrt(p), rel_tol=1e-6):
            raise CheckFailed(
                f"{label}: right annualisation, but the spread is the population one; the course uses the sample "
                "standard deviation (one degree of freedom fewer)."
            )
        if math.isclose(got, r.mean() / r.std(ddof=1) * p, rel_tol=1e-6):
            raise CheckFailed(
                f"{label}: the scaling grows too fast: the mean grows with the number of bars, the spread only "
                "with its square root, so their ratio grows with the square root."
            )
        raise CheckFailed(f"{label}: not the annualised Sharpe ratio (no risk-free rate; the course's conventions "
                          "for bars per year are in the hints).")


q1 = Task(
    "lesson05.q1",
    "Write annualised_sharpe(returns): a risk-adjusted return per year that can be compared across markets whose "
    "bars come at different frequencies (weekday daily, every-day daily, hourly), read from the returns' timestamps.",
    _check_sharpe,
    hint=(
        "Over N independent bars the mean return grows like N, its standard deviation like the square root of N: "
        "what does that do to their ratio?",
        "Divide the mean per-bar return by its sample standard deviation and scale by the square root of the "
        "number of bars in a year. That number depends on the market: the library's periods-per-year helper reads "
        "it from the index, and hourly bars are not two hundred and fifty-two a year.",
    ),
    solution="def annualised_sharpe(returns):\n    P = cl.periods_per_year(returns.index)\n"
    "    return returns.mean() / returns.std(ddof=1) * np.sqrt(P)",
)


# --- q2: maximum drawdown ------------------------------------------------------------------------------------
def _check_drawdown(func: Any) -> None:
    cases = [
        np.array([0.10, -0.05, 0.02, -0.10, 0.05]),
        np.array([-0.20, 0.10, 0.15, -0.05]),  # the first bar is already a loss from the start
        np.array([0.01, 0.02, 0.03]),  # never under water
        _returns(pd.bdate_range("2020-01-01", periods=500), 5, 0.02).to_numpy(),
    ]
    for r in cases:
        series = pd.Series(r, index=pd.bdate_range("2020-01-01", periods=len(r)))  # the task says a Series
        got = _number(_call(func, series), "max_drawdown")
        want = max_drawdown(r)
        if math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12):
            continue
        if math.isclose(got, -want, rel_tol=1e-9) and want != 0:
            raise CheckFailed(
                "the size is right but the sign is not: report the drawdown as a negative fraction."
            )
        cum = np.cumsum(r)
        summed = float(np.min(cum - np.maximum.accumulate(np.maximum(cum, 0.0))))
        if math.isclose(got, summed, rel_tol=1e-9):
            raise CheckFailed("you added returns up; equity compounds: a 10% gain on top of a 10% gain is more "
                              "than 20%.")
        eq = np.cumprod(1 + r)
        no_start = float(np.min(eq / np.maximum.accumulate(eq) - 1))
        if math.isclose(got, no_start, rel_tol=1e-9):
            raise CheckFailed(
                "a loss on the very first bar is missed: the running peak must include the starting equity of 1."
            )
        raise CheckFailed(
            "not the worst fall from a peak: measure each bar's equity against the highest equity reached up to "
            "that bar, as a fraction of that peak."
        )


q2 = Task(
    "lesson05.q2",
    "Write max_drawdown(returns): for a Series of per-bar returns, the worst fall of the compounded equity curve from its highest point so far, as "
    "a negative fraction, where the starting capital counts as the first peak.",
    _check_drawdown,
    hint=(
        "Equity compounds: how do per-bar returns become an equity curve that starts at one?",
        "Multiply up one plus each return, keep a running maximum that never falls below the starting equity of "
        "one, divide the equity by that running peak, subtract one and take the smallest value.",
    ),
    solution="def max_drawdown(returns):\n    equity = (1 + returns).cumprod()\n"
    "    peak = equity.cummax().clip(lower=1.0)\n    return (equity / peak - 1).min()",
)


# --- q3: one-bar lag and costs on turnover --------------------------------------------------------------------
def _check_strategy_returns(func: Any) -> None:
    index = pd.bdate_range("2021-01-01", periods=60)
    rng = np.random.default_rng(7)
    asset = pd.Series(rng.normal(0.0005, 0.01, 60), index=index)
    asset.iloc[0] = 0.0
    pos = pd.Series(np.round(rng.uniform(-1, 1, 60) * 2) / 2, index=index)
    cost_bps = 10.0
    out = _call(func, pos.copy(), asset.copy(), cost_bps)
    if not isinstance(out, (pd.Series, np.ndarray)):
        raise CheckFailed(
            f"strategy_returns should return a Series of per-bar returns, got {type(out).__name__}."
        )
    got = np.asarray(out, dtype=float)
    if got.shape != (60,):
        raise CheckFailed(f"expected one return per bar (60), got shape {got.shape}.")
    if np.isnan(got).any():
        bad = ", ".join(str(i) for i in np.flatnonzero(np.isnan(got))[:5])
        raise CheckFailed(
            f"the result contains NaN at bar(s) {bad}. On the first bar nothing is held yet, and the first "
            "position is a trade from flat: a shift or a difference leaves a blank there that must become a number."
        )
    want = simulate(pos.to_numpy(), asset.to_numpy(), cost_bps / 1e4)["net"]
    if np.allclose(got, want, atol=1e-12):
        return
    c = cost_bps / 1e4
    p, r = pos.to_numpy(), asset.to_numpy()
    turnover = np.abs(np.diff(p, prepend=0.0))
    if np.allclose(got, p * r - c * turnover, atol=1e-12):
        raise CheckFailed(
            "look-ahead: each bar earns the position decided at the same bar's close, i.e. before its return was "
            "known. A decision can only earn what happens after it."
        )
    held = np.concatenate(([0.0], p[:-1]))
    if np.allclose(got, held * r, atol=1e-12):
        raise CheckFailed("the timing is right, but no costs were charged for the trades.")
    if np.allclose(got, held * r - c * np.abs(p), atol=1e-12) or np.allclose(
        got, held * r - c * np.abs(held), atol=1e-12
    ):
        raise CheckFailed(
            "costs are charged on the position held, every bar; a cost is paid on TURNOVER, only when the "
            "position changes, in proportion to the change."
        )
    if np.allclose(got, held * r - cost_bps * turnover, atol=1e-12):
        raise CheckFailed("the costs are ten thousand times too large: cost_bps is in basis points.")
    if np.allclose(got[1:], (held * r - c * turnover)[1:], atol=1e-12):
        raise CheckFailed(
            "almost: the very first entry also trades (from flat to the first position) and pays costs."
        )
    raise CheckFailed("not the net returns: check which bar's return each position earns and what each change of "
                      "position pays.")


q3 = Task(
    "lesson05.q3",
    "Write strategy_returns(positions, asset_returns, cost_bps): the net per-bar returns of a strategy whose "
    "position is decided at each close; a position earns only what happens after it was decided, and every change "
    "of position pays cost_bps basis points of the amount traded.",
    _check_strategy_returns,
    hint=(
        "At the close of bar t you know the decision: which bar's return can it still earn, and what does "
        "holding (as opposed to trading) cost?",
        "Shift the positions by one bar so each bar earns the position decided at the previous close (nothing is "
        "held on the first bar), multiply by the asset returns, and subtract the cost rate (basis points over ten "
        "thousand) times the absolute change of position, counting the first position as a trade from flat.",
    ),
    solution="def strategy_returns(positions, asset_returns, cost_bps):\n"
    "    held = positions.shift(1).fillna(0.0)\n"
    "    turnover = positions.diff().fillna(positions.iloc[0]).abs()\n"
    "    return held * asset_returns - cost_bps / 10_000 * turnover",
)


# --- q4, q5: experiment - what costs do to fast and slow strategies --------------------------------------------
LOOKBACKS = (5, 20, 60)


@lru_cache(maxsize=1)
def _cost_study() -> dict[int, float]:
    """Sharpe lost between 0 and 10 bps of cost, per momentum lookback, on the bundled S&P 500."""
    from ..backtest.engine import BacktestConfig, Backtester
    from ..backtest.strategies import MomentumStrategy
    from ..data.loaders import load_sample

    prices = load_sample("sp500")
    lost = {}
    for lookback in LOOKBACKS:
        pos = MomentumStrategy(lookback).positions(prices["close"])
        sharpe = [Backtester(BacktestConfig(cost_bps=c, n_boot=0)).run(pos, prices).metrics["sharpe"] for c in (0, 10)]
        lost[lookback] = float(sharpe[0] - sharpe[1])
    return lost


@lru_cache(maxsize=1)
def _zero_cost_metrics() -> dict[str, float]:
    from ..backtest.engine import BacktestConfig, Backtester
    from ..backtest.strategies import MomentumStrategy
    from ..data.loaders import load_sample

    prices = load_sample("sp500")
    pos = MomentumStrategy(5).positions(prices["close"])
    return Backtester(BacktestConfig(cost_bps=0, n_boot=0)).run(pos, prices).metrics


def _cost_mistakes(got: float) -> str | None:
    m = _zero_cost_metrics()
    yearly_cost = 10 / 1e4 * m["turnover"]
    if got < 0:
        return "costs can only lower the Sharpe ratio: give the amount it falls (a positive number)."
    if math.isclose(got, 1e4 * yearly_cost / m["volatility"], rel_tol=0.06):
        return "the estimate is ten thousand times too large: the cost is in basis points."
    if math.isclose(got, yearly_cost, rel_tol=0.06):
        return ("that is a yearly cost in units of return; a Sharpe ratio counts in units of yearly volatility, so "
                "the same cost takes more Sharpe from a calm strategy than from a wild one.")
    if math.isclose(got, yearly_cost / m["periods_per_year"] / m["volatility"], rel_tol=0.06):
        return "the turnover in the metrics is already per year: this estimate charges a single bar's trading."
    return None


q4 = Task(
    "lesson05.q4",
    "Predict then run: a 5-bar momentum strategy on the bundled S&P 500 (all bars, no bootstrap). From its "
    "zero-cost backtest alone, before running any other, estimate how much Sharpe ratio 10 bps of costs will take "
    "away; then run it at 10 bps and compare. The check accepts an estimate within 6% of the measured loss.",
    numeric_checker(lambda: _cost_study()[5], "the Sharpe lost to 10 bps of cost", abs_tol=0.0, rel_tol=0.06,
                    mistakes=_cost_mistakes),
    hint=(
        "What does 10 bps cost per year, given how much the strategy trades in a year? And how many units of risk "
        "is that?",
        "The yearly cost is the cost rate (basis points over ten thousand) times the yearly turnover; a Sharpe "
        "ratio is yearly return per unit of yearly volatility, so divide the yearly cost by the yearly volatility. "
        "Both numbers are in the metrics of the zero-cost backtest. Then run the 10 bps backtest and see how "
        "close the estimate came.",
    ),
    solution=(
        "prices = cl.load_sample('sp500')\n"
        "pos = cl.MomentumStrategy(5).positions(prices['close'])\n"
        "m0 = cl.Backtester(cl.BacktestConfig(cost_bps=0, n_boot=0)).run(pos, prices).metrics\n"
        "estimate = 10 / 10_000 * m0['turnover'] / m0['volatility']   # yearly cost in units of yearly risk\n"
        "m10 = cl.Backtester(cl.BacktestConfig(cost_bps=10, n_boot=0)).run(pos, prices).metrics\n"
        "print(estimate, m0['sharpe'] - m10['sharpe'])\n"
        "lost_5 = estimate"
    ),
)

_COST_OPTIONS = {
    "a": "the 5-bar momentum strategy",
    "b": "the 20-bar momentum strategy",
    "c": "the 60-bar momentum strategy",
    "d": "all three lose about the same (within 0.05 of each other)",
}


def _cost_truth() -> str:
    lost = _cost_study()
    if max(lost.values()) - min(lost.values()) < 0.05:
        return "d"
    return {5: "a", 20: "b", 60: "c"}[min(lost, key=lost.get)]


q5 = Task(
    "lesson05.q5",
    "Interpret: repeat with lookbacks of 5, 20 and 60 bars. Which strategy loses the LEAST Sharpe ratio to the same "
    "10 bps? " + format_options(_COST_OPTIONS),
    choice_checker(_COST_OPTIONS, _cost_truth, "the strategy least hurt by costs"),
    hint=(
        "Costs are charged on trading, not on holding: which strategy changes its position least often?",
        "Measure the lost Sharpe for each lookback (the 0 and 10 bps backtests of the previous task) and compare; "
        "then look at each "
        "backtest's mean turnover to explain the order you found.",
    ),
    solution=(
        "def sharpe_lost(lookback):\n"
        "    pos = cl.MomentumStrategy(lookback).positions(prices['close'])\n"
        "    s = [cl.Backtester(cl.BacktestConfig(cost_bps=c, n_boot=0)).run(pos, prices).metrics['sharpe']\n"
        "         for c in (0, 10)]\n"
        "    return s[0] - s[1]\n\n"
        "lost = {lb: sharpe_lost(lb) for lb in (5, 20, 60)}\n"
        "answer = {5: 'a', 20: 'b', 60: 'c'}[min(lost, key=lost.get)]"
    ),
)
