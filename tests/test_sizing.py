"""Position sizing: the agreement rule by hand, Kelly and CVaR values, and causality of every sizer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from course_lib import (
    SizingConfig,
    agreement_sizing,
    apply_sizing,
    continuous_kelly,
    cvar,
    cvar_limit,
    kelly_fraction,
    kelly_sizing,
    volatility_target,
)


def test_agreement_rule_by_hand():
    model = [0.02, 0.02, -0.01, 0.0]
    memory = [0.01, -0.03, -0.04, 0.01]
    out = agreement_sizing(model, memory, model_scale=0.02, memory_scale=0.02)
    # bar 0: agree -> min(1 + 0.5, 1) = 1; bar 1: disagree -> 0.5 * min(1, 1) = 0.5;
    # bar 2: agree (both down) -> min(0.5 + 2, 1) = 1, short; bar 3: no model direction -> 0
    np.testing.assert_allclose(out["confidence"], [1.0, 0.5, 1.0, 0.0])
    np.testing.assert_allclose(out["position"], [1.0, 0.5, -1.0, 0.0])
    assert out["agree"].tolist() == [True, False, True, False]
    weak = agreement_sizing([0.005], [0.001], model_scale=0.02, memory_scale=0.02)
    assert weak["confidence"].iloc[0] == pytest.approx(0.25 + 0.05)


def test_kelly():
    # p = 0.6, even odds: f* = 0.6 - 0.4 = 0.2; quarter Kelly = 0.05
    assert kelly_fraction(0.6, 1.0) == pytest.approx(0.05)
    assert kelly_fraction(0.6, 1.0, fraction=1.0) == pytest.approx(0.2)
    assert kelly_fraction(0.4, 1.0) == 0.0  # no edge, no bet
    np.testing.assert_allclose(kelly_fraction(np.array([0.5, 0.75]), 2.0, fraction=0.5), [0.125, 0.3125])
    # mu / sigma^2 = 0.001 / 0.0004 = 2.5 -> half Kelly 1.25 -> capped at 1
    assert continuous_kelly(0.001, 0.0004, fraction=0.5) == 1.0
    assert continuous_kelly(-0.0001, 0.0004, fraction=0.5) == pytest.approx(-0.125)


def test_cvar_by_hand():
    r = np.array([-0.05, -0.03, 0.01, 0.02, 0.0, 0.01, -0.01, 0.03, 0.02, 0.04])
    # worst 20% = 2 bars: -0.05, -0.03 -> 0.04
    assert cvar(r, alpha=0.8) == pytest.approx(0.04)


def test_cvar_limit_caps_the_tail_of_the_right_side():
    idx = pd.bdate_range("2020-01-01", periods=30)
    r = pd.Series(np.tile([-0.04, 0.01, 0.02], 10), index=idx)
    longs = cvar_limit(pd.Series(1.0, index=idx), r, limit=0.01, alpha=0.9, window=10)
    shorts = cvar_limit(pd.Series(-1.0, index=idx), r, limit=0.01, alpha=0.9, window=10)
    assert (longs.iloc[:9] == 1.0).all()  # no full window yet
    assert longs.iloc[9:].to_numpy() == pytest.approx(0.25)  # long tail: 4% loss -> 1% / 4%
    assert shorts.iloc[9:].to_numpy() == pytest.approx(-0.5)  # short tail: 2% loss -> 1% / 2%


def test_volatility_target():
    idx = pd.bdate_range("2020-01-01", periods=60)
    r = pd.Series(np.tile([0.01, -0.01], 30), index=idx)
    out = volatility_target(pd.Series(1.0, index=idx), r, target_vol=0.05, window=10, max_leverage=2)
    vol = r.rolling(10).std().iloc[-1] * np.sqrt(252)
    assert out.iloc[-1] == pytest.approx(0.05 / vol)
    assert (out.iloc[:9] == 0).all()


@pytest.mark.parametrize("sizer", ["agreement", "vol", "cvar", "kelly", "kelly_asset", "chain"])
def test_sizers_are_causal(sizer):
    rng = np.random.default_rng(0)
    n, T = 400, 300
    idx = pd.bdate_range("2015-01-01", periods=n)
    r = pd.Series(rng.normal(0, 0.01, n), index=idx)
    sig = pd.Series(rng.normal(0, 0.01, n), index=idx)
    mem = pd.Series(rng.normal(0, 0.01, n), index=idx)

    def size(r, sig, mem):
        if sizer == "agreement":
            return agreement_sizing(sig, mem)["position"]
        if sizer == "vol":
            return volatility_target(np.sign(sig), r, 0.1, 20)
        if sizer == "cvar":
            return cvar_limit(np.sign(sig), r, 0.01, 0.95, 100)
        if sizer == "kelly":
            return kelly_sizing(np.sign(sig), r, 0.5, window=100, min_periods=20, cap=1e6)
        if sizer == "kelly_asset":
            return kelly_sizing(np.sign(sig), r, 0.5, window=100, min_periods=20, cap=1e6, basis="asset")
        cfg = SizingConfig(kelly_fraction=0.5, kelly_window=100, kelly_min_periods=20, target_vol=0.1,
                           cvar_limit=0.01, cvar_window=100, max_position=2.0)  # fmt: skip
        return apply_sizing(np.sign(sig), r, cfg)

    base = size(r, sig, mem)
    r2, sig2, mem2 = r.copy(), sig.copy(), mem.copy()
    r2.iloc[T:] *= 5
    sig2.iloc[T:] = -sig2.iloc[T:] * 3
    mem2.iloc[T:] = 1.0
    changed = size(r2, sig2, mem2)
    np.testing.assert_array_equal(base.iloc[:T].to_numpy(), changed.iloc[:T].to_numpy())
    assert not np.array_equal(base.iloc[T:].to_numpy(), changed.iloc[T:].to_numpy())


def test_a_longer_return_history_warms_the_estimates_causally():
    rng = np.random.default_rng(3)
    idx = pd.bdate_range("2019-01-01", periods=300)
    r = pd.Series(rng.normal(0, 0.01, 300), index=idx)
    pos = pd.Series(1.0, index=idx[-50:])
    sized = volatility_target(pos, r, target_vol=0.1, window=20)
    assert (sized > 0).all()  # warm from the first position: the 20 returns before it are known
    expected = 0.1 / (r.loc[: idx[-50]].iloc[-20:].std() * np.sqrt(252))
    assert sized.iloc[0] == pytest.approx(min(expected, 1.0))
    later = r.copy()
    later.iloc[-10:] *= 4
    np.testing.assert_array_equal(sized.iloc[:40], volatility_target(pos, later, 0.1, 20).iloc[:40])
    capped = cvar_limit(pos, r, limit=0.005, window=100)
    assert capped.notna().all() and (capped < 1).all()


def test_volatility_target_annualises_with_the_timestamps_known_at_t():
    # a venue that trades weekdays, then every day: the later weekend bars must not resize the early bars
    rng = np.random.default_rng(7)
    T = 150
    weekdays = pd.bdate_range("2020-01-01", periods=T + 300)
    opens_weekends = weekdays[:T].append(pd.date_range(weekdays[T - 1] + pd.Timedelta(days=1), periods=300))
    values = rng.normal(0, 0.01, T + 300)
    sizes, piped = {}, {}
    for name, idx in {"weekdays": weekdays, "weekends": opens_weekends}.items():
        r, ones = pd.Series(values, index=idx), pd.Series(1.0, index=idx)
        sizes[name] = volatility_target(ones, r, target_vol=0.1, window=20)
        piped[name] = apply_sizing(ones, r, SizingConfig(target_vol=0.1, vol_window=20))
    np.testing.assert_array_equal(sizes["weekdays"].iloc[:T], sizes["weekends"].iloc[:T])
    np.testing.assert_array_equal(piped["weekdays"].iloc[:T], piped["weekends"].iloc[:T])
    first = 0.1 / (np.std(values[:20], ddof=1) * np.sqrt(252))  # 20 weekday bars known at bar 19
    assert sizes["weekends"].iloc[19] == pytest.approx(min(first, 1.0))
    last = 0.1 / (np.std(values[-20:], ddof=1) * np.sqrt(365))  # by then the history shows a 7-day week
    assert sizes["weekends"].iloc[-1] == pytest.approx(min(last, 1.0))
    # a frequency given by the caller is used as is, at every bar
    fixed = volatility_target(pd.Series(1.0, index=opens_weekends), pd.Series(values, index=opens_weekends),
                              0.1, 20, periods_per_year=252)  # fmt: skip
    assert fixed.iloc[-1] == pytest.approx(min(0.1 / (np.std(values[-20:], ddof=1) * np.sqrt(252)), 1.0))


def test_kelly_sizing_by_hand():
    idx = pd.bdate_range("2021-01-01", periods=6)
    r = pd.Series([0.0, 0.02, -0.01, 0.01, -0.018, 0.05], index=idx)
    pos = pd.Series(1.0, index=idx)
    out = kelly_sizing(pos, r, fraction=0.5, window=4, min_periods=4)
    # the strategy (always long) earned r[1..4] by bar 4's close: mean 0.0005, sample variance 3.0767e-4
    earned = r.iloc[1:5].to_numpy()
    expected = 0.5 * earned.mean() / earned.var(ddof=1)
    assert expected == pytest.approx(0.8126, abs=1e-4)
    assert out.iloc[4] == pytest.approx(expected)
    assert (out.iloc[:4] == 0).all()  # warm-up: fewer than 4 earned returns, no bet
    # a short signal earns -r: its trailing edge is negative, so it is sized 0 (not turned long)
    assert kelly_sizing(-pos, r, fraction=0.5, window=4, min_periods=4).iloc[4] == 0.0
    # asset basis: the history before the first position warms the estimate
    asset = kelly_sizing(pos.iloc[4:], r, fraction=0.5, window=4, min_periods=4, basis="asset")
    assert asset.iloc[0] == pytest.approx(expected)
    # the pipeline applies it as its first stage, capped at max_position
    piped = apply_sizing(pos, r, SizingConfig(kelly_fraction=0.5, kelly_window=4, kelly_min_periods=4))
    assert piped.iloc[4] == pytest.approx(expected)
    assert piped.iloc[5] == 1.0  # bars 2..5 have a large edge: half Kelly > 1, capped
    with pytest.raises(ValueError, match="basis"):
        kelly_sizing(pos, r, basis="price")
    with pytest.raises(ValueError, match="min_periods"):
        kelly_sizing(pos, r, window=4, min_periods=10)


def test_array_positions_align_with_time_indexed_returns_by_position():
    rng = np.random.default_rng(5)
    idx = pd.bdate_range("2020-01-01", periods=120)
    r = pd.Series(rng.normal(0, 0.01, 120), index=idx)
    ones = np.ones(120)
    vol = volatility_target(ones, r, target_vol=0.05, window=20)
    assert isinstance(vol.index, pd.DatetimeIndex) and vol.index.equals(idx)  # took the returns' times
    np.testing.assert_allclose(vol, volatility_target(pd.Series(ones, index=idx), r, 0.05, 20))
    assert (vol.iloc[20:] > 0).all()  # was all zeros: the returns had become NaN
    capped = cvar_limit(ones, r, limit=0.005, window=50)
    assert (capped.iloc[49:] < 1).all()  # was never capped
    # time-indexed positions with a plain array of returns of the same length: aligned bar by bar
    np.testing.assert_allclose(volatility_target(pd.Series(ones, index=idx), r.to_numpy(), 0.05, 20), vol)
    with pytest.raises(
        ValueError, match=r"positions \(100 values, RangeIndex\).*\(120 values, DatetimeIndex\)"
    ):
        volatility_target(np.ones(100), r, target_vol=0.05)
    with pytest.raises(ValueError, match="same length"):
        cvar_limit(pd.Series(1.0, index=idx), np.zeros(50))


def _one_shot_tail_mean(r, window, k, lower):
    """The pre-chunking implementation: partitions the whole sliding-window view at once."""
    out = np.full(len(r), np.nan)
    views = np.lib.stride_tricks.sliding_window_view(r, window)
    if lower:
        out[window - 1 :] = -np.partition(views, k - 1, axis=1)[:, :k].mean(axis=1)
    else:
        out[window - 1 :] = np.partition(views, window - k, axis=1)[:, window - k :].mean(axis=1)
    return out


@pytest.mark.parametrize("lower", [True, False])
def test_chunked_tail_mean_is_identical_to_one_shot(monkeypatch, lower):
    import course_lib.backtest.sizing as sizing

    r = np.random.default_rng(5).standard_t(3, 1000) * 0.01
    monkeypatch.setattr(sizing, "_TAIL_CHUNK_ELEMENTS", 7 * 30)  # 7 rows a chunk: many uneven chunks
    got = sizing._rolling_tail_mean(r, 30, 2, lower)
    np.testing.assert_array_equal(got, _one_shot_tail_mean(r, 30, 2, lower))


def test_cvar_limit_on_a_million_bars_runs_in_bounded_memory():
    import tracemalloc

    n = 1_000_000
    r = pd.Series(np.random.default_rng(0).normal(0, 0.01, n), index=pd.RangeIndex(n))
    tracemalloc.start()
    out = cvar_limit(pd.Series(1.0, index=r.index), r, limit=0.02, window=250)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(out) == n and np.isfinite(out.to_numpy()).all()
    assert peak < 300e6  # the one-shot partition copied n x window floats: 2 GB
