"""The synthetic market: shape, determinism, OHLC consistency, plausible regimes, and motifs whose planted
aftermath is real, learnable from the shape and not from the regime or from momentum."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from course_lib import (
    MOTIF_LIBRARY,
    SyntheticConfig,
    compute_features,
    make_synthetic_market,
    motif_shape,
    validate_ohlcv,
)


@pytest.fixture(scope="module")
def market():
    return make_synthetic_market(n_bars=5000, seed=0)


@pytest.fixture(scope="module")
def many_markets():
    return [make_synthetic_market(n_bars=5000, seed=s) for s in range(12)]


def test_shapes_and_course_format(market):
    df = market.ohlcv
    assert list(df.columns) == ["open", "high", "low", "close", "volume"]
    assert len(df) == 5000 and df.index.name == "time"
    assert (df.index.day_of_week < 5).all(), "bars are business days"
    validate_ohlcv(df)
    assert (df.dtypes == "float64").all()
    assert market.regimes.index.equals(df.index)
    assert market.motif_bars.index.equals(df.index)
    assert set(market.regimes.unique()) <= set(market.regime_names)
    assert market.regime_names == ("bull", "bear", "sideways", "crash")
    assert len(market.regime_codes) == len(df)
    # the course's feature pipeline accepts it
    feats = compute_features(df)
    assert np.isfinite(feats.to_numpy()).all()


def test_deterministic_given_seed():
    a = make_synthetic_market(n_bars=1500, seed=7)
    b = make_synthetic_market(n_bars=1500, seed=7)
    c = make_synthetic_market(n_bars=1500, seed=8)
    pd.testing.assert_frame_equal(a.ohlcv, b.ohlcv)
    pd.testing.assert_series_equal(a.regimes, b.regimes)
    pd.testing.assert_frame_equal(a.motifs, b.motifs)
    assert not np.allclose(a.ohlcv["close"].to_numpy(), c.ohlcv["close"].to_numpy())


def test_ohlc_consistent(market):
    df = market.ohlcv
    body_hi = np.maximum(df["open"], df["close"])
    body_lo = np.minimum(df["open"], df["close"])
    assert (df["high"] >= body_hi).all() and (df["low"] <= body_lo).all()
    assert (df[["open", "high", "low", "close"]] > 0).all().all()
    assert (df["volume"] > 0).all()


def test_regime_frequencies_plausible(many_markets):
    cfg = SyntheticConfig()
    pi = cfg.stationary_distribution
    shares = np.mean([np.bincount(m.regime_codes, minlength=4) / len(m.regime_codes) for m in many_markets], axis=0)
    # the long-run average over seeds matches the chain's stationary distribution
    assert np.allclose(shares, pi, atol=0.05), (shares, pi)
    crash = cfg.regime_names.index("crash")
    assert 0.0 < shares[crash] < 0.05, "crashes are rare"
    summary = many_markets[0].regime_summary()
    assert summary.loc["crash", "mean_spell_bars"] < summary.loc["bull", "mean_spell_bars"], "crashes are short"
    # regime-specific volatility and drift show up in the realised returns
    vols = pd.concat([m.regime_summary()["ann_vol"] for m in many_markets], axis=1).mean(axis=1)
    assert vols["crash"] > vols["bear"] > vols["bull"]
    rets = pd.concat([m.regime_summary()["ann_return"] for m in many_markets], axis=1).mean(axis=1)
    assert rets["crash"] < 0 < rets["bull"]


def test_volume_reacts_to_volatility(many_markets):
    m = many_markets[0]
    vol_by_regime = np.log(m.ohlcv["volume"]).groupby(m.regimes).mean()
    assert vol_by_regime["crash"] > vol_by_regime["bear"] > vol_by_regime["bull"]


def test_motifs_non_overlapping_and_labelled(market):
    m = market.motifs
    cfg = market.config
    assert len(m) > 40
    assert m["start_pos"].is_monotonic_increasing
    assert (m["end_pos"] - m["start_pos"] == cfg.motif_len - 1).all()
    # next motif starts after the previous aftermath and the gap
    next_start = m["start_pos"].to_numpy()[1:]
    prev_after_end = m["end_pos"].to_numpy()[:-1] + cfg.aftermath_bars
    assert (next_start > prev_after_end + cfg.min_gap - 1).all()
    bars = market.motif_bars.to_numpy()
    assert (bars >= 0).sum() == len(m) * cfg.motif_len
    for row in m.itertuples():
        assert (bars[row.start_pos : row.end_pos + 1] == row.motif_id).all()
        assert market.motif_names[row.motif_id] == row.name
        assert row.direction == MOTIF_LIBRARY[row.name][1]
    counts = m["name"].value_counts()
    assert counts.max() - counts.min() <= 1, "motif types are balanced"


def test_aftermath_has_planted_sign(many_markets):
    allm = pd.concat([m.motifs for m in many_markets])
    for name, group in allm.groupby("name"):
        signed = group["aftermath_return"] * group["direction"]
        assert signed.mean() > 0, name
        assert (signed > 0).mean() > 0.6, name


def test_aftermath_strength_is_the_signal_knob():
    cfg0 = SyntheticConfig(aftermath_strength=0.0)
    signed = []
    for s in range(12):
        m = make_synthetic_market(5000, seed=s, config=cfg0).motifs
        signed.append(m["aftermath_return"] * m["direction"])
    signed = pd.concat(signed)
    # placebo: the shapes are planted but nothing follows them (mean within ~3 standard errors of 0)
    assert abs(signed.mean()) < 3 * signed.std() / np.sqrt(len(signed))


def test_aftermath_not_predictable_from_momentum_or_regime(many_markets):
    hits = {5: [], 10: []}
    up_by_regime: dict[str, list[int]] = {}
    for m in many_markets:
        logp = np.log(m.ohlcv["close"].to_numpy())
        end = m.motifs["end_pos"].to_numpy()
        d = m.motifs["direction"].to_numpy()
        for k in hits:
            hits[k].extend(np.sign(logp[end] - logp[end - k]) == d)
        for regime, direction in zip(m.motifs["regime"], d):
            up_by_regime.setdefault(regime, []).append(direction > 0)
    for k, h in hits.items():
        assert 0.4 < np.mean(h) < 0.6, f"{k}-bar momentum predicts the aftermath: {np.mean(h):.2f}"
    for regime, ups in up_by_regime.items():
        if len(ups) >= 40:
            assert 0.35 < np.mean(ups) < 0.65, f"regime {regime} predicts the aftermath"


def test_motif_shapes_zero_sum_unit_rms_and_distinct():
    shapes = np.stack([motif_shape(name, 12) for name in MOTIF_LIBRARY])
    assert np.allclose(shapes.sum(axis=1), 0.0)
    assert np.allclose(np.sqrt((shapes**2).mean(axis=1)), 1.0)
    corr = np.corrcoef(shapes)
    off = corr[~np.eye(len(shapes), dtype=bool)]
    assert (off < 0.9).all(), "every motif must differ from the others"


@pytest.mark.parametrize(
    "change, words",
    [
        ({"drift": (0.0, 0.0)}, "one value per regime"),
        ({"vol": (0.01, -0.01, 0.01, 0.02)}, "vol must be > 0"),
        ({"switch_probs": ((0.5, 0.5, 0, 0),) * 4}, "0 on the diagonal"),
        ({"motifs": ("head_and_shoulders",)}, "unknown motif"),
        ({"motif_len": 2}, "motif_len"),
        ({"motif_coverage": 1.5}, "motif_coverage"),
        ({"tail_df": 1.0}, "tail_df"),
    ],
)
def test_bad_config_raises_clear_error(change, words):
    with pytest.raises(ValueError, match=words):
        dataclasses.replace(SyntheticConfig(), **change)


def test_too_few_bars_for_motifs():
    with pytest.raises(ValueError, match="cannot hold"):
        make_synthetic_market(n_bars=100, config=SyntheticConfig(motif_coverage=0.9, motif_len=16, min_gap=20))


def test_no_motifs_option():
    m = make_synthetic_market(500, seed=1, config=SyntheticConfig(motifs=()))
    assert m.motifs.empty and (m.motif_bars == -1).all()
    assert m.motif_summary().empty
