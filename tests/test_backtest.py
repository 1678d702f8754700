"""Backtester timing, costs, stops, conversions and causality, on series small enough to check by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from course_lib import BacktestConfig, Backtester, DataError, simulate

IDX = pd.bdate_range("2024-01-01", periods=5)
CLOSE = pd.Series([100.0, 110.0, 99.0, 99.0, 108.9], index=IDX)  # returns: -, +10%, -10%, 0%, +10%


def run(positions, cost_bps=0.0, **kw):
    cfg = BacktestConfig(cost_bps=cost_bps, n_boot=0, **kw)
    return Backtester(cfg).run(pd.Series(positions, index=IDX, dtype=float), CLOSE)


def test_hand_computed_backtest():
    res = run([1, 1, -1, 0, 0], cost_bps=10)
    # held = [0, 1, 1, -1, 0]; gross = [0, .1, -.1, 0, 0]; traded = [1, 0, 2, 1, 0] at 0.001 each
    np.testing.assert_allclose(res.held.to_numpy(), [0, 1, 1, -1, 0])
    np.testing.assert_allclose(res.gross_returns.to_numpy(), [0, 0.1, -0.1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(res.costs.to_numpy(), [0.001, 0, 0.002, 0.001, 0])
    np.testing.assert_allclose(res.returns.to_numpy(), [-0.001, 0.1, -0.102, -0.001, 0.0], atol=1e-12)
    assert res.equity.iloc[-1] == pytest.approx(100_000 * 0.999 * 1.1 * 0.898 * 0.999)
    assert res.periods_per_year == 252
    assert res.metrics["n_trades"] == 2  # one long (bars 1-2), one short (bar 3)


def test_position_decided_at_t_earns_bar_t_plus_1_only():
    res = run([0, 0, 1, 0, 0])
    # a long decided at the close of bar 2 earns bar 3's return (0%) and nothing else
    assert res.returns.abs().sum() == 0
    res = run([0, 1, 0, 0, 0])
    np.testing.assert_allclose(res.returns.to_numpy(), [0, 0, -0.1, 0, 0], atol=1e-12)


def test_costs_are_charged_on_turnover_only():
    hold = run([1, 1, 1, 1, 1], cost_bps=0).returns
    hold_costly = run([1, 1, 1, 1, 1], cost_bps=50).returns
    diff = (hold - hold_costly).to_numpy()
    np.testing.assert_allclose(diff, [0.005, 0, 0, 0, 0], atol=1e-15)  # only the entry trades
    flat = run([0, 0, 0, 0, 0], cost_bps=50)
    assert flat.returns.abs().sum() == 0 and flat.metrics["turnover"] == 0
    flip = run([1, -1, 1, -1, 1], cost_bps=20, slippage_bps=5)
    np.testing.assert_allclose(flip.costs.to_numpy(), 0.0025 * np.array([1, 2, 2, 2, 2]))


def test_log_returns_are_converted_before_compounding():
    by_price = run([1, 1, -1, 0.5, 1], cost_bps=3)
    logret = np.log(CLOSE).diff()
    by_log = Backtester(BacktestConfig(cost_bps=3, n_boot=0)).run(
        pd.Series([1, 1, -1, 0.5, 1], index=IDX, dtype=float), returns=logret, log_returns=True
    )
    np.testing.assert_allclose(by_log.returns.to_numpy(), by_price.returns.to_numpy(), atol=1e-12)
    # forgetting the conversion gives a different (wrong) answer
    wrong = Backtester(BacktestConfig(cost_bps=3, n_boot=0)).run(
        pd.Series([1, 1, -1, 0.5, 1], index=IDX, dtype=float), returns=logret
    )
    assert not np.allclose(wrong.returns.to_numpy(), by_price.returns.to_numpy())


def test_buy_and_hold_benchmark_compounds_the_asset_with_one_entry_cost():
    res = run([0, 0, 0, 0, 0], cost_bps=10)
    bench_total = (1 + res.benchmark_returns).prod() - 1
    assert bench_total == pytest.approx(0.999 * 108.9 / 100 - 1)
    assert res.benchmark_metrics["n_trades"] == 1


def test_max_position_and_long_only():
    res = run([3, -2, 0.5, 0, 0], max_position=1.5, allow_short=False)
    np.testing.assert_allclose(res.positions.to_numpy(), [1.5, 0, 0.5, 0, 0])


def test_stop_loss_closes_at_the_close_and_waits_for_a_new_signal():
    idx = pd.bdate_range("2024-01-01", periods=8)
    close = pd.Series([100, 97, 94.09, 100, 110, 100, 90, 91], index=idx, dtype=float)
    pos = pd.Series([1, 1, 1, 1, 1, -1, -1, -1], index=idx, dtype=float)
    res = Backtester(BacktestConfig(cost_bps=0, stop_loss=0.05, n_boot=0)).run(pos, close)
    # long from bar 0: after bar 2 the trade is at 0.97 * 0.97 - 1 = -5.91% -> flat from the close of bar 2
    # until the sign changes at bar 5; the short from bar 5 gains and is never stopped
    np.testing.assert_allclose(res.positions.to_numpy(), [1, 1, 0, 0, 0, -1, -1, -1])
    assert res.stop_hits.to_numpy().nonzero()[0].tolist() == [2]
    tp = Backtester(BacktestConfig(cost_bps=0, take_profit=0.08, n_boot=0)).run(pos, close)
    # the long reaches 110 / 100 - 1 = +10% >= 8% at bar 4 -> flat; the short from bar 5 makes +10% at
    # bar 6 (100 -> 90) -> flat from bar 6
    np.testing.assert_allclose(tp.positions.to_numpy(), [1, 1, 1, 1, 0, -1, 0, 0])


def test_future_returns_do_not_move_past_positions_or_pnl():
    rng = np.random.default_rng(0)
    n, T = 300, 200
    r = rng.normal(0, 0.02, n)
    target = np.sign(rng.normal(size=n))
    base = simulate(target, r, 0.001, stop_loss=0.03, take_profit=0.05)
    r2 = r.copy()
    r2[T:] = rng.normal(0, 0.05, n - T)
    changed = simulate(target, r2, 0.001, stop_loss=0.03, take_profit=0.05)
    for key in ("position", "held", "net", "turnover"):
        np.testing.assert_array_equal(base[key][:T], changed[key][:T])
    assert not np.array_equal(base["net"][T:], changed["net"][T:])


def test_positions_are_aligned_to_price_bars():
    idx = pd.bdate_range("2024-01-01", periods=10)
    close = pd.Series(np.linspace(100, 110, 10), index=idx)
    pos = pd.Series([1.0, 0.0], index=idx[[2, 5]])
    res = Backtester(BacktestConfig(cost_bps=0, n_boot=0)).run(pos, close)
    # grid runs from the first decision (bar 2) to the bar after the last one (bar 6); the long is held
    # on bars 3, 4, 5
    assert res.returns.index[0] == idx[2] and res.returns.index[-1] == idx[6]
    np.testing.assert_allclose(res.held.to_numpy(), [0, 1, 1, 1, 0])
    with pytest.raises(DataError, match="not price bars"):
        Backtester().run(pd.Series([1.0], index=[pd.Timestamp("2030-01-01")]), close)
    with pytest.raises(DataError, match="NaN"):
        Backtester().run(pd.Series([1.0, np.nan], index=idx[:2]), close)
    with pytest.raises(ValueError, match="exactly one"):
        Backtester().run(pos)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 0.0])
def test_nan_inf_or_zero_prices_are_a_data_error(bad):
    # a NaN close used to become two 0% bars, an inf close a -100% total return
    close = CLOSE.copy()
    close.iloc[2] = bad
    pos = pd.Series(1.0, index=IDX)
    with pytest.raises(DataError, match=r"finite and > 0.*at 2024-01-03.*dropna"):
        Backtester(BacktestConfig(n_boot=0)).run(pos, close)
    with pytest.raises(DataError, match="finite and > 0"):
        Backtester(BacktestConfig(n_boot=0)).run(pos, pd.DataFrame({"close": close}))


def test_nan_or_inf_returns_are_a_data_error_except_the_first_bar():
    pos = pd.Series(1.0, index=IDX)
    returns = CLOSE.pct_change()  # NaN on the first bar: never earned, accepted
    ok = Backtester(BacktestConfig(cost_bps=0, n_boot=0)).run(pos, returns=returns)
    np.testing.assert_allclose(ok.returns.to_numpy(), run([1, 1, 1, 1, 1]).returns.to_numpy())
    for bad in (np.nan, np.inf):
        broken = returns.copy()
        broken.iloc[3] = bad
        with pytest.raises(DataError, match=r"returns must be finite.*at 2024-01-04"):
            Backtester(BacktestConfig(n_boot=0)).run(pos, returns=broken)
        with pytest.raises(DataError, match="position 3"):
            Backtester(BacktestConfig(n_boot=0, periods_per_year=252)).run(
                np.ones(5), returns=broken.to_numpy(), log_returns=True
            )
    with pytest.raises(DataError, match="log_returns=True"):
        Backtester(BacktestConfig(n_boot=0)).run(pos, returns=returns.fillna(0) - 1.5)


def test_duplicate_or_unsorted_timestamps_are_a_data_error():
    # a DST fall-back made naive repeats 01:00; this used to fail with "TypeError: ... 'slice' and 'int'"
    idx = pd.DatetimeIndex(["2024-11-03 00:00", "2024-11-03 01:00", "2024-11-03 01:00", "2024-11-03 02:00",
                            "2024-11-03 03:00"])  # fmt: skip
    close = pd.Series([100.0, 101, 102, 103, 104], index=idx)
    pos = pd.Series([1.0, 0.0], index=idx[[0, 1]])  # a decision at the repeated hour
    with pytest.raises(DataError, match=r"1 duplicate timestamp.*2024-11-03 01:00.*duplicated\(keep='last'\)"):
        Backtester(BacktestConfig(n_boot=0)).run(pos, close)
    with pytest.raises(DataError, match="returns have 1 duplicate"):
        Backtester(BacktestConfig(n_boot=0)).run(np.ones(5), returns=close.pct_change())
    with pytest.raises(DataError, match=r"not sorted.*sort_index"):
        Backtester(BacktestConfig(n_boot=0)).run(pos, CLOSE.iloc[[0, 2, 1, 3, 4]])


def test_annualisation_follows_the_bars_and_can_be_overridden():
    idx = pd.date_range("2024-01-01", periods=300, freq="h")  # 12.5 days: weekends included
    close = pd.Series(100 * np.exp(np.cumsum(np.full(300, 0.001))), index=idx)
    pos = pd.Series(1.0, index=idx)
    res = Backtester(BacktestConfig(n_boot=0)).run(pos, close)
    assert res.periods_per_year == 8760
    assert "24/7" in res.frequency.description
    forced = Backtester(BacktestConfig(n_boot=0, periods_per_year=252)).run(pos, close)
    assert forced.metrics["annual_return"] < res.metrics["annual_return"]
    assert res.metrics["sharpe"] / forced.metrics["sharpe"] != pytest.approx(1.0)


def test_config_validation_names_the_problem():
    with pytest.raises(ValueError, match="cost"):
        BacktestConfig(cost_bps=-1)
    with pytest.raises(ValueError, match="stop_loss"):
        BacktestConfig(stop_loss=1.5)
    assert BacktestConfig(cost_bps=7, slippage_bps=3).cost_rate == pytest.approx(0.001)


def test_result_helpers(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    idx = pd.bdate_range("2020-01-01", periods=300)
    rng = np.random.default_rng(5)
    close = pd.Series(100 * np.exp(np.cumsum(rng.normal(0.0003, 0.01, 300))), index=idx)
    pos = pd.Series(np.sign(np.sin(np.arange(300) / 7)), index=idx)
    res = Backtester(BacktestConfig(n_boot=100)).run(pos, close)
    trades = res.trades()
    assert len(trades) == res.metrics["n_trades"]
    assert set(trades["side"]) == {"long", "short"}
    assert (trades["first_bar"] > trades["entry_decision"]).all()
    table = res.summary()
    assert list(table.columns) == ["strategy", "buy_and_hold"]
    assert math.isfinite(res.metrics["sharpe_ci_low"])
    fig = res.plot(path=tmp_path / "bt.png")
    assert (tmp_path / "bt.png").stat().st_size > 10_000
    assert len(fig.axes) == 4
    import matplotlib.pyplot as plt

    plt.close(fig)
