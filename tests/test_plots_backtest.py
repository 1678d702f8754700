"""Backtest plots draw something for every length of backtest, including short intraday ones."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from course_lib import BacktestConfig, Backtester  # noqa: E402
from course_lib.plots.backtest import default_rolling_window  # noqa: E402


def _hourly_result(n: int):
    rng = np.random.default_rng(1)
    t = pd.date_range("2024-03-01", periods=n + 1, freq="h")
    close = pd.Series(100 * np.exp(np.cumsum(rng.normal(0, 0.004, n + 1))), index=t)
    positions = pd.Series(np.sign(rng.normal(size=n)), index=t[:-1])
    return Backtester(BacktestConfig(cost_bps=1)).run(positions, close)


def test_rolling_sharpe_panel_is_not_empty_for_a_short_hourly_backtest():
    result = _hourly_result(90)
    assert result.periods_per_year == 8760  # a quarter year would be 2,190 bars, far more than 90
    fig = result.plot()
    ax = fig.axes[3]
    y = np.asarray(ax.lines[0].get_ydata(), dtype=float)
    assert np.isfinite(y).sum() > 30
    assert "window 22 bars" in ax.get_title()
    plt.close(fig)


def test_default_rolling_window():
    assert default_rolling_window(252, 5000) == 63  # long daily backtest: a quarter of a year
    assert default_rolling_window(8760, 90) == 22  # short hourly one: a quarter of the series
    assert default_rolling_window(8760, 12) == 5  # never below 5 bars


def test_intraday_date_axis_does_not_warn(recwarn):
    fig = _hourly_result(90).plot()
    fig.canvas.draw()
    plt.close(fig)
    assert not [w for w in recwarn if "AutoDateLocator" in str(w.message)]


def _inside_axes(ax, legend) -> bool:
    ax.figure.canvas.draw()
    box = legend.get_window_extent()
    return ax.get_window_extent().overlaps(box)


def test_legends_stay_off_the_curves():
    """Several equity curves fill their panel: the legend sits beside it, and plot_backtest has one legend for
    the figure instead of one over each panel's lines."""
    import course_lib as cl

    idx = pd.bdate_range("2020-01-01", periods=300)
    rng = np.random.default_rng(0)
    rets = {name: pd.Series(rng.normal(0.0003, 0.01, 300), index=idx) for name in ("a", "b", "c")}
    ax = cl.plot_equity_curves(rets)
    assert not _inside_axes(ax, ax.get_legend())
    plt.close(ax.figure)
    fig = cl.plot_backtest(_hourly_result(200))
    assert all(a.get_legend() is None for a in fig.axes) and len(fig.legends) == 1
    plt.close(fig)
