"""Performance metrics of a return series, with one documented definition each.

Three popular libraries disagree on almost every number a backtest prints, so the course picks one
definition per metric, writes it down here, and names the differences (``backtesting.py`` =
kernc/backtesting.py ``_stats.py``; ``vectorbt`` = ``vectorbt/returns/nb.py``; ``quantstats`` =
``quantstats/stats.py``). Inputs are always **per-bar simple returns net of costs**, ``r_t``, and the
annualisation factor ``P`` (bars per year, see :func:`infer_frequency`).

=====================  ==========================================================================
metric                 course definition (differences)
=====================  ==========================================================================
total_return           ``prod(1 + r) - 1``; all three agree.
annual_return (CAGR)   ``(1 + total) ** (P / n) - 1`` with ``n`` bars. vectorbt: same. quantstats
                       depends on the version: recent releases (2025) use years = observations /
                       ``periods`` (default 252, not inferred from the data); older ones used calendar
                       days between the first and last date / 365. backtesting.py: geometric mean of
                       *calendar-day* returns compounded over 252 or 365 days.
volatility             ``std(r, ddof=1) * sqrt(P)``. vectorbt, quantstats: same. backtesting.py uses
                       a compounding-aware formula built on the geometric mean.
sharpe                 ``mean(r - rf_bar) / std(r, ddof=1) * sqrt(P)`` (arithmetic, like vectorbt,
                       quantstats, empyrical). backtesting.py divides *CAGR* by its volatility, which
                       is lower for volatile series.
sortino                ``mean(r - rf_bar) * sqrt(P) / sqrt(mean(min(r - rf_bar, 0)^2))``: the
                       downside deviation averages over *all* bars (vectorbt, quantstats agree);
                       backtesting.py puts CAGR in the numerator.
max_drawdown           ``min(equity / running_max(equity) - 1)`` with the equity starting at 1 before
                       the first bar (a first-bar loss counts). Negative. backtesting.py reports it as
                       a negative percentage, vectorbt as a negative fraction: same number.
max_drawdown_duration  longest run of consecutive bars spent below an earlier equity peak (bars, not
                       time). backtesting.py reports calendar time from peak to recovery.
calmar                 ``annual_return / |max_drawdown|`` over the whole sample (vectorbt, quantstats,
                       backtesting.py agree; the original definition uses the last 36 months only).
trades                 a trade is a maximal run of bars held with the same sign (a long that is only
                       resized stays one trade; long -> short is two). backtesting.py counts orders
                       (each resize is a trade); quantstats has no trades at all.
win_rate               share of CLOSED trades whose return (after entry, resize and exit costs) is
                       > 0. A trade still open at the last bar has not won or lost yet: it is left
                       out of win_rate and profit_factor and reported alone as open_trade_return
                       (its return if closed at the last close, exit cost charged). Buy-and-hold,
                       one trade never closed, therefore has no win rate and no profit factor
                       (NaN, shown as n/a), not a 100% win rate and an infinite profit factor.
                       quantstats: share of *bars* with r > 0 among bars with r != 0.
profit_factor          sum of winning / |sum of losing| closed-trade returns (inf when closed trades
                       won and none lost, NaN without closed trades). backtesting.py: same on
                       trades; quantstats: on bar returns.
open_trade_return      return of the trade still open at the last bar, as if closed there (NaN when
                       the strategy ends flat). n_trades counts it.
turnover               ``sum |position_t - position_{t-1}| / n * P``: capital traded per year
                       (one-way: opening and closing a full position once a year is 2.0). Computed on
                       the *held* positions (what earned each bar). When the last decision falls on
                       the data's last bar, no bar is left to hold it, so that final rebalance is not
                       in ``turnover`` although the backtest's costs charge it (the cost is paid when
                       the order is placed): cost / turnover then exceeds the cost rate a little.
exposure               share of bars with a non-zero *held* position (backtesting.py "Exposure
                       Time"). The first bar is always flat (nothing was decided before it), so a
                       strategy that is always long shows ``(n - 1) / n``, not 100%.
sharpe_ci_low/high     moving-block bootstrap percentile interval for Sharpe (blocks keep the
                       serial dependence that an i.i.d. bootstrap would destroy).
=====================  ==========================================================================

Everything is vectorised NumPy, O(n), so a million bars take milliseconds (benchmarks/bench_backtest.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "BarFrequency",
    "METRIC_DEFINITIONS",
    "annual_return",
    "annual_volatility",
    "block_bootstrap_mean_ci",
    "calmar_ratio",
    "compute_metrics",
    "direction_accuracy",
    "drawdown",
    "equity_curve",
    "exposure",
    "format_metrics",
    "infer_frequency",
    "information_coefficient",
    "max_drawdown",
    "max_drawdown_duration",
    "periods_per_year",
    "periods_per_year_to_date",
    "profit_factor",
    "rolling_sharpe",
    "sharpe_confidence_interval",
    "sharpe_ratio",
    "sortino_ratio",
    "total_return",
    "trade_returns",
    "turnover",
    "win_rate",
]

#: Short learner-facing definitions; keys are the names returned by :func:`compute_metrics`.
METRIC_DEFINITIONS: dict[str, str] = {
    "total_return": "prod(1 + r) - 1 over the whole test",
    "annual_return": "CAGR: (1 + total_return) ** (P / n_bars) - 1",
    "volatility": "std of bar returns (ddof=1) * sqrt(P)",
    "sharpe": "mean bar excess return / std * sqrt(P) (arithmetic)",
    "sharpe_ci_low": "lower end of the block-bootstrap interval for Sharpe",
    "sharpe_ci_high": "upper end of the block-bootstrap interval for Sharpe",
    "sortino": "mean excess return * sqrt(P) / downside deviation (all bars in the denominator)",
    "calmar": "annual_return / |max_drawdown|",
    "max_drawdown": "worst fall of equity from its running peak (negative fraction)",
    "max_drawdown_duration": "longest run of bars below an earlier equity peak",
    "win_rate": "share of closed trades (same-sign holding runs) with a positive net return; a trade still "
    "open at the end is not counted (see open_trade_return)",
    "profit_factor": "sum of winning / |sum of losing| closed-trade returns",
    "open_trade_return": "net return of the trade still open at the last bar, as if closed there",
    "turnover": "capital traded per year: sum |delta position| / n_bars * P",
    "exposure": "share of bars with a non-zero position",
    "n_trades": "number of same-sign holding runs",
    "n_bars": "number of bars in the evaluation",
    "periods_per_year": "annualisation factor P inferred from the bar spacing (or given)",
}

_PERCENT = {"total_return", "annual_return", "volatility", "max_drawdown", "win_rate", "exposure",
            "open_trade_return"}


# --------------------------------------------------------------------------------------------------
# Annualisation


@dataclass(frozen=True)
class BarFrequency:
    """What :func:`infer_frequency` concluded about an index.

    Attributes:
        bar: median spacing between consecutive bars.
        trades_weekends: True for a market open every day of the week (crypto, 24/7); False for a 5-day
            week, whichever two days it is closed (Saturday-Sunday, or Friday-Saturday for a
            Sunday-to-Thursday week).
        bars_per_day: median number of bars per calendar date (intraday data), else 1.
        periods_per_year: the annualisation factor P.
        description: human-readable summary, e.g. ``"1h bars, 24/7 market: 8760 bars/year"``.
    """

    bar: pd.Timedelta
    trades_weekends: bool
    bars_per_day: float
    periods_per_year: float
    description: str


_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
#: Share of bars on the two closed days of the week above which a market counts as open every day.
_EVERY_DAY_SHARE = 0.6 * 2 / 7


def _fmt_td(td: pd.Timedelta) -> str:
    secs = td.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if secs >= size and abs(secs / size - round(secs / size)) < 1e-9:
            return f"{round(secs / size)}{unit}"
    return str(td)


def _trades_every_day(day_counts: np.ndarray, span_ns) -> np.ndarray:
    """Whether a market is open every day of the week, from its bars per weekday (one row per index).

    A market's days off are the two days of the week with the fewest bars: Saturday and Sunday for most
    exchanges, Friday and Saturday for a Sunday-to-Thursday week (FX daily candles stamped at the New York
    close, Middle-East exchanges). It trades every day when those two days still hold more than
    ``0.6 * 2/7`` of the bars (the weekend threshold backtesting.py uses). Until the index spans a week
    (``span_ns``, first to last timestamp) not every weekday had its chance to appear, so the share on
    Saturday and Sunday decides.
    """
    counts = np.atleast_2d(np.asarray(day_counts, dtype=float))
    quietest = np.sort(counts, axis=1)[:, :2].sum(axis=1)
    weekend = counts[:, 5] + counts[:, 6]
    off = np.where(np.asarray(span_ns) >= pd.Timedelta(days=7).value, quietest, weekend)
    return off / counts.sum(axis=1) > _EVERY_DAY_SHARE


def _week_description(day_counts: np.ndarray) -> str:
    """``"weekdays only"`` or, for another 5-day week, the days it is closed (``"closed Fri, Sat"``)."""
    share = day_counts / day_counts.sum()
    closed = [name for name, s in zip(_DAY_NAMES, share, strict=True) if s < _EVERY_DAY_SHARE / 2]
    return "weekdays only" if closed in ([], ["Sat", "Sun"]) else "closed " + ", ".join(closed)


def infer_frequency(index: pd.DatetimeIndex) -> BarFrequency:
    """Infer bars-per-year from the timestamps themselves (hourly is not 252).

    Rules, in order (``dt`` = median bar spacing; a market is open every day when its two quietest days
    of the week hold more than 0.6 * 2/7 of the bars, the weekend threshold backtesting.py uses, see
    :func:`_trades_every_day`):

    * ``dt >= 20 days``: monthly, P = 12; ``dt >= 5 days``: weekly, P = 52;
    * ``dt >= 20 hours`` (daily): P = 365 when open every day (crypto), else 252 exchange trading days,
      whichever two days the week is closed (a Sunday-to-Thursday market has the same 5 days a week);
    * intraday, open every day: P = 365 days / dt (hourly crypto: 24 * 365 = 8760);
    * intraday, 5-day week: P = 252 * (median bars per calendar date). The course counts bars,
      not hours: hourly US-equity bars stamped 9:30 ... 15:30 are 7 bars a day (the last is half an
      hour), so P = 1764, slightly above the 252 * 6.5 = 1638 rule of thumb, and a 24-hour weekday
      market (FX) gives 252 * 24.

    Pass ``periods_per_year`` explicitly to :class:`course_lib.BacktestConfig` where this guess is wrong
    (e.g. a few days of hourly crypto data that happen to contain no weekend).
    """
    if not isinstance(index, pd.DatetimeIndex):
        raise TypeError(
            "infer_frequency needs a DatetimeIndex; pass periods_per_year=... explicitly for plain arrays."
        )
    if len(index) < 3:
        raise ValueError(
            f"need at least 3 timestamps to infer the bar frequency, got {len(index)}; "
            "pass periods_per_year=... explicitly."
        )
    ns = index.as_unit("ns").asi8  # pandas 3 indexes are often in us: never trust asi8's unit
    gaps = np.diff(ns)
    if (gaps <= 0).any():
        raise ValueError(
            "timestamps must be strictly increasing to infer the bar frequency (sort and de-duplicate)."
        )
    dt = pd.Timedelta(int(np.median(gaps)), unit="ns")
    day_counts = np.bincount(index.day_of_week, minlength=7)
    weekends = bool(_trades_every_day(day_counts, ns[-1] - ns[0])[0])
    week = _week_description(day_counts)
    day = pd.Timedelta(days=1)
    bars_per_day = 1.0
    if dt >= pd.Timedelta(days=20):
        p, what = 12.0, "monthly bars"
    elif dt >= pd.Timedelta(days=5):
        p, what = 52.0, "weekly bars"
    elif dt >= pd.Timedelta(hours=20):
        p, what = (365.0, "daily bars, 24/7 market") if weekends else (252.0, f"daily bars, {week}")
    elif weekends:
        p = day / dt * 365.0
        bars_per_day = day / dt
        what = f"{_fmt_td(dt)} bars, 24/7 market"
    else:
        counts = pd.Series(1, index=index.normalize()).groupby(level=0).size()
        bars_per_day = float(np.median(counts.to_numpy()))
        p = 252.0 * bars_per_day
        what = f"{_fmt_td(dt)} bars, {week}, {bars_per_day:g} bars/day"
    return BarFrequency(dt, weekends, bars_per_day, float(p), f"{what}: {p:g} bars/year")


def _rank_with(prev: np.ndarray, extra: np.ndarray, r: int) -> np.ndarray:
    """The r-th smallest value of the sorted ``prev`` plus one more value, for each value in ``extra``."""
    if len(prev) == 0:
        return extra
    at = np.searchsorted(prev, extra)  # where each extra value falls among prev
    return np.where(r < at, prev[min(r, len(prev) - 1)], np.where(r == at, extra, prev[max(r - 1, 0)]))


def _median_bars_per_date_to_date(days: np.ndarray) -> np.ndarray:
    """For every bar t, the median number of bars per calendar date among the bars up to t.

    ``days`` holds each bar's date (sorted, so a date's bars are contiguous); the date of bar t counts the
    bars it has so far. That is the multiset of the earlier dates' final counts plus one more value, whose
    middle elements are read off the sorted earlier counts without re-sorting.
    """
    starts = np.flatnonzero(np.r_[True, days[1:] != days[:-1]])
    ends = np.r_[starts[1:], len(days)]
    out = np.empty(len(days))
    done: list[int] = []  # final bar counts of the earlier dates, sorted
    for start, end in zip(starts, ends, strict=True):
        prev = np.asarray(done, dtype=float)
        so_far = np.arange(1, end - start + 1, dtype=float)
        m = len(prev) + 1
        out[start:end] = (_rank_with(prev, so_far, (m - 1) // 2) + _rank_with(prev, so_far, m // 2)) / 2
        done.insert(int(np.searchsorted(prev, end - start)), end - start)
    return out


def periods_per_year_to_date(index: pd.DatetimeIndex) -> np.ndarray:
    """``P`` at every bar t from the timestamps up to t only: ``infer_frequency(index[: t + 1])``.

    What a causal rule may use (position sizing at t): a venue that starts trading at weekends later does
    not change the annualisation of earlier bars. NaN for the first two bars (three timestamps are the
    least :func:`infer_frequency` reads). Vectorised: O(n log n), not n calls of O(n).
    """
    if not isinstance(index, pd.DatetimeIndex):
        raise TypeError("periods_per_year_to_date needs a DatetimeIndex; pass periods_per_year=... for arrays.")
    n = len(index)
    out = np.full(n, np.nan)
    if n < 3:
        return out
    ns = index.as_unit("ns").asi8
    gaps = np.diff(ns)
    if (gaps <= 0).any():
        raise ValueError(
            "timestamps must be strictly increasing to infer the bar frequency (sort and de-duplicate)."
        )
    dt = np.trunc(pd.Series(gaps, dtype=float).expanding().median().to_numpy())[1:]  # bars 2..n-1
    counts = np.cumsum(np.eye(7, dtype=np.int64)[index.day_of_week], axis=0)[2:]
    every_day = _trades_every_day(counts, ns[2:] - ns[0])
    day = float(pd.Timedelta(days=1).value)
    daily = dt >= day * 20 / 24
    bars_per_day = np.ones(n - 2)
    if (~daily & ~every_day).any():  # intraday, 5-day week: P counts the bars of a trading day
        bars_per_day = _median_bars_per_date_to_date(index.normalize().as_unit("ns").asi8)[2:]
    out[2:] = np.select(
        [dt >= 20 * day, dt >= 5 * day, daily & every_day, daily, every_day],
        [12.0, 52.0, 365.0, 252.0, day / dt * 365.0],
        default=252.0 * bars_per_day,
    )
    return out


def periods_per_year(index: pd.DatetimeIndex) -> float:
    """Shortcut for ``infer_frequency(index).periods_per_year``."""
    return infer_frequency(index).periods_per_year


def _resolve_p(returns, p: float | None) -> float:
    if p is not None:
        if not p > 0:
            raise ValueError(f"periods_per_year must be > 0, got {p}.")
        return float(p)
    if isinstance(returns, (pd.Series, pd.DataFrame)) and isinstance(returns.index, pd.DatetimeIndex):
        return periods_per_year(returns.index)
    raise ValueError(
        "periods_per_year is required for returns without a DatetimeIndex (e.g. 252 for daily stocks)."
    )


def _arr(x) -> np.ndarray:
    out = np.asarray(x, dtype=np.float64)
    if out.ndim != 1:
        raise ValueError(f"expected a 1-d series of bar returns, got shape {out.shape}.")
    return out


def _per_bar_rf(rf: float, p: float) -> float:
    return (1.0 + rf) ** (1.0 / p) - 1.0 if rf else 0.0


# --------------------------------------------------------------------------------------------------
# Return and risk


def total_return(returns) -> float:
    """``prod(1 + r) - 1`` (computed as ``expm1(sum(log1p(r)))`` for accuracy over long series)."""
    r = _arr(returns)
    if len(r) == 0:
        return float("nan")
    if (r <= -1).any():
        return -1.0
    return float(np.expm1(np.log1p(r).sum()))


def annual_return(returns, periods_per_year: float | None = None) -> float:
    """Compound annual growth rate ``(1 + total) ** (P / n) - 1``."""
    p = _resolve_p(returns, periods_per_year)
    r = _arr(returns)
    if len(r) == 0:
        return float("nan")
    if (r <= -1).any():
        return -1.0
    return float(np.expm1(np.log1p(r).sum() * p / len(r)))


def annual_volatility(returns, periods_per_year: float | None = None) -> float:
    """``std(r, ddof=1) * sqrt(P)``; NaN for fewer than 2 bars."""
    p = _resolve_p(returns, periods_per_year)
    r = _arr(returns)
    return float(r.std(ddof=1) * math.sqrt(p)) if len(r) > 1 else float("nan")


def _has_spread(sd: float, r: np.ndarray) -> bool:
    """True when ``sd`` is a real spread, not rounding: ``np.std`` of a constant series is ~1e-17, not 0,
    and dividing by it gave a Sharpe of 1e16 where the definition says NaN (no spread, no ratio)."""
    return bool(sd > 1e-12 * max(float(np.max(np.abs(r))) if len(r) else 0.0, 1e-300))


def sharpe_ratio(returns, periods_per_year: float | None = None, risk_free_rate: float = 0.0) -> float:
    """Annualised Sharpe ratio ``mean(r - rf) / std(r, ddof=1) * sqrt(P)``.

    ``risk_free_rate`` is annual and converted per bar with ``(1 + rf) ** (1/P) - 1``. Returns NaN when
    the returns have zero spread (a flat strategy has no Sharpe, not an infinite one).
    """
    p = _resolve_p(returns, periods_per_year)
    r = _arr(returns) - _per_bar_rf(risk_free_rate, p)
    if len(r) < 2:
        return float("nan")
    sd = r.std(ddof=1)
    return float(r.mean() / sd * math.sqrt(p)) if _has_spread(sd, r) else float("nan")


def sortino_ratio(returns, periods_per_year: float | None = None, risk_free_rate: float = 0.0) -> float:
    """``mean(r - rf) * sqrt(P) / sqrt(mean(min(r - rf, 0)^2))``; NaN without any losing bar."""
    p = _resolve_p(returns, periods_per_year)
    r = _arr(returns) - _per_bar_rf(risk_free_rate, p)
    if len(r) < 2:
        return float("nan")
    downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
    return float(r.mean() * math.sqrt(p) / downside) if downside > 0 else float("nan")


def equity_curve(returns, start: float = 1.0) -> np.ndarray:
    """Equity after each bar, ``start * cumprod(1 + r)`` (length n; the starting value is not included)."""
    r = _arr(returns)
    return start * np.cumprod(1.0 + r)


def drawdown(returns) -> np.ndarray:
    """Drawdown after each bar: ``equity / running_peak - 1`` (<= 0), the peak including the start (1)."""
    eq = equity_curve(returns)
    peak = np.maximum.accumulate(np.maximum(eq, 1.0))
    return eq / peak - 1.0


def _drawdown_stats(r: np.ndarray) -> tuple[float, int]:
    """(max drawdown, longest underwater run in bars) from one pass over the equity curve."""
    eq = np.empty(len(r) + 1)
    eq[0] = 1.0
    np.cumprod(1.0 + r, out=eq[1:])
    peak = np.maximum.accumulate(eq)
    mdd = float((eq / peak).min() - 1.0)
    pos = np.arange(len(eq))
    last_peak = np.maximum.accumulate(np.where(eq >= peak, pos, 0))
    return mdd, int((pos - last_peak).max())


def max_drawdown(returns) -> float:
    """Worst drawdown (a negative fraction; 0.0 if equity never fell below a previous peak)."""
    r = _arr(returns)
    return _drawdown_stats(r)[0] if len(r) else float("nan")


def max_drawdown_duration(returns) -> int:
    """Longest run of consecutive bars spent below an earlier equity peak (0 if never under water).

    With the peak at bar ``p`` (or the start) and the next new high at bar ``q``, that drawdown lasted
    ``q - p - 1`` bars; a drawdown still open at the end counts to the last bar.
    """
    r = _arr(returns)
    return _drawdown_stats(r)[1] if len(r) else 0


def calmar_ratio(returns, periods_per_year: float | None = None) -> float:
    """``annual_return / |max_drawdown|``; NaN when there was no drawdown."""
    mdd = max_drawdown(returns)
    return (
        annual_return(returns, _resolve_p(returns, periods_per_year)) / abs(mdd) if mdd < 0 else float("nan")
    )


def rolling_sharpe(returns: pd.Series, window: int = 63, periods_per_year: float | None = None) -> pd.Series:
    """Annualised Sharpe over a trailing window of ``window`` bars (NaN until the window is full)."""
    p = _resolve_p(returns, periods_per_year)
    roll = pd.Series(returns, dtype=float).rolling(window)
    sd = roll.std()
    return roll.mean() / sd.where(sd > 0) * math.sqrt(p)


# --------------------------------------------------------------------------------------------------
# Trades, turnover, exposure


def _trade_ids(held: np.ndarray) -> tuple[np.ndarray, int]:
    sign = np.sign(held)
    prev = np.concatenate(([0.0], sign[:-1]))
    start = (sign != 0) & (sign != prev)
    ids = np.cumsum(start) - 1
    return np.where(sign != 0, ids, -1), int(start.sum())


def trade_returns(returns, held, cost_rate: float = 0.0) -> np.ndarray:
    """Net return of each trade, a trade being a maximal run of bars held with the same sign.

    ``returns`` are the bars' *gross* strategy returns (``held * asset_return``) when ``cost_rate`` is
    given: the trade's cost ``cost_rate * (|entry size| + sum |resizes| + |exit size|)`` is then
    subtracted from the compounded gross return. This attributes every cost to the trade that caused
    it, whichever bar the bar-level accounting booked it on. With ``cost_rate=0`` pass net returns.

    A trade still open at the last bar is charged its exit leg too, as if closed at the final close:
    its return is what you would realise by closing it, so an open winner is not flattered by a cost
    never paid. (The equity curve does not book that sale, so the trades' costs can exceed the
    bar-level costs by one exit.)
    """
    r = _arr(returns)
    h = _arr(held)
    if len(r) != len(h):
        raise ValueError(f"returns ({len(r)}) and positions ({len(h)}) differ in length.")
    ids, n = _trade_ids(h)
    if n == 0:
        return np.empty(0)
    inside = ids >= 0
    with np.errstate(divide="ignore"):
        logs = np.log1p(np.maximum(r[inside], -1.0))
    gross = np.expm1(np.bincount(ids[inside], weights=logs, minlength=n))
    if cost_rate:
        prev = np.concatenate(([0.0], h[:-1]))
        first = inside & (ids != np.concatenate(([-2], ids[:-1])))
        last = inside & (ids != np.concatenate((ids[1:], [-2])))
        traded = np.where(first, np.abs(h), np.abs(h - prev)) + np.where(last, np.abs(h), 0.0)
        # entry buys |h|, resizes trade |h - prev|, the exit sells |h| (in a reversal long -> short each
        # trade pays its own leg)
        gross = gross - cost_rate * np.bincount(ids[inside], weights=traded[inside], minlength=n)
    return gross


def win_rate(trade_rets) -> float:
    """Share of trades with a positive return; NaN without trades."""
    t = _arr(trade_rets)
    return float(np.mean(t > 0)) if len(t) else float("nan")


def profit_factor(trade_rets) -> float:
    """Gross profit over gross loss of the trades (inf with wins and no loss, NaN without trades)."""
    t = _arr(trade_rets)
    if len(t) == 0:
        return float("nan")
    gain, loss = float(t[t > 0].sum()), float(-t[t < 0].sum())
    if loss == 0:
        return float("inf") if gain > 0 else float("nan")
    return gain / loss


def turnover(positions, periods_per_year: float) -> float:
    """Annualised one-way turnover: ``sum |pos_t - pos_{t-1}| / n * P`` (the first entry from 0 counts).

    :func:`compute_metrics` passes the *held* positions, which leave out a change decided at the data's
    last bar (no bar is left to hold it) although the backtest charges its cost; see the module table.
    """
    pos = _arr(positions)
    if len(pos) == 0:
        return float("nan")
    return float(np.abs(np.diff(pos, prepend=0.0)).sum() / len(pos) * periods_per_year)


def exposure(held) -> float:
    """Share of bars with a non-zero held position (the first bar of a backtest is always held flat)."""
    h = _arr(held)
    return float(np.mean(h != 0)) if len(h) else float("nan")


# --------------------------------------------------------------------------------------------------
# Bootstrap


def sharpe_confidence_interval(
    returns,
    periods_per_year: float | None = None,
    level: float = 0.95,
    n_boot: int = 1000,
    block_length: int | None = None,
    seed: int = 0,
    risk_free_rate: float = 0.0,
) -> tuple[float, float]:
    """Percentile confidence interval for the annualised Sharpe ratio by circular moving-block bootstrap.

    Why blocks: bar returns are serially dependent (volatility clusters, positions persist), and
    resampling single bars would understate the uncertainty. Each resample glues ``ceil(n / L)``
    random blocks of ``L`` consecutive bars, wrapping around the end. The default
    ``L = max(n ** (1/3), n / 1000)`` is the textbook rate for short series and caps the work at 1000
    blocks per resample for long ones (still ``L / n <= 0.1%``: blocks stay short relative to the data).
    Only the mean and variance of each resample are needed, so block sums come from prefix sums: the
    cost is ``n_boot * n / L`` additions, not ``n_boot * n``.
    """
    p = _resolve_p(returns, periods_per_year)
    r = _arr(returns) - _per_bar_rf(risk_free_rate, p)
    n = len(r)
    if n < 3 or not 0 < level < 1:
        return float("nan"), float("nan")
    L = int(block_length or max(1, round(n ** (1 / 3)), -(-n // 1000)))
    L = min(L, n)
    ext = np.concatenate((r, r[:L]))
    c1 = np.concatenate(([0.0], np.cumsum(ext)))
    c2 = np.concatenate(([0.0], np.cumsum(ext * ext)))
    n_blocks = -(-n // L)
    last_len = n - (n_blocks - 1) * L
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot)
    chunk = max(1, 4_000_000 // n_blocks)
    for lo in range(0, n_boot, chunk):
        b = min(chunk, n_boot - lo)
        starts = rng.integers(0, n, size=(b, n_blocks))
        ends = starts + L
        ends[:, -1] = starts[:, -1] + last_len
        s1 = (c1[ends] - c1[starts]).sum(axis=1)
        s2 = (c2[ends] - c2[starts]).sum(axis=1)
        mean = s1 / n
        var = np.maximum(s2 - n * mean * mean, 0.0) / (n - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            stats[lo : lo + b] = mean / np.sqrt(var) * math.sqrt(p)
    stats = stats[np.isfinite(stats)]
    if len(stats) == 0:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    lo_q, hi_q = np.quantile(stats, [alpha, 1 - alpha])
    return float(lo_q), float(hi_q)


def block_bootstrap_mean_ci(d, n_boot: int, block: int, rng: np.random.Generator,
                            level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean of ``d`` by circular block bootstrap (blocks of ``block`` samples).

    The comparison of two forecasts on the same test windows resamples their per-window difference with it:
    blocks keep the serial dependence of overlapping windows that an i.i.d. bootstrap would destroy. A thin
    wrapper kept for its callers: the one implementation is :func:`course_lib.stats.block_bootstrap_ci`
    (``arch``), seeded from ``rng``.
    """
    from .stats import block_bootstrap_ci

    seed = int(rng.integers(0, 2**31 - 1))
    return block_bootstrap_ci(d, block, level=level, n_boot=n_boot, seed=seed)


