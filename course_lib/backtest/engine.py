"""A vectorised, look-ahead-free backtester for one instrument.

The timing rule is the whole point: a position decided at the close of bar ``t`` (with everything known
at that close) is *held during* bar ``t+1`` and earns that bar's simple return
``close[t+1] / close[t] - 1``. Trading happens at the close, so the cost of changing the position,
``cost_rate * |pos[t] - pos[t-1]|``, is booked on bar ``t``. In arrays::

    held[t]  = pos[t-1]                     (held[0] = 0: nothing is held before the first decision)
    gross[t] = held[t] * asset_return[t]
    net[t]   = gross[t] - (cost_bps + slippage_bps) / 1e4 * |pos[t] - pos[t-1]|
    equity   = initial_capital * cumprod(1 + net)

Two classic bugs are avoided on purpose: log returns are converted to simple returns before being
compounded (``exp(r) - 1``), and the annualisation factor follows the bar frequency
(:func:`course_lib.infer_frequency`; hourly crypto is 8760 bars a year, not 252).

Stop-loss / take-profit are checked at bar closes: once the trade's return since entry (compounded over
the bars it was held) reaches ``-stop_loss`` or ``+take_profit``, the position is closed at that close and
stays flat until the signal changes sign. A gap through the stop loses more than the stop (no intrabar
fills are assumed, because close-only data cannot say whether the low came before the high).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from ..data.loaders import DataError
from ..metrics import BarFrequency, compute_metrics, format_metrics, infer_frequency

__all__ = ["BacktestConfig", "BacktestResult", "Backtester", "simulate"]


@dataclass(frozen=True)
class BacktestConfig:
    """Settings of a backtest.

    Attributes:
        initial_capital: starting equity (only scales the equity curve; metrics are scale-free).
        cost_bps: commission and fees, in basis points of the traded notional (5 bps = 0.05%).
        slippage_bps: extra cost per unit of turnover for crossing the spread / market impact.
        max_position: positions are clipped to ``[-max_position, max_position]`` (1.0 = fully invested).
        allow_short: if False, negative positions are set to 0 (long/flat only).
        stop_loss, take_profit: thresholds (0.05 = 5%) on the *strategy's* cumulative return since the
            trade's entry, i.e. the compounded position-weighted return ``prod(1 + held * r) - 1`` over
            the bars the trade was held, checked at closes; None disables. With a half position a 5% stop
            therefore fires after a ~10% adverse move of the asset. This differs from backtesting.py, where
            ``sl``/``tp`` are price levels of an order (hit intrabar, whatever the position's size): to
            stop on an asset move of ``x`` with a constant position ``p``, pass about ``x * |p|``.
        periods_per_year: annualisation factor; None infers it from the price index.
        risk_free_rate: annual rate for Sharpe/Sortino.
        n_boot, ci_level, seed: the Sharpe bootstrap interval (n_boot=0 skips it).
    """

    initial_capital: float = 100_000.0
    cost_bps: float = 5.0
    slippage_bps: float = 0.0
    max_position: float = 1.0
    allow_short: bool = True
    stop_loss: float | None = None
    take_profit: float | None = None
    periods_per_year: float | None = None
    risk_free_rate: float = 0.0
    n_boot: int = 1000
    ci_level: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.initial_capital > 0:
            raise ValueError(f"initial_capital must be > 0, got {self.initial_capital}.")
        if self.cost_bps < 0 or self.slippage_bps < 0:
            raise ValueError("cost_bps and slippage_bps must be >= 0 (a cost cannot pay you).")
        if not self.max_position > 0:
            raise ValueError(f"max_position must be > 0, got {self.max_position}.")
        for name in ("stop_loss", "take_profit"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be a positive fraction like 0.05 (5%) or None, got {value}.")
        if self.stop_loss is not None and self.stop_loss >= 1:
            raise ValueError(f"stop_loss must be < 1 (a 100% loss cannot be stopped), got {self.stop_loss}.")
        if self.periods_per_year is not None and not self.periods_per_year > 0:
            raise ValueError(f"periods_per_year must be > 0 or None, got {self.periods_per_year}.")

    @property
    def cost_rate(self) -> float:
        """Total cost per unit of turnover as a fraction: ``(cost_bps + slippage_bps) / 10_000``."""
        return (self.cost_bps + self.slippage_bps) / 1e4


def _apply_stops(
    target: np.ndarray, asset_ret: np.ndarray, stop_loss: float | None, take_profit: float | None
):
    """Zero the target from the close where a trade's return since entry hits a stop, until the sign changes.

    Vectorised: within each run of same-sign targets ("segment"), the trade's log growth after bar t
    is ``cumsum(log1p(held * r))[t] - cumsum(...)[segment start]``; the first bar where it crosses a
    threshold and every later bar of the segment are set flat. Zeroing later bars never changes the
    growth before the hit, so no loop is needed.
    """
    n = len(target)
    pos = np.arange(n)
    sign = np.sign(target)
    seg_start = sign != np.concatenate(([0.0], sign[:-1]))
    seg_start[0] = True
    start_idx = np.maximum.accumulate(np.where(seg_start, pos, 0))
    held = np.concatenate(([0.0], target[:-1]))
    growth = np.log1p(np.maximum(held * asset_ret, -1 + 1e-12))
    cs = np.cumsum(growth)
    trade_log = cs - cs[start_idx]
    hit = np.zeros(n, dtype=bool)
    if stop_loss is not None:
        hit |= trade_log <= math.log1p(-stop_loss)
    if take_profit is not None:
        hit |= trade_log >= math.log1p(take_profit)
    hit &= sign != 0
    ch = np.cumsum(hit)
    before = ch[start_idx] - hit[start_idx]
    stopped = (ch - before) > 0
    return np.where(stopped, 0.0, target), hit


def simulate(
    target: np.ndarray,
    asset_returns: np.ndarray,
    cost_rate: float = 0.0,
    max_position: float = 1.0,
    allow_short: bool = True,
    stop_loss: float | None = None,
    take_profit: float | None = None,
) -> dict[str, np.ndarray]:
    """The NumPy core of :class:`Backtester` (arrays in, arrays out; no pandas, no Python loop).

    Args:
        target: position decided at the close of each bar.
        asset_returns: simple return of each bar, ``close[t] / close[t-1] - 1`` (element 0 is never
            earned, because nothing is held before the first close).

    Returns:
        dict with ``position`` (after clipping and stops), ``held``, ``gross``, ``turnover``, ``cost``,
        ``net`` and ``stop_hit`` arrays, all of the input's length.
    """
    target = np.asarray(target, dtype=np.float64)
    r = np.asarray(asset_returns, dtype=np.float64)
    if target.shape != r.shape or target.ndim != 1:
        raise ValueError(f"positions {target.shape} and returns {r.shape} must be 1-d and of equal length.")
    if not np.isfinite(target).all():
        raise DataError("positions contain NaN/inf; use 0 for 'flat' (or forward-fill) before backtesting.")
    r = np.where(np.isfinite(r), r, 0.0)
    low = -max_position if allow_short else 0.0
    target = np.clip(target, low, max_position)
    if stop_loss is not None or take_profit is not None:
        target, hit = _apply_stops(target, r, stop_loss, take_profit)
    else:
        hit = np.zeros(len(target), dtype=bool)
    held = np.empty_like(target)
    held[0] = 0.0
    held[1:] = target[:-1]
    gross = held * r
    trades = np.abs(np.diff(target, prepend=0.0))
    cost = cost_rate * trades
    net = gross - cost
    return {
        "position": target,
        "held": held,
        "gross": gross,
        "turnover": trades,
        "cost": cost,
        "net": net,
        "stop_hit": hit,
    }


def _at(values, i: int) -> str:
    """Where bar ``i`` is, for messages: its timestamp when the data has one, else its position."""
    return f"{values.index[i]}" if isinstance(values, pd.Series) else f"position {i}"


def _check_prices(close: pd.Series) -> None:
    """Refuse what :func:`course_lib.load_csv` refuses: a NaN, infinite or non-positive close.

    A NaN close used to become two 0% bars and an infinite one a -100% total return, silently.
    """
    values = close.to_numpy(dtype=float)
    bad = ~np.isfinite(values) | (values <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"prices must be finite and > 0 to compute returns, but the close is {values[i]} at {_at(close, i)} "
            f"({int(bad.sum())} such bar(s)). Drop or fill those bars (e.g. prices.dropna()), or load the file "
            "with cl.load_csv, which names every bad row."
        )


def _check_time_index(index: pd.Index, what: str) -> None:
    """The bars must be sorted with one row per timestamp: a repeated time has no single next bar to earn."""
    if not isinstance(index, pd.DatetimeIndex):
        return
    dup = index.duplicated()
    if dup.any():
        raise DataError(
            f"{what} have {int(dup.sum())} duplicate timestamp(s), first {index[np.flatnonzero(dup)[0]]}: each "
            "bar needs its own time (a daylight-saving fall-back turned naive repeats an hour). Keep one row per "
            "time, e.g. prices[~prices.index.duplicated(keep='last')], or load the times in UTC (cl.load_csv "
            "converts times that carry an offset)."
        )
    if not index.is_monotonic_increasing:
        i = int(np.flatnonzero(np.diff(index.asi8) < 0)[0])
        raise DataError(
            f"{what} are not sorted by time: {index[i + 1]} comes after {index[i]}. Sort them (.sort_index())."
        )


def _check_returns(returns, log_returns: bool) -> None:
    """Refuse NaN/inf returns (the first bar may be NaN: ``pct_change`` leaves it so, and it is never earned)
    and simple returns of -100% or less (the price would reach 0)."""
    values = np.asarray(returns, dtype=float)
    bad = ~np.isfinite(values)
    if len(values) and np.isnan(values[0]):
        bad[0] = False
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"returns must be finite (only the first bar may be NaN), but the return is {values[i]} at "
            f"{_at(returns, i)} ({int(bad.sum())} such bar(s)): a NaN would be booked as 0%. Drop or fill those "
            "bars in the prices before computing returns, or pass prices=... and let the backtester compute them."
        )
    if not log_returns and (values <= -1).any():
        i = int(np.flatnonzero(values <= -1)[0])
        raise DataError(
            f"a simple return of {values[i]} at {_at(returns, i)} means the price fell to 0 or below; "
            "if these are log returns, pass log_returns=True."
        )


@dataclass
class BacktestResult:
    """Everything a backtest produced: per-bar series, the metrics, and buy-and-hold on the same bars.

    ``returns`` are net per-bar simple returns; ``positions`` the decisions at each close;
    ``held`` what earned each bar (``positions`` shifted by one bar). ``benchmark_returns`` is
    buy-and-hold of the same asset over the same bars with the same costs.
    """

    returns: pd.Series
    gross_returns: pd.Series
    positions: pd.Series
    held: pd.Series
    turnover: pd.Series
    costs: pd.Series
    asset_returns: pd.Series
    benchmark_returns: pd.Series
    equity: pd.Series
    stop_hits: pd.Series
    config: BacktestConfig
    periods_per_year: float
    frequency: BarFrequency | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    benchmark_metrics: dict[str, float] = field(default_factory=dict)

    @property
    def benchmark_equity(self) -> pd.Series:
        return self.config.initial_capital * (1 + self.benchmark_returns).cumprod()

    def summary(self, digits: int = 2) -> pd.DataFrame:
        """Formatted metrics of the strategy next to buy-and-hold."""
        return format_metrics({"strategy": self.metrics, "buy_and_hold": self.benchmark_metrics}, digits)

    def trades(self) -> pd.DataFrame:
        """One row per trade (a run of bars held with the same sign): entry/exit bars, side, bars, return."""
        h = self.held.to_numpy()
        sign = np.sign(h)
        prev = np.concatenate(([0.0], sign[:-1]))
        nxt = np.concatenate((sign[1:], [0.0]))
        starts = np.flatnonzero((sign != 0) & (sign != prev))
        ends = np.flatnonzero((sign != 0) & (sign != nxt))
        from ..metrics import trade_returns

        rets = trade_returns(self.gross_returns.to_numpy(), h, self.config.cost_rate)
        idx = self.held.index
        return pd.DataFrame(
            {
                "entry_decision": idx[np.maximum(starts - 1, 0)],
                "first_bar": idx[starts],
                "last_bar": idx[ends],
                "side": np.where(sign[starts] > 0, "long", "short"),
                "bars": ends - starts + 1,
                "return": rets,
            }
        )

    def plot(self, **kwargs):
        """The four-panel report: equity vs buy-and-hold, drawdown, return histogram, rolling Sharpe."""
        from ..plots.backtest import plot_backtest

        return plot_backtest(self, **kwargs)

    def to_dict(self) -> dict:
        """Config and metrics as plain JSON-friendly values."""
        return {
            "config": asdict(self.config),
            "metrics": self.metrics,
            "benchmark_metrics": self.benchmark_metrics,
        }


class Backtester:
    """Run position series against prices under one :class:`BacktestConfig`.

    Example::

        bt = Backtester(BacktestConfig(cost_bps=5))
        result = bt.run(positions, prices=ohlcv)      # positions: Series indexed by decision time
        result.summary(); result.plot()
    """

    def __init__(self, config: BacktestConfig | None = None):
        self.config = config or BacktestConfig()

    def run(
        self,
        positions: pd.Series | np.ndarray,
        prices: pd.DataFrame | pd.Series | None = None,
        *,
        returns: pd.Series | np.ndarray | None = None,
        log_returns: bool = False,
        compute: bool = True,
    ) -> BacktestResult:
        """Backtest ``positions`` (decided at each bar's close) on ``prices`` or per-bar ``returns``.

        Args:
            positions: Series indexed by the decision times (a subset of the price bars, in order), or an
                array aligned with ``returns``. The backtest covers the bars from the first decision to
                the bar after the last one (when the data has it); bars between decisions keep the last
                position.
            prices: an OHLCV frame (its ``close`` is used) or a close Series.
            returns: per-bar returns instead of prices: ``returns[t]`` is the return over (t-1, t].
            log_returns: True if ``returns`` are log returns (they are converted with ``exp(r) - 1``
                before compounding; adding log returns of a *position* is wrong).
            compute: compute the metrics (set False when only the series are needed).
        """
        cfg = self.config
        asset = self._asset_returns(prices, returns, log_returns)
        index, target, r = self._aligned(positions, asset)
        if len(target) < 2:
            raise DataError("a backtest needs at least 2 bars (one decision and one bar to earn on).")
        p, freq = self._periods_per_year(index)
        sim = simulate(
            target, r, cfg.cost_rate, cfg.max_position, cfg.allow_short, cfg.stop_loss, cfg.take_profit
        )
        bench = simulate(np.ones_like(r), r, cfg.cost_rate, 1.0, True)
        result = self._result(sim, bench, r, index, p, freq)
        if compute:
            result.metrics = self._metrics(sim, p)
            result.benchmark_metrics = self._metrics(bench, p)
        return result

    @staticmethod
    def _asset_returns(prices: pd.DataFrame | pd.Series | None, returns: pd.Series | np.ndarray | None,
                       log_returns: bool) -> pd.Series | np.ndarray:
        """The asset's simple return of each bar, from ``prices`` or ``returns`` (exactly one), checked."""
        if (prices is None) == (returns is None):
            raise ValueError("pass exactly one of prices=... (OHLCV frame or close series) or returns=....")
        if prices is not None:
            close = prices["close"] if isinstance(prices, pd.DataFrame) else prices
            if not isinstance(close, pd.Series):
                raise TypeError("prices must be an OHLCV DataFrame or a close-price Series.")
            _check_prices(close)
            asset = close.astype(float).pct_change()
        else:
            asset = returns
            _check_returns(asset, log_returns)
            if log_returns:
                asset = (
                    np.expm1(asset) if isinstance(asset, pd.Series) else np.expm1(np.asarray(asset, float))
                )
        if isinstance(asset, pd.Series):
            _check_time_index(asset.index, "prices" if prices is not None else "returns")
        return asset

    def _aligned(self, positions: pd.Series | np.ndarray,
                 asset: pd.Series | np.ndarray) -> tuple[pd.Index, np.ndarray, np.ndarray]:
        """(bar index, target position per bar, asset return per bar) on one grid."""
        if isinstance(positions, pd.Series):
            if not isinstance(asset, pd.Series):
                raise TypeError("positions is a Series: pass prices/returns as a time-indexed Series too.")
            pos_series, asset_grid = self._align(positions, asset)
            return pos_series.index, pos_series.to_numpy(dtype=float), asset_grid.to_numpy(dtype=float)
        target = np.asarray(positions, dtype=float)
        r = (
            asset.to_numpy(dtype=float)
            if isinstance(asset, pd.Series)
            else np.asarray(asset, dtype=float)
        )
        if len(target) != len(r):
            raise ValueError(f"positions ({len(target)}) and returns ({len(r)}) differ in length.")
        index = asset.index if isinstance(asset, pd.Series) else pd.RangeIndex(len(r))
        return index, target, r

    def _periods_per_year(self, index: pd.Index) -> tuple[float, BarFrequency | None]:
        """Bars per year (the config's, else inferred from the time index) and the inferred frequency."""
        if self.config.periods_per_year is not None:
            return float(self.config.periods_per_year), None
        if isinstance(index, pd.DatetimeIndex):
            freq = infer_frequency(index)
            return freq.periods_per_year, freq
        raise ValueError(
            "periods_per_year is required without a DatetimeIndex (BacktestConfig(periods_per_year=252))."
        )

    def _result(self, sim: dict[str, np.ndarray], bench: dict[str, np.ndarray], r: np.ndarray, index: pd.Index,
                p: float, freq: BarFrequency | None) -> BacktestResult:
        """The simulated series as a :class:`BacktestResult` (metrics still empty)."""
        cfg = self.config
        first_r = np.where(np.arange(len(r)) == 0, 0.0, np.where(np.isfinite(r), r, 0.0))

        def s(values, name):
            return pd.Series(values, index=index, name=name, copy=False)

        return BacktestResult(
            returns=s(sim["net"], "net_return"),
            gross_returns=s(sim["gross"], "gross_return"),
            positions=s(sim["position"], "position"),
            held=s(sim["held"], "held"),
            turnover=s(sim["turnover"], "turnover"),
            costs=s(sim["cost"], "cost"),
            asset_returns=s(first_r, "asset_return"),
            benchmark_returns=s(bench["net"], "buy_and_hold"),
            equity=s(cfg.initial_capital * np.cumprod(1 + sim["net"]), "equity"),
            stop_hits=s(sim["stop_hit"], "stop_hit"),
            config=cfg,
            periods_per_year=p,
            frequency=freq,
        )

    def _metrics(self, sim: dict[str, np.ndarray], p: float) -> dict[str, float]:
        """:func:`compute_metrics` of one simulated book (the strategy's or buy-and-hold's)."""
        cfg = self.config
        return compute_metrics(
            sim["net"],
            sim["held"],
            gross_returns=sim["gross"],
            cost_rate=cfg.cost_rate,
            n_boot=cfg.n_boot,
            periods_per_year=p,
            risk_free_rate=cfg.risk_free_rate,
            ci_level=cfg.ci_level,
            seed=cfg.seed,
        )

    @staticmethod
    def _align(positions: pd.Series, asset: pd.Series) -> tuple[pd.Series, pd.Series]:
        if not isinstance(positions.index, pd.DatetimeIndex) or not isinstance(asset.index, pd.DatetimeIndex):
            raise TypeError("positions and prices must both be indexed by time (DatetimeIndex).")
        if len(positions) == 0:
            raise DataError("positions is empty.")
        if not positions.index.is_monotonic_increasing or positions.index.has_duplicates:
            raise DataError(
                "positions must be sorted by time with unique timestamps (positions.sort_index())."
            )
        if positions.isna().any():
            first = positions.index[positions.isna().to_numpy()][0]
            raise DataError(f"positions has NaN at {first}; use 0 for 'flat' (positions.fillna(0)).")
        missing = positions.index.difference(asset.index)
        if len(missing):
            raise DataError(
                f"{len(missing)} decision time(s) are not price bars (first: {missing[0]}). "
                "Positions must be indexed by the bars' own timestamps (the close where you decide)."
            )
        start = asset.index.get_loc(positions.index[0])
        stop = asset.index.get_loc(positions.index[-1])
        stop = min(stop + 1, len(asset) - 1)  # the last decision earns the next bar when the data has it
        grid = asset.iloc[start : stop + 1]
        pos = positions.reindex(grid.index).ffill()
        return pos, grid
