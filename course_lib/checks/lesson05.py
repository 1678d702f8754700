"""Checks for exercises/05_backtesting: Sharpe with the right annualisation, max drawdown, one-bar-lag P&L.

Each checker runs the learner's function on series it builds here (seeded), compares with
:mod:`course_lib.metrics` / :func:`course_lib.simulate`, and recognises the classic mistakes (252 for hourly
bars, summing instead of compounding, trading on the same bar's return, charging costs on the position
instead of on turnover) to say which one was made, without printing the expected numbers.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ..backtest import simulate
from ..exercise import CheckFailed, Task, _PlaceholderReturned, call_answer
from ..metrics import max_drawdown, sharpe_ratio

__all__ = ["q1", "q2", "q3"]


def _call(func: Any, *args: Any) -> Any:
    try:
        out = call_answer(func, *args)
    except (CheckFailed, _PlaceholderReturned, NotImplementedError):
        raise
    except Exception as exc:  # noqa: BLE001 - arithmetic on ____ fails with an error naming it
        if "_Placeholder" in str(exc) or "____" in str(exc):
            raise _PlaceholderReturned from exc
        raise
    return out


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
            raise CheckFailed(f"{label}: the ratio is not annualised; multiply by sqrt(bars per year).")
        for wrong in (252, 365, 24 * 252, 24 * 365):
            if wrong != p and math.isclose(got, r.mean() / r.std(ddof=1) * math.sqrt(wrong), rel_tol=1e-6):
                raise CheckFailed(
                    f"{label}: you annualised with {wrong} bars per year. Infer it from the timestamps "
                    "(cl.periods_per_year(returns.index) does), hourly is not 252."
                )
        if math.isclose(got, r.mean() / r.std(ddof=0) * math.sqrt(p), rel_tol=1e-6):
            raise CheckFailed(
                f"{label}: right annualisation, but use the sample standard deviation (ddof=1)."
            )
        if math.isclose(got, r.mean() / r.std(ddof=1) * p, rel_tol=1e-6):
            raise CheckFailed(
                f"{label}: scale by the SQUARE ROOT of bars per year (volatility grows like sqrt(time))."
            )
        raise CheckFailed(f"{label}: the value differs from mean / std(ddof=1) * sqrt(bars per year).")


q1 = Task(
    "lesson05.q1",
    "Write annualised_sharpe(returns): Sharpe of per-bar returns, annualised for the bar frequency of the index.",
    _check_sharpe,
    hint="P = cl.periods_per_year(returns.index) gives 252 for weekday daily bars, 365 for crypto, 8760 for hourly "
    "crypto. Then mean / std(ddof=1) * sqrt(P).",
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
        got = _number(_call(func, r.copy()), "max_drawdown")
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
            raise CheckFailed("you added returns; equity compounds: equity = cumprod(1 + r).")
        eq = np.cumprod(1 + r)
        no_start = float(np.min(eq / np.maximum.accumulate(eq) - 1))
        if math.isclose(got, no_start, rel_tol=1e-9):
            raise CheckFailed(
                "a loss on the very first bar is missed: the running peak must include the starting equity of 1."
            )
        raise CheckFailed(
            "the value differs from min(equity / running peak - 1) with equity = cumprod(1 + r)."
        )


q2 = Task(
    "lesson05.q2",
    "Write max_drawdown(returns): the worst fall of the equity curve from its running peak (negative fraction).",
    _check_drawdown,
    hint="equity = np.cumprod(1 + returns); the peak must start at 1 (the initial capital): "
    "peak = np.maximum.accumulate(np.maximum(equity, 1.0)); answer = min(equity / peak - 1).",
    solution="def max_drawdown(returns):\n    equity = np.cumprod(1 + returns)\n"
    "    peak = np.maximum.accumulate(np.maximum(equity, 1.0))\n    return (equity / peak - 1).min()",
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
        raise CheckFailed(
            "the result contains NaN: the first bar holds nothing (fill the shifted position with 0)."
        )
    want = simulate(pos.to_numpy(), asset.to_numpy(), cost_bps / 1e4)["net"]
    if np.allclose(got, want, atol=1e-12):
        return
    c = cost_bps / 1e4
    p, r = pos.to_numpy(), asset.to_numpy()
    turnover = np.abs(np.diff(p, prepend=0.0))
    if np.allclose(got, p * r - c * turnover, atol=1e-12):
        raise CheckFailed(
            "look-ahead: the position decided at the close of bar t earns bar t+1, not bar t. Shift it by one."
        )
    held = np.concatenate(([0.0], p[:-1]))
    if np.allclose(got, held * r, atol=1e-12):
        raise CheckFailed(
            "the timing is right, but no costs were charged: subtract cost_bps / 10_000 x |change of position|."
        )
    if np.allclose(got, held * r - c * np.abs(p), atol=1e-12) or np.allclose(
        got, held * r - c * np.abs(held), atol=1e-12
    ):
        raise CheckFailed(
            "costs are charged on the position itself; charge them on TURNOVER, |pos_t - pos_(t-1)|."
        )
    if np.allclose(got, held * r - cost_bps * turnover, atol=1e-12):
        raise CheckFailed("costs are in basis points: divide cost_bps by 10_000.")
    if np.allclose(got[1:], (held * r - c * turnover)[1:], atol=1e-12):
        raise CheckFailed(
            "almost: the very first entry also trades (from flat to the first position) and pays costs."
        )
    raise CheckFailed("values differ from held_t x r_t - cost x |pos_t - pos_(t-1)| with held_t = pos_(t-1).")


q3 = Task(
    "lesson05.q3",
    "Write strategy_returns(positions, asset_returns, cost_bps): net per-bar returns with a one-bar lag and costs "
    "on turnover.",
    _check_strategy_returns,
    hint="held = positions.shift(1).fillna(0); turnover = positions.diff().abs() with the first entry "
    "|positions[0]|; net = held * asset_returns - cost_bps / 10_000 * turnover.",
    solution="def strategy_returns(positions, asset_returns, cost_bps):\n"
    "    held = positions.shift(1).fillna(0.0)\n"
    "    turnover = positions.diff().fillna(positions.iloc[0]).abs()\n"
    "    return held * asset_returns - cost_bps / 10_000 * turnover",
)