# --------------------------------------------------------------------------------------------------
# Forecast scores (training, validation, the memory-vs-no-memory comparison and the lessons use these)


def direction_accuracy(signal, y) -> float:
    """Share of samples where ``sign(signal) == sign(y)``, ignoring zero (or missing) labels.

    A zero label has no direction to get right; a zero (flat) signal on a moving market counts as a miss.
    """
    signal, y = np.asarray(signal, dtype=float), np.asarray(y, dtype=float)
    ok = (y != 0) & np.isfinite(y) & np.isfinite(signal)
    if not ok.any():
        return float("nan")
    return float(np.mean(np.sign(signal[ok]) == np.sign(y[ok])))


def information_coefficient(pred, y) -> float:
    """Spearman rank correlation between forecasts and outcomes (the quant's IC); NaN if undefined."""
    pred, y = pd.Series(np.asarray(pred, dtype=float)), pd.Series(np.asarray(y, dtype=float))
    ok = pred.notna() & y.notna()
    if ok.sum() < 3 or pred[ok].nunique() < 2:
        return float("nan")
    return float(pred[ok].rank().corr(y[ok].rank()))


# --------------------------------------------------------------------------------------------------
# All at once


def compute_metrics(
    returns,
    held=None,
    *,
    periods_per_year: float | None = None,
    gross_returns=None,
    cost_rate: float = 0.0,
    risk_free_rate: float = 0.0,
    n_boot: int = 1000,
    ci_level: float = 0.95,
    block_length: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Every metric of the course for one strategy, in a flat dict (see ``METRIC_DEFINITIONS``).

    Args:
        returns: net simple return of each bar (after costs).
        held: position held during each bar (the one that earned it); trade metrics are NaN without it.
        periods_per_year: P; inferred from a Series' DatetimeIndex when omitted.
        gross_returns, cost_rate: for per-trade returns that carry their own costs (see
            :func:`trade_returns`); without them trades use the net bar returns.
        n_boot: bootstrap resamples for the Sharpe interval (0 skips it).
    """
    p = _resolve_p(returns, periods_per_year)
    r = _arr(returns)
    n = len(r)
    if n < 2:
        raise ValueError(f"need at least 2 bars of returns for metrics, got {n}.")
    # shared passes (the single-metric functions above compute the same numbers one by one)
    ruined = bool((r <= -1).any())
    log_growth = -np.inf if ruined else float(np.log1p(r).sum())
    total = -1.0 if ruined else float(np.expm1(log_growth))
    ann = -1.0 if ruined else float(np.expm1(log_growth * p / n))
    rf = _per_bar_rf(risk_free_rate, p)
    mean = float(r.mean()) - rf
    sd = float(r.std(ddof=1))
    excess_down = np.minimum(r - rf, 0.0) if rf else np.minimum(r, 0.0)
    downside = math.sqrt(float(np.dot(excess_down, excess_down)) / n)
    mdd, duration = _drawdown_stats(r)
    out: dict[str, float] = {
        "total_return": total,
        "annual_return": ann,
        "volatility": sd * math.sqrt(p),
        "sharpe": mean / sd * math.sqrt(p) if _has_spread(sd, r) else float("nan"),
    }
    if n_boot:
        lo, hi = sharpe_confidence_interval(r, p, ci_level, n_boot, block_length, seed, risk_free_rate)
    else:
        lo = hi = float("nan")
    out["sharpe_ci_low"], out["sharpe_ci_high"] = lo, hi
    out["sortino"] = mean * math.sqrt(p) / downside if downside > 0 else float("nan")
    out["calmar"] = ann / abs(mdd) if mdd < 0 else float("nan")
    out["max_drawdown"] = mdd
    out["max_drawdown_duration"] = float(duration)
    if held is not None:
        h = _arr(held)
        if gross_returns is not None:
            trades = trade_returns(gross_returns, h, cost_rate)
        else:
            trades = trade_returns(r, h)
        # a trade still held at the last bar has not won or lost yet: it is reported on its own
        still_open = len(trades) > 0 and h[-1] != 0
        closed = trades[:-1] if still_open else trades
        out["win_rate"] = win_rate(closed)
        out["profit_factor"] = profit_factor(closed)
        out["open_trade_return"] = float(trades[-1]) if still_open else float("nan")
        out["turnover"] = turnover(h, p)
        out["exposure"] = exposure(h)
        out["n_trades"] = float(len(trades))
    else:
        for key in ("win_rate", "profit_factor", "open_trade_return", "turnover", "exposure", "n_trades"):
            out[key] = float("nan")
    out["n_bars"] = float(len(r))
    out["periods_per_year"] = p
    return out


def format_metrics(
    metrics: Mapping[str, Mapping[str, float]] | Mapping[str, float], digits: int = 2
) -> pd.DataFrame:
    """A readable table: one row per metric, one column per strategy; percentages for return-like rows.

    Accepts one metrics dict (from :func:`compute_metrics`) or ``{strategy_name: metrics_dict}``. A metric
    that does not apply (NaN: no closed trade has a win rate, a strategy that ends flat has no open trade)
    shows ``n/a``.
    """
    if metrics and all(not isinstance(v, Mapping) for v in metrics.values()):
        metrics = {"strategy": metrics}
    frame = pd.DataFrame({name: pd.Series(m, dtype=float) for name, m in metrics.items()})
    rows = []
    for key in frame.index:
        vals = frame.loc[key]
        if key in _PERCENT:
            rows.append((f"{key} [%]", [f"{v * 100:.{digits}f}" if np.isfinite(v) else "n/a" for v in vals]))
        elif key in {"n_trades", "n_bars", "max_drawdown_duration", "periods_per_year"}:
            rows.append((key, [f"{v:.0f}" if np.isfinite(v) else "n/a" for v in vals]))
        else:
            rows.append((key, [f"{v:.{digits}f}" if np.isfinite(v) or np.isinf(v) else "n/a" for v in vals]))
    return pd.DataFrame([v for _, v in rows], index=[k for k, _ in rows], columns=frame.columns)
