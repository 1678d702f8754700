"""Backtest pictures: equity against buy-and-hold, drawdown, the return histogram and rolling Sharpe."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from ..metrics import drawdown, rolling_sharpe
from .axes import plain_log_scale

__all__ = ["plot_backtest", "plot_cost_sensitivity", "plot_equity_curves", "plot_sharpe_intervals"]


def _concise_dates(ax) -> None:
    """Short, non-overlapping date labels (2017, Jul, 2018...) on a time axis."""
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(maxticks=8)
    # matplotlib's hourly/minutely steps stop at 12 h / 30 min, too fine for a few days of intraday bars
    # with 8 ticks: it warns and falls back. Whole days and hours are the natural next steps.
    locator.intervald[mdates.HOURLY] = [1, 2, 3, 4, 6, 12, 24]
    locator.intervald[mdates.MINUTELY] = [1, 5, 10, 15, 30, 60]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def default_rolling_window(periods_per_year: float, n_bars: int) -> int:
    """Bars in the rolling-Sharpe window: a quarter of a year, capped at a quarter of the series, at least 5.

    A quarter of a year is 63 daily bars but 2,190 hourly ones: a 90-bar hourly backtest would draw an
    empty panel (NaN until the window is full). Capping at ``n_bars // 4`` leaves a visible curve.
    """
    return max(5, min(int(round(periods_per_year / 4)), n_bars // 4))


def plot_backtest(
    result, title: str = "Backtest", rolling_window: int | None = None, path=None, figsize=(13, 8)
):
    """Four panels for a :class:`course_lib.BacktestResult`.

    * equity of the strategy and of buy-and-hold (same bars, same costs), log scale;
    * drawdown of both (how deep and how long it hurt);
    * histogram of the strategy's non-zero bar returns;
    * rolling Sharpe over ``rolling_window`` bars (default: :func:`default_rolling_window`, a quarter of
      a year of bars, but at most a quarter of the backtest; the window is in the panel's title).

    ``path`` saves the figure (PNG, etc.) in addition to returning it.
    """
    import matplotlib.pyplot as plt

    p = result.periods_per_year
    net = result.returns
    window = rolling_window or default_rolling_window(p, len(net))
    bench = result.benchmark_returns
    fig, axes = plt.subplots(2, 2, figsize=figsize)
    ax = axes[0, 0]
    ax.plot(result.equity.index, result.equity.to_numpy(), label="strategy", lw=1.2)
    ax.plot(
        result.benchmark_equity.index,
        result.benchmark_equity.to_numpy(),
        label="buy & hold",
        lw=1.0,
        alpha=0.8,
    )
    both = np.concatenate([result.equity.to_numpy(), result.benchmark_equity.to_numpy()])
    wide = both.max() / max(both.min(), 1e-12) > 3  # a log scale only helps when equity spans a wide range
    if wide:
        plain_log_scale(ax)
    ax.set_title("Equity (log scale)" if wide else "Equity")
    if not wide and both.max() >= 1000:  # 105,000 rather than 105000
        from matplotlib.ticker import StrMethodFormatter

        ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))

    ax = axes[0, 1]
    ax.fill_between(net.index, drawdown(net.to_numpy()) * 100, 0, alpha=0.35, color="C0", label="strategy")
    ax.plot(bench.index, drawdown(bench.to_numpy()) * 100, color="C1", lw=0.9, label="buy & hold")
    ax.set_title("Drawdown [%]")

    ax = axes[1, 0]
    active = net[result.held != 0] * 100
    ax.hist(active.to_numpy(), bins=60, color="C0", alpha=0.8)
    ax.axvline(0, color="k", lw=0.8, ls="--")
    ax.set_title(f"Bar returns while in the market [%] (n={len(active)})")

    ax = axes[1, 1]
    rs = rolling_sharpe(net, window, p)
    rb = rolling_sharpe(bench, window, p)
    ax.plot(rs.index, rs.to_numpy(), label="strategy", lw=1.0)
    ax.plot(rb.index, rb.to_numpy(), label="buy & hold", lw=0.8, alpha=0.7)
    ax.axhline(0, color="k", lw=0.8, ls="--")
    ax.set_title(f"Rolling Sharpe (window {window} bars, annualised with P={p:g})")
    if isinstance(net.index, pd.DatetimeIndex):
        for a in (axes[0, 0], axes[0, 1], axes[1, 1]):
            _concise_dates(a)
    fig.suptitle(title)
    # one legend for the three panels that compare the strategy with buy & hold, above them, off the lines
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", ncol=2, fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def plot_equity_curves(returns: Mapping[str, pd.Series], title: str = "Equity", ax=None, log: bool = True):
    """Growth of 1 for several strategies' net bar returns on one axis (e.g. walk-forward baselines);
    log scale (with ``log=True``) once the curves span more than a factor of 3."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(11, 4.5))
    top, bottom = 1.0, 1.0
    for name, r in returns.items():
        curve = np.cumprod(1 + r.to_numpy())
        top, bottom = max(top, curve.max()), min(bottom, curve.min())
        ax.plot(r.index, curve, label=name, lw=1.1)
    if log and top / max(bottom, 1e-12) > 3:
        plain_log_scale(ax)
    ax.set_ylabel("growth of 1")
    if returns and isinstance(next(iter(returns.values())).index, pd.DatetimeIndex):
        _concise_dates(ax)
    ax.set_title(title)
    # beside the axes, not over the curves (several strategies fill the whole panel)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=8)
    return ax


def plot_cost_sensitivity(table: pd.DataFrame, metric: str = "sharpe", ax=None):
    """Line plot of ``metric`` against cost (bps) for each strategy; ``table`` has columns cost_bps,
    strategy and the metric (e.g. from :func:`course_lib.cost_sensitivity`)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    for name, grp in table.groupby("strategy", sort=False):
        ax.plot(grp["cost_bps"], grp[metric], marker="o", label=name)
    ax.axhline(0, color="k", lw=0.8, ls="--")
    ax.set_xlabel("cost per unit turnover [bps]")
    ax.set_ylabel(metric)
    ax.set_title(f"What costs do to {metric}")
    ax.legend()
    return ax


def plot_sharpe_intervals(
    table: pd.DataFrame, ax=None, title: str = "Sharpe ratio with 95% bootstrap interval"
):
    """Sharpe of each strategy (rows of ``table``, e.g. ``WalkForwardResult.table``) with its bootstrap
    interval: an interval that contains 0 is an edge the data cannot confirm."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 0.5 * len(table) + 1.5))
    y = np.arange(len(table))
    sharpe = table["sharpe"].to_numpy(dtype=float)
    lo = sharpe - table["sharpe_ci_low"].to_numpy(dtype=float)
    hi = table["sharpe_ci_high"].to_numpy(dtype=float) - sharpe
    ax.errorbar(sharpe, y, xerr=[lo, hi], fmt="o", capsize=4)
    ax.axvline(0, color="k", lw=0.8, ls="--")
    ax.set_yticks(y, list(table.index))
    ax.invert_yaxis()
    ax.set_xlabel("annualised Sharpe")
    ax.set_title(title)
    return ax
