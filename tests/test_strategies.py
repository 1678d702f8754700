"""Strategies: hand-checked rules, and no strategy ever uses information from after its decision time."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from course_lib import (
    ForecastStrategy,
    HistoricalSimilarityStrategy,
    KNNAnalogForecaster,
    MemoryTradingStrategy,
    MomentumStrategy,
    make_windows,
)


def _windows(n=300, f=3, seq_len=8, seed=0, plant=None):
    rng = np.random.default_rng(seed)
    idx = pd.bdate_range("2010-01-01", periods=n)
    feats = pd.DataFrame(rng.normal(size=(n, f)), index=idx, columns=[f"f{i}" for i in range(f)])
    if plant is not None:
        a, b = plant  # copy the pattern ending at bar b to end at bar a (a < b: a planted "twin" in the past)
        feats.iloc[a - seq_len + 1 : a + 1] = feats.iloc[b - seq_len + 1 : b + 1].to_numpy()
    target = pd.Series(rng.normal(0, 0.01, n), index=idx)
    return make_windows(feats, target, seq_len, horizon=1)


def test_knn_finds_a_planted_twin_and_never_looks_ahead():
    w = _windows(plant=(50, 250))
    train, test = w.subset(np.arange(0, 150)), w.subset(np.arange(150, len(w)))
    knn = KNNAnalogForecaster(k=5, lookback=8).fit(train)
    table = knn.similar(test, top=5)
    q = test.end_time[250 - 7 - 150]
    assert q == w.end_time[250 - 7]
    best = table[(table.time == q) & (table["rank"] == 1)].iloc[0]
    assert best.neighbour_time == w.end_time[50 - 7] and best.similarity == pytest.approx(1.0, abs=1e-5)
    assert (table.neighbour_time < table.time).all()


def test_knn_online_memory_is_causal():
    w = _windows(seed=1)
    train, test = w.subset(np.arange(0, 100)), w.subset(np.arange(100, len(w)))
    knn = KNNAnalogForecaster(k=10, lookback=4, online=True).fit(train)
    table = knn.similar(test, top=10)
    # a test window's outcome is known one bar after its end: it may be retrieved by later queries only
    lag = table.time - table.neighbour_time
    assert (lag >= pd.Timedelta(days=1)).all()
    assert (table.neighbour_time > train.end_time[-1]).any()  # online entries are used
    pred = knn.predict(test)
    assert pred["n_neighbors"].eq(10).all()
    assert pred["memory_up_share"].between(0, 1).all()


def test_knn_outcomes_by_hand():
    w = _windows(n=60, seed=2)
    knn = KNNAnalogForecaster(k=3, lookback=8).fit(w.subset(np.arange(0, 40)))
    q = w.subset(np.arange(45, 46))
    idx, sims, mask = knn.neighbours(q)
    outcomes = knn._slot_returns[idx[0]]
    pred = knn.predict(q)
    assert pred["memory_return"].iloc[0] == pytest.approx(outcomes.mean())
    assert pred["memory_up_share"].iloc[0] == pytest.approx((outcomes > 0).mean())
    with pytest.raises(ValueError, match="fit"):
        KNNAnalogForecaster().predict(q)


def test_historical_similarity_rule():
    frame = pd.DataFrame(
        {
            "memory_up_share": [0.8, 0.6, 0.5, 0.4, 0.1, np.nan, 0.9],
            "n_neighbors": [10, 10, 10, 10, 10, 0, 2],
        },
        index=pd.bdate_range("2020-01-01", periods=7),
    )
    pos = HistoricalSimilarityStrategy(long_threshold=0.6, short_threshold=0.4, min_neighbors=5).positions(
        frame
    )
    assert pos.tolist() == [1, 1, 0, -1, -1, 0, 0]
    long_only = HistoricalSimilarityStrategy(allow_short=False, min_neighbors=1).positions(frame)
    assert long_only.min() == 0
    with pytest.raises(ValueError):
        HistoricalSimilarityStrategy(long_threshold=0.3, short_threshold=0.6)


def test_memory_trading_strategy_signals():
    idx = pd.bdate_range("2020-01-01", periods=3)
    pred = pd.DataFrame(
        {
            "pred_return": [0.002, 0.002, -0.001],
            "memory_return": [0.001, -0.002, -0.004],
            "memory_up_share": [0.6, 0.3, 0.2],
        },
        index=idx,
    )
    strat = MemoryTradingStrategy(model_scale=0.002, memory_scale=0.002)
    sig = strat.generate_signals(pred)
    assert sig["agree"].tolist() == [True, False, True]
    np.testing.assert_allclose(sig["position"], [1.0, 0.5, -1.0])
    assert {"model_prediction", "memory_avg_return", "confidence", "signal"} <= set(sig.columns)
    calibrated = MemoryTradingStrategy().calibrate(pred)
    assert calibrated.model_scale == pytest.approx(np.sqrt(np.mean(np.square([0.002, 0.002, -0.001]))))
    with pytest.raises(ValueError, match="trainer"):
        MemoryTradingStrategy().generate_signals(_windows(n=40))


def test_forecast_and_momentum_by_hand():
    idx = pd.bdate_range("2020-01-01", periods=4)
    pred = pd.DataFrame({"pred_return": [0.01, -0.005, 0.0, 0.03]}, index=idx)
    pos = ForecastStrategy(scale=0.01).positions(pred)
    np.testing.assert_allclose(pos, [1.0, -0.5, 0.0, 1.0])
    assert ForecastStrategy(sizing="sign").positions(pred).tolist() == [1, -1, 0, 1]
    close = pd.Series([100, 101, 99, 98, 103], index=pd.bdate_range("2020-01-01", periods=5), dtype=float)
    mom = MomentumStrategy(lookback=2).positions(close)
    assert mom.tolist() == [0, 0, -1, -1, 1]  # 99 < 100, 98 < 101, 103 > 99
    assert MomentumStrategy(lookback=2, allow_short=False).positions(close).min() == 0


def test_uncalibrated_forecast_strategy_is_causal():
    rng = np.random.default_rng(4)
    idx = pd.bdate_range("2020-01-01", periods=200)
    pred = pd.DataFrame({"pred_return": rng.normal(0, 0.01, 200)}, index=idx)
    strat = ForecastStrategy(min_periods=20)
    base = strat.positions(pred)
    T = 150
    changed = pred.copy()
    changed.iloc[T:, 0] = changed.iloc[T:, 0] * 50  # a huge later forecast used to shrink every position
    after = strat.positions(changed)
    np.testing.assert_array_equal(base.iloc[:T].to_numpy(), after.iloc[:T].to_numpy())
    assert not np.array_equal(base.iloc[T:].to_numpy(), after.iloc[T:].to_numpy())
    # warm-up: flat until min_periods forecasts are seen, then sized by the expanding RMS up to t
    assert (base.iloc[:19] == 0).all() and (base.iloc[19:] != 0).all()
    f = pred["pred_return"]
    t = 60
    expected = np.sign(f.iloc[t]) * min(abs(f.iloc[t]) / np.sqrt(np.mean(f.iloc[: t + 1] ** 2)), 1.0)
    assert base.iloc[t] == pytest.approx(expected)
    with pytest.raises(ValueError, match="sizing"):
        ForecastStrategy(sizing="kelly")


def test_knn_online_stores_each_window_once():
    w = _windows(n=200, seed=5)
    train, test = w.subset(np.arange(0, 100)), w.subset(np.arange(100, len(w)))
    knn = KNNAnalogForecaster(k=10, lookback=4, online=True).fit(train)
    assert knn.n_stored == len(train)
    pred = knn.predict(test)
    table = knn.similar(test, top=10)
    assert knn.n_stored == len(w) and len(knn._memory) == len(w)  # predict then similar: added once
    knn.predict(w)  # training and test windows again: nothing new
    assert len(knn._memory) == len(w)
    # each neighbour appears once per query (a duplicate would take two of the k slots)
    assert not table.duplicated(["time", "neighbour_time"]).any()
    # and the repeated calls give the same answer as a fresh forecaster asked once
    fresh = KNNAnalogForecaster(k=10, lookback=4, online=True).fit(train).predict(test)
    pd.testing.assert_frame_equal(pred, fresh)
    pd.testing.assert_frame_equal(knn.predict(test), fresh)


def test_historical_similarity_signals_match_the_chapter_and_the_positions():
    frame = pd.DataFrame(
        {"memory_up_share": [0.8, 0.7, 0.5, 0.2, np.nan, 0.9], "n_neighbors": [10, 10, 10, 10, 0, 2]},
        index=pd.bdate_range("2020-01-01", periods=6),
    )
    strat = HistoricalSimilarityStrategy(long_threshold=0.7, short_threshold=0.3, min_neighbors=5)
    sig = strat.signals(frame)
    assert sig["signal"].tolist() == ["LONG", "LONG", "HOLD", "SHORT", "HOLD", "HOLD"]
    np.testing.assert_allclose(sig["confidence"], [0.8, 0.7, 0.5, 0.8, np.nan, 0.5])
    pd.testing.assert_series_equal(sig["position"].rename("position"), strat.positions(frame))
    assert sig["position"].tolist() == [1, 1, 0, -1, 0, 0]
    long_only = HistoricalSimilarityStrategy(allow_short=False, min_neighbors=1).signals(frame)
    assert "SHORT" not in set(long_only["signal"])
