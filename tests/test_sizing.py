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


@pytest.mark.parametrize("sizer", ["agreement", "vol", "cvar", "chain"])
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
        return apply_sizing(np.sign(sig), r, SizingConfig(target_vol=0.1, cvar_limit=0.01, cvar_window=100))

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
