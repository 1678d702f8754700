"""Every metric against values computed by hand on small series, plus annualisation per bar frequency."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from course_lib import (
    annual_return,
    annual_volatility,
    calmar_ratio,
    compute_metrics,
    cvar,
    drawdown,
    exposure,
    format_metrics,
    infer_frequency,
    max_drawdown,
    max_drawdown_duration,
    periods_per_year,
    periods_per_year_to_date,
    profit_factor,
    rolling_sharpe,
    sharpe_confidence_interval,
    sharpe_ratio,
    sortino_ratio,
    total_return,
    trade_returns,
    turnover,
    win_rate,
)

R = np.array([0.10, -0.05, 0.02, -0.10, 0.05])
P = 252.0
# by hand: equity 1.1, 1.045, 1.0659, 0.95931, 1.0072755
EQUITY_END = 1.1 * 0.95 * 1.02 * 0.9 * 1.05
MEAN = 0.004  # (0.10 - 0.05 + 0.02 - 0.10 + 0.05) / 5
SD = math.sqrt((0.096**2 + 0.054**2 + 0.016**2 + 0.104**2 + 0.046**2) / 4)


def test_total_and_annual_return():
    assert total_return(R) == pytest.approx(0.0072755, abs=1e-10)
    assert annual_return(R, P) == pytest.approx(EQUITY_END ** (252 / 5) - 1)
    assert annual_return(R, 365) == pytest.approx(EQUITY_END ** (365 / 5) - 1)


def test_volatility_sharpe_sortino():
    assert SD == pytest.approx(0.0795613, abs=1e-7)
    assert annual_volatility(R, P) == pytest.approx(SD * math.sqrt(252))
    assert sharpe_ratio(R, P) == pytest.approx(MEAN / SD * math.sqrt(252))
    # downside deviation: sqrt((0.05^2 + 0.10^2) / 5) = 0.05, over ALL bars
    assert sortino_ratio(R, P) == pytest.approx(MEAN * math.sqrt(252) / 0.05)


def test_sharpe_scales_with_sqrt_of_annualisation():
    assert sharpe_ratio(R, 8760) / sharpe_ratio(R, 252) == pytest.approx(math.sqrt(8760 / 252))


def test_risk_free_rate_is_converted_per_bar():
    rf_bar = 1.05 ** (1 / 252) - 1
    assert sharpe_ratio(R, P, risk_free_rate=0.05) == pytest.approx((MEAN - rf_bar) / SD * math.sqrt(252))


def test_drawdown_and_duration():
    # peak 1.1 after bar 0, trough 0.95931 after bar 3, never recovered
    assert max_drawdown(R) == pytest.approx(0.95931 / 1.1 - 1)
    assert max_drawdown_duration(R) == 4
    dd = drawdown(R)
    assert dd[0] == 0.0 and dd[1] == pytest.approx(1.045 / 1.1 - 1)
    assert calmar_ratio(R, P) == pytest.approx(annual_return(R, P) / (1 - 0.95931 / 1.1))


def test_first_bar_loss_counts_as_drawdown_and_recovery_ends_it():
    r = np.array([-0.1, 0.05, 0.10, -0.01, 0.02])
    # equity 0.9, 0.945, 1.0395 (new high), 1.029105, 1.0496871 (new high)
    assert max_drawdown(r) == pytest.approx(-0.1)
    assert max_drawdown_duration(r) == 2  # bars 0 and 1 under the starting peak
    assert max_drawdown_duration(np.array([0.01, 0.02])) == 0
    assert max_drawdown(np.array([0.01, 0.02])) == 0.0
    assert math.isnan(calmar_ratio(np.array([0.01, 0.02]), P))


def test_trades_win_rate_profit_factor():
    asset = np.array([0.00, 0.10, -0.05, 0.02, -0.10, 0.05, 0.03])
    held = np.array([0.0, 1.0, 1.0, 0.0, -1.0, -1.0, 0.5])
    gross = held * asset
    # trades: long bars 1-2 -> 1.1 * 0.95 - 1 = 0.045; short bars 4-5 -> 1.10 * 0.95 - 1 = 0.045;
    # long bar 6 (a new sign) -> 0.015
    t = trade_returns(gross, held)
    np.testing.assert_allclose(t, [0.045, 0.045, 0.015])
    # with 10 bps per unit traded: entry 1 + exit 1 for the first two, entry 0.5 + exit 0.5 for the last
    tc = trade_returns(gross, held, cost_rate=0.001)
    np.testing.assert_allclose(tc, [0.045 - 0.002, 0.045 - 0.002, 0.015 - 0.001])
    assert win_rate(t) == 1.0
    assert win_rate(np.array([0.02, -0.01, 0.0, 0.03])) == 0.5
    assert profit_factor(np.array([0.02, -0.01, 0.03, -0.04])) == pytest.approx(0.05 / 0.05)
    assert profit_factor(np.array([0.02])) == math.inf
    assert math.isnan(win_rate(np.array([])))


def test_resize_is_not_a_new_trade_but_reversal_is():
    held = np.array([1.0, 0.5, 1.0, -1.0, -0.2, 0.0])
    gross = np.zeros(6)
    t = trade_returns(gross, held, cost_rate=0.01)
    # long: entry 1 + resize 0.5 + resize 0.5 + exit 1 = 3; short: entry 1 + resize 0.8 + exit 0.2 = 2
    np.testing.assert_allclose(t, [-0.03, -0.02])


def test_turnover_and_exposure():
    pos = np.array([0.0, 1.0, 1.0, -1.0, 0.0])
    # |0| + |1| + |0| + |2| + |1| = 4 over 5 bars, times P
    assert turnover(pos, 252) == pytest.approx(4 / 5 * 252)
    assert exposure(pos) == pytest.approx(3 / 5)


def test_compute_metrics_matches_the_single_functions():
    held = np.array([1.0, 1.0, 0.0, -1.0, -1.0])
    m = compute_metrics(R, held, periods_per_year=P, n_boot=200)
    assert m["sharpe"] == pytest.approx(sharpe_ratio(R, P))
    assert m["max_drawdown"] == pytest.approx(max_drawdown(R))
    assert m["n_trades"] == 2 and m["n_bars"] == 5 and m["periods_per_year"] == 252
    assert m["exposure"] == pytest.approx(0.8)
    table = format_metrics({"a": m, "b": m})
    assert list(table.columns) == ["a", "b"] and "sharpe" in table.index and "total_return [%]" in table.index


def test_zero_spread_gives_nan_not_infinity():
    flat = np.zeros(10)
    assert math.isnan(sharpe_ratio(flat, P))
    assert math.isnan(sortino_ratio(np.full(10, 0.01), P))


def test_periods_per_year_from_a_series_index():
    idx = pd.bdate_range("2020-01-01", periods=50)
    s = pd.Series(np.linspace(-0.01, 0.012, 50), index=idx)
    assert sharpe_ratio(s) == pytest.approx(sharpe_ratio(s.to_numpy(), 252))
    with pytest.raises(ValueError, match="periods_per_year"):
        sharpe_ratio(s.to_numpy())


@pytest.mark.parametrize(
    "index, expected",
    [
        (pd.bdate_range("2020-01-01", periods=300), 252),  # daily equities: weekdays only
        (pd.date_range("2020-01-01", periods=300, freq="D"), 365),  # daily crypto: weekends present
        (pd.date_range("2020-01-01", periods=500, freq="h"), 24 * 365),  # hourly crypto
        (pd.date_range("2020-01-01", periods=2000, freq="15min"), 4 * 24 * 365),  # 15-minute crypto
        (pd.date_range("2020-01-03", periods=100, freq="W-FRI"), 52),
        (pd.date_range("2010-01-31", periods=60, freq="ME"), 12),
    ],
)
def test_annualisation_per_frequency(index, expected):
    assert periods_per_year(index) == pytest.approx(expected)


def test_intraday_equities_count_bars_per_trading_day():
    hours = pd.date_range("2024-01-01", periods=24 * 40, freq="h")
    session = hours[(hours.day_of_week < 5) & (hours.hour >= 14) & (hours.hour <= 20)]  # 7 bars a day
    freq = infer_frequency(session)
    assert freq.bars_per_day == 7 and not freq.trades_weekends
    assert freq.periods_per_year == 252 * 7
    half_hours = pd.date_range("2024-01-01", periods=48 * 30, freq="30min")
    half = half_hours[(half_hours.day_of_week < 5) & (half_hours.hour >= 14) & (half_hours.hour < 21)]
    assert periods_per_year(half) == 252 * 14


def test_a_sunday_to_thursday_week_is_a_five_day_week_not_a_24_7_market():
    # FX daily candles stamped at the New York close and Middle-East exchanges trade Sunday..Thursday:
    # Sunday bars are a fifth of them, which the Saturday+Sunday share used to read as crypto (365/year)
    days = pd.date_range("2020-01-01", periods=420, freq="D")
    sun_thu = days[(days.day_of_week <= 3) | (days.day_of_week == 6)]
    freq = infer_frequency(sun_thu)
    assert freq.periods_per_year == 252 and not freq.trades_weekends
    assert "closed Fri, Sat" in freq.description
    hours = pd.date_range("2020-01-05", periods=24 * 60, freq="h")
    session = hours[((hours.day_of_week <= 3) | (hours.day_of_week == 6)) & (hours.hour >= 7) & (hours.hour < 14)]
    assert periods_per_year(session) == 252 * 7  # 7 bars a day, 5 days a week
    # a week open every day is still 24/7, also when the sample is shorter than a week
    assert periods_per_year(days[:10]) == 365 and periods_per_year(days[2:5]) == 365  # Fri, Sat, Sun
    assert infer_frequency(pd.bdate_range("2020-01-01", periods=300)).description.startswith(
        "daily bars, weekdays only"
    )


def test_periods_per_year_to_date_reads_only_the_timestamps_up_to_each_bar():
    rng = np.random.default_rng(2)
    hours = pd.date_range("2024-01-01", periods=24 * 12, freq="h")
    days = pd.date_range("2020-01-01", periods=120, freq="D")
    cases = [
        hours[(hours.day_of_week < 5) & (hours.hour >= 14) & (hours.hour <= 20)],  # 7 bars a weekday
        hours[rng.random(len(hours)) < 0.5],  # irregular 24/7 bars
        days[(days.day_of_week <= 3) | (days.day_of_week == 6)],  # Sunday..Thursday
        pd.bdate_range("2020-01-01", periods=60).append(pd.date_range("2020-03-30", periods=60)),  # opens weekends
    ]
    for index in cases:
        got = periods_per_year_to_date(index)
        want = [infer_frequency(index[: t + 1]).periods_per_year for t in range(2, len(index))]
        assert np.isnan(got[:2]).all()
        np.testing.assert_array_equal(got[2:], want)


def test_frequency_needs_a_time_index():
    with pytest.raises(ValueError, match="at least 3"):
        infer_frequency(pd.DatetimeIndex(["2020-01-01", "2020-01-02"]))
    with pytest.raises(TypeError):
        infer_frequency(pd.RangeIndex(10))


def test_bootstrap_interval_is_reproducible_and_covers_the_estimate():
    rng = np.random.default_rng(1)
    r = rng.normal(0.001, 0.01, 3000)
    lo, hi = sharpe_confidence_interval(r, 252, n_boot=500, seed=3)
    assert (lo, hi) == sharpe_confidence_interval(r, 252, n_boot=500, seed=3)
    assert lo < sharpe_ratio(r, 252) < hi
    # the i.i.d. standard error of the annualised Sharpe is about sqrt(P / n); the 95% interval width
    # should be of the order 2 * 1.96 * that
    width = hi - lo
    assert 0.5 * 3.92 * math.sqrt(252 / 3000) < width < 2.0 * 3.92 * math.sqrt(252 / 3000)
    lo2, hi2 = sharpe_confidence_interval(r[:300], 252, n_boot=500, seed=3)
    assert hi2 - lo2 > width  # less data, wider interval


def test_block_bootstrap_is_wider_for_autocorrelated_returns():
    rng = np.random.default_rng(2)
    e = rng.normal(0, 0.01, 4000)
    ar = np.empty_like(e)
    ar[0] = e[0]
    for t in range(1, len(e)):
        ar[t] = 0.6 * ar[t - 1] + e[t]
    ar += 0.0005
    iid = sharpe_confidence_interval(ar, 252, n_boot=400, block_length=1)
    blocks = sharpe_confidence_interval(ar, 252, n_boot=400, block_length=40)
    assert blocks[1] - blocks[0] > 1.3 * (iid[1] - iid[0])


def test_rolling_sharpe_and_cvar():
    idx = pd.bdate_range("2021-01-01", periods=10)
    s = pd.Series(R.tolist() * 2, index=idx)
    rs = rolling_sharpe(s, window=5, periods_per_year=252)
    assert rs.iloc[:4].isna().all()
    assert rs.iloc[4] == pytest.approx(sharpe_ratio(R, 252))
    # worst 20% of 10 returns = 2 worst: -0.10, -0.10 -> CVaR 0.10
    assert cvar(s.to_numpy(), alpha=0.8) == pytest.approx(0.10)


def test_an_open_position_is_reported_apart_from_closed_trades():
    """Buy-and-hold holds one trade that never closes: no win rate, no profit factor (n/a), its result is
    open_trade_return. Closed trades alone make win_rate and profit_factor."""
    from course_lib import compute_metrics, format_metrics

    r = np.array([0.0, 0.01, -0.02, 0.03, 0.01, 0.02])
    hold = np.array([0.0, 1, 1, 1, 1, 1])
    m = compute_metrics(r, hold, periods_per_year=252, n_boot=0)
    assert math.isnan(m["win_rate"]) and math.isnan(m["profit_factor"])
    assert m["open_trade_return"] == pytest.approx(np.prod(1 + r) - 1)
    assert m["n_trades"] == 1
    table = format_metrics({"buy_and_hold": m})
    assert table.loc["win_rate [%]", "buy_and_hold"] == "n/a"
    assert table.loc["profit_factor", "buy_and_hold"] == "n/a"
    # one closed loser, one closed winner, one open winner: the open one does not count as a win
    held = np.array([0.0, 1, 1, 0, -1, -1, 0, 1, 1])
    ret = np.array([0.0, -0.01, -0.01, 0.0, 0.02, 0.01, 0.0, 0.05, 0.05])
    m = compute_metrics(ret, held, periods_per_year=252, n_boot=0)
    assert m["n_trades"] == 3 and m["win_rate"] == pytest.approx(0.5)
    assert m["open_trade_return"] == pytest.approx(1.05 * 1.05 - 1)
    flat_end = compute_metrics(ret[:7], held[:7], periods_per_year=252, n_boot=0)
    assert math.isnan(flat_end["open_trade_return"]) and flat_end["win_rate"] == pytest.approx(0.5)
