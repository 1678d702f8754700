"""Feature values against hand-written numpy, and the causality rule: the future never moves the past."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from course_lib import (
    FEATURE_DESCRIPTIONS,
    DataError,
    FeatureConfig,
    compute_features,
    forward_log_return,
    log_returns,
    rolling_zscore,
    rsi,
)


def make_ohlcv(n: int = 300, seed: int = 0, freq: str = "D") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[100.0, close[:-1]]
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, n))
    volume = rng.lognormal(10, 0.5, n)
    idx = pd.date_range("2020-01-01", periods=n, freq=freq, name="time")
    return pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume}, index=idx
    )


def wilder_rsi_reference(close: np.ndarray, n: int) -> np.ndarray:
    """Textbook Wilder RSI written as a plain loop."""
    delta = np.diff(close)
    gains, losses = np.maximum(delta, 0), np.maximum(-delta, 0)
    out = np.full(len(close), np.nan)
    avg_g, avg_l = gains[:n].mean(), losses[:n].mean()
    for t in range(n, len(close)):
        if t > n:
            avg_g = (avg_g * (n - 1) + gains[t - 1]) / n
            avg_l = (avg_l * (n - 1) + losses[t - 1]) / n
        out[t] = 50.0 if avg_g + avg_l == 0 else 100.0 * avg_g / (avg_g + avg_l)
    return out


def test_log_returns_match_numpy():
    close = pd.Series([100.0, 101.0, 99.0, 99.0, 105.0])
    out = log_returns(close)
    assert np.isnan(out.iloc[0])
    np.testing.assert_allclose(out.iloc[1:].to_numpy(), np.log(close.to_numpy()[1:] / close.to_numpy()[:-1]))


def test_rolling_zscore_matches_loop():
    rng = np.random.default_rng(1)
    x = pd.Series(rng.normal(size=40))
    w = 7
    out = rolling_zscore(x, w).to_numpy()
    assert np.isnan(out[: w - 1]).all()
    for t in range(w - 1, len(x)):
        win = x.to_numpy()[t - w + 1 : t + 1]
        assert out[t] == pytest.approx((x.iloc[t] - win.mean()) / win.std(ddof=1))


def test_rolling_zscore_constant_window_is_nan_not_inf():
    out = rolling_zscore(pd.Series([1.0] * 10), 3)
    assert not np.isinf(out).any() and out.isna().all()


@pytest.mark.parametrize("window", [3, 14])
def test_rsi_is_wilder(window):
    close = make_ohlcv(120, seed=window)["close"].reset_index(drop=True)
    np.testing.assert_allclose(
        rsi(close, window).to_numpy(), wilder_rsi_reference(close.to_numpy(), window), equal_nan=True
    )


def test_rsi_edge_cases():
    up = pd.Series(np.arange(1.0, 30.0))
    flat = pd.Series(np.full(30, 5.0))
    down = pd.Series(np.arange(30.0, 1.0, -1))
    assert rsi(up, 5).dropna().eq(100.0).all()
    assert rsi(flat, 5).dropna().eq(50.0).all()
    assert rsi(down, 5).dropna().eq(0.0).all()
    assert rsi(up, 5).isna().sum() == 5  # first value at bar `window`


def test_forward_log_return_is_the_return_over_t_to_t_plus_h():
    close = pd.Series([100.0, 110.0, 121.0, 133.1, 100.0])
    for h in (1, 2, 3):
        target = forward_log_return(close, h).to_numpy()
        for t in range(len(close)):
            if t + h < len(close):
                assert target[t] == pytest.approx(np.log(close[t + h] / close[t]))
            else:
                assert np.isnan(target[t])
    with pytest.raises(DataError, match="horizon"):
        forward_log_return(close, 0)


def test_forward_log_return_records_its_horizon():
    frame = make_ohlcv(30)
    frame.attrs["source"] = "test"
    target = forward_log_return(frame["close"], 4)
    assert target.attrs["horizon"] == 4 and target.attrs["source"] == "test"
    assert target.reindex(frame.index[10:]).attrs["horizon"] == 4  # survives the usual reindex and slicing
    assert target.iloc[5:].attrs["horizon"] == 4
    assert "horizon" not in frame.attrs and "horizon" not in frame["close"].attrs  # the input is not touched


def test_target_depends_only_on_t_to_t_plus_h():
    close = make_ohlcv(100)["close"]
    h, t = 3, 40
    base = forward_log_return(close, h).iloc[t]
    changed = close.copy()
    changed.iloc[:t] *= 1.7  # the past before t
    changed.iloc[t + h + 1 :] *= 0.3  # the future after t+h
    assert forward_log_return(changed, h).iloc[t] == pytest.approx(base)
    changed.iloc[t + h] *= 1.01  # inside (t, t+h]: must move
    assert forward_log_return(changed, h).iloc[t] != pytest.approx(base)


def test_compute_features_values_by_hand():
    cfg = FeatureConfig(vol_window=5, volume_window=6, rsi_window=4, momentum_window=3, trend_window=8)
    df = make_ohlcv(60, seed=3)
    feats = compute_features(df, cfg, dropna=False)
    assert list(feats.columns) == list(FEATURE_DESCRIPTIONS)
    c, v = df["close"].to_numpy(), df["volume"].to_numpy()
    lr = np.r_[np.nan, np.diff(np.log(c))]
    t = 30
    np.testing.assert_allclose(feats["log_return"].iloc[t], lr[t])
    np.testing.assert_allclose(feats["volatility"].iloc[t], np.std(lr[t - 4 : t + 1], ddof=1))
    lv = np.log1p(v[t - 5 : t + 1])
    np.testing.assert_allclose(feats["volume_z"].iloc[t], (lv[-1] - lv.mean()) / lv.std(ddof=1))
    np.testing.assert_allclose(feats["range"].iloc[t], np.log(df["high"].iloc[t] / df["low"].iloc[t]))
    np.testing.assert_allclose(feats["rsi"].iloc[t], wilder_rsi_reference(c, 4)[t] / 50 - 1)
    np.testing.assert_allclose(feats["momentum"].iloc[t], np.log(c[t] / c[t - 3]))
    np.testing.assert_allclose(feats["trend_gap"].iloc[t], np.log(c[t] / c[t - 7 : t + 1].mean()))
    dropped = compute_features(df, cfg)
    assert dropped.index[0] == df.index[cfg.warmup] and not dropped.isna().any().any()
    assert dropped["rsi"].between(-1, 1).all()


def test_compute_features_rejects_too_short_input():
    with pytest.raises(DataError, match="rows"):
        compute_features(make_ohlcv(30), FeatureConfig())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_features_are_causal(seed):
    """Multiply every bar after T by random noise: no feature at or before T may change."""
    df = make_ohlcv(400, seed=seed)
    rng = np.random.default_rng(100 + seed)
    T = 250
    future = df.copy()
    noise = np.exp(rng.normal(0, 0.2, len(df) - T - 1))
    for col in ("open", "high", "low", "close"):
        future.iloc[T + 1 :, future.columns.get_loc(col)] *= noise
    future.iloc[T + 1 :, future.columns.get_loc("volume")] *= rng.uniform(0.1, 10, len(df) - T - 1)
    a, b = compute_features(df, dropna=False), compute_features(future, dropna=False)
    pd.testing.assert_frame_equal(a.iloc[: T + 1], b.iloc[: T + 1])
    assert not a.iloc[T + 1 :].equals(b.iloc[T + 1 :])  # the test would notice a change


def test_features_work_on_intraday_bars():
    df = make_ohlcv(200, freq="h")
    feats = compute_features(df)
    assert feats.index.freq is None or feats.index.freqstr.lower() == "h"
    assert len(feats) == 200 - FeatureConfig().warmup
