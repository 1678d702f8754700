"""Lesson 09 studies: interval arithmetic, recency weights, causality of retrieval, decay and pruning counts,
and tiny runs of every study (shapes, references, paired differences)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import course_lib as cl
from course_lib import best_practices as bp

SEQ = 16


@pytest.fixture(scope="module")
def market():
    return cl.make_synthetic_market(700, 3, cl.study_config())


def _windows(ohlcv, fit_pos=300):
    return cl.market_windows(ohlcv, SEQ, ohlcv.index[fit_pos])


def _future_changed(ohlcv, cut, factor=3.0, seed=0):
    """Prices after bar ``cut`` scaled by ``factor`` and shaken by noise; bars up to ``cut`` untouched."""
    out = ohlcv.copy()
    rng = np.random.default_rng(seed)
    noise = np.exp(rng.normal(0, 0.02, len(out) - cut - 1))
    for col in ("open", "high", "low", "close"):
        out.iloc[cut + 1:, out.columns.get_loc(col)] *= factor * noise
    out.iloc[cut + 1:, out.columns.get_loc("volume")] *= 2.0
    return out


# ------------------------------------------------------------------------------------------ intervals
def test_paired_interval_matches_hand_computation():
    a = np.array([0.61, 0.58, 0.64])
    b = np.array([0.60, 0.55, 0.60])
    d = a - b                                   # 0.01, 0.03, 0.04
    mean = d.mean()
    sd = math.sqrt(((d - mean) ** 2).sum() / 2)
    half = 4.302652729911275 * sd / math.sqrt(3)  # Student t, 2 degrees of freedom, 97.5%
    got = cl.paired_seed_interval(a, b)
    assert got["n"] == 3
    assert got["diff"] == pytest.approx(mean)
    assert got["ci_low"] == pytest.approx(mean - half)
    assert got["ci_high"] == pytest.approx(mean + half)
    one = cl.paired_seed_interval([0.5], [0.4])
    assert one["diff"] == pytest.approx(0.1) and math.isnan(one["ci_low"])


def test_read_interval_branches():
    assert "above zero" in cl.read_interval(0.02, 0.01, 0.03)
    assert "below zero" in cl.read_interval(-0.02, -0.03, -0.01)
    assert "covers zero" in cl.read_interval(0.01, -0.01, 0.03)
    assert "no conclusion" in cl.read_interval(0.01, float("nan"), float("nan"))
    assert "no interval" in cl.read_interval(0.01, 0.01, 0.01)


# ------------------------------------------------------------------------------------------ weights
def test_recency_weights_half_life_and_normalisation():
    w = cl.recency_weights(np.array([0.9, 0.9]), np.array([10.0, 110.0]), 0.05, half_life=100.0)
    assert w.sum() == pytest.approx(1.0)
    assert w[0] / w[1] == pytest.approx(2.0)
    sim = np.array([0.9, 0.8, np.nan])
    plain = cl.recency_weights(sim, np.array([1.0, 500.0, 0.0]), 0.1, None)
    soft = np.exp(np.array([0.9, 0.8]) / 0.1)
    np.testing.assert_allclose(plain[:2], soft / soft.sum())
    assert plain[2] == 0.0
    assert cl.recency_weights(np.array([[np.nan, np.nan]]), np.zeros((1, 2))).sum() == 0.0
    with pytest.raises(ValueError, match="look-ahead"):
        cl.recency_weights(np.array([0.5]), np.array([-1.0]))
    with pytest.raises(ValueError, match="half_life"):
        cl.recency_weights(np.array([0.5]), np.array([1.0]), half_life=0)


# ------------------------------------------------------------------------------------------ causality
def test_knn_retrieves_only_resolved_past(market):
    ws = _windows(market.ohlcv)
    mem, queries = ws.subset(np.arange(300)), ws.subset(np.arange(300, len(ws)))
    for hl in (None, 50.0):
        res = cl.knn_direction(mem, queries, k=8, half_life=hl, online=True)
        allw = bp._concat(mem, queries)
        ok = res.rows >= 0
        avail = allw.available_at_ns()[np.where(ok, res.rows, 0)]
        assert (avail[ok] <= np.repeat(queries.end_time_ns()[:, None], res.rows.shape[1], axis=1)[ok]).all()
        assert res.n_neighbors.max() <= 8
        np.testing.assert_allclose(res.weights.sum(axis=1)[res.n_neighbors > 0], 1.0)


def _before_cut(ohlcv, cut, half_life):
    """Signals, decay weights and retrieval counts of everything that ends before bar ``cut``."""
    ws = _windows(ohlcv, fit_pos=250)
    pos = ohlcv.index.get_indexer(ws.end_time)        # bar positions (end_pos counts feature rows)
    mem = ws.subset(np.flatnonzero(pos < 250))
    q = ws.subset(np.flatnonzero(pos >= 250))
    res = cl.knn_direction(mem, q, k=8, half_life=half_life, online=True)
    before = pos[pos >= 250] <= cut                   # a window ending at bar `cut` only uses bars up to it
    counts = cl.count_retrievals(mem, ws.subset(np.flatnonzero(pos <= cut)), k=8)
    return res.signal[before], res.weights[before], res.rows[before], counts


@pytest.mark.parametrize("half_life", [None, 40.0])
def test_future_prices_do_not_move_past_decisions(market, half_life):
    cut = 500
    a = _before_cut(market.ohlcv, cut, half_life)
    b = _before_cut(_future_changed(market.ohlcv, cut), cut, half_life)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_pruning_counts_ignore_the_test_period(market):
    """The pruning decision (retrieval counts over training + validation) is the same whatever the test holds."""
    def counts(ohlcv):
        m = bp.replace(market, ohlcv=ohlcv)
        train, val, _ = bp._three_way(m, SEQ)
        return cl.count_retrievals(train, bp._concat(train, val), k=8)

    n = len(market.ohlcv)
    test_start = int(0.7 * n) + SEQ - 1  # the first bar of the test period; validation ends before it
    np.testing.assert_array_equal(counts(market.ohlcv), counts(_future_changed(market.ohlcv, test_start)))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(300, 650), factor=st.floats(0.3, 4.0), seed=st.integers(0, 100),
       half_life=st.sampled_from([None, 10.0, 200.0]))
def test_property_past_unchanged_by_any_future(market, cut, factor, seed, half_life):
    a = _before_cut(market.ohlcv, cut, half_life)
    b = _before_cut(_future_changed(market.ohlcv, cut, factor, seed), cut, half_life)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


# ------------------------------------------------------------------------------------------ markets
def test_flipping_market_flips_after_the_flip_only():
    base = cl.make_synthetic_market(1200, 1, cl.study_config())
    flip = cl.flipping_market(1200, 1, 0.5)
    m0, m1 = base.motifs, flip.motifs
    after = m0["end_pos"] >= 600
    np.testing.assert_array_equal(m1["direction"][after], -m0["direction"][after])
    np.testing.assert_array_equal(m1["direction"][~after], m0["direction"][~after])
    first = m0.loc[after].iloc[0]
    np.testing.assert_allclose(flip.ohlcv["close"].iloc[: int(first.end_pos) + 1],
                               base.ohlcv["close"].iloc[: int(first.end_pos) + 1])
    hit = np.sign(m1["aftermath_return"][after]) == m1["direction"][after]
    assert hit.mean() > 0.6  # the new truth is what the prices now do
    cl.validate_ohlcv(flip.ohlcv)


def test_joined_market_continues_prices():
    cfg = cl.study_config()
    m = cl.joined_market(cfg, bp.replace(cfg, vol=tuple(3 * v for v in cfg.vol)), 500, 300, 0)
    assert len(m.ohlcv) == 800 and m.ohlcv.index.is_monotonic_increasing
    assert len(m.aftermath_bars) == 800
    r = np.log(m.ohlcv["close"]).diff()
    assert r.iloc[550:].std() > 2 * r.iloc[:500].std()
    with pytest.raises(ValueError, match="same motifs"):
        cl.joined_market(cfg, bp.replace(cfg, motifs=("double_top",)), 100, 100)


# ------------------------------------------------------------------------------------------ studies
def test_sensitivity_study_paired_differences():
    m = cl.make_synthetic_market(700, 0, cl.study_config())
    s = cl.prepare_dataset(m.ohlcv, seq_len=SEQ, train_frac=0.6, val_frac=0.15)
    mc = cl.MemoryTransformerConfig(input_dim=s.train.n_features, seq_len=SEQ, d_model=8, n_heads=2, d_ff=16,
                                    n_layers=1, key_dim=8, key_bars=8, n_neighbors=8)
    grid = {"memory_size": [0.5, 1.0], "n_neighbors": [4, 8]}
    res = cl.sensitivity_study(s.train, s.val, s.test, mc, cl.TrainerConfig(epochs=1, patience=0), grid, seeds=2,
                               subsets={"onset": cl.motif_subsets(m, s.test)["onset"]}, n_boot=50, progress=False)
    summ = res.summary
    assert set(summ["param"]) == {"memory_size", "n_neighbors"} and set(summ["subset"]) == {"all", "onset"}
    assert res.defaults == {"memory_size": 1.0, "n_neighbors": 8}
    dflt = summ[summ.is_default]
    assert (dflt["diff"] == 0).all()
    ps = res.per_seed
    row = summ[(summ.param == "n_neighbors") & (summ.value == 4) & (summ.subset == "all")].iloc[0]
    alt = ps[(ps.param == "n_neighbors") & (ps.value == 4) & (ps.subset == "all")].sort_values("seed")["acc"]
    ref = ps[(ps.param == "n_neighbors") & (ps.value == 8) & (ps.subset == "all")].sort_values("seed")["acc"]
    assert row["diff"] == pytest.approx((alt.to_numpy() - ref.to_numpy()).mean())
    # the default of every parameter is the same trained model: same accuracy
    a = ps[(ps.param == "memory_size") & ps.is_default].sort_values(["seed", "subset"])["acc"].to_numpy()
    b = ps[(ps.param == "n_neighbors") & ps.is_default].sort_values(["seed", "subset"])["acc"].to_numpy()
    np.testing.assert_array_equal(a, b)


def test_pitfall_studies_tiny():
    st_ = cl.staleness_study(n_bars=900, seeds=1, half_lives=(50,), progress=False)
    assert set(st_["summary"]["market"]) == {"flip", "no flip"}
    assert (st_["summary"].query("arm == 'no decay'")["diff"] == 0).all()
    cold = cl.cold_start_study(n_bars=900, seeds=(0, 1), start_sizes=(0, None), progress=False)["summary"]
    assert set(cold["mode"]) == {"frozen", "online"} and set(cold["subset"]) == {"all", "onset", "early"}
    pr = cl.pruning_study(n_bars=900, seeds=1, min_counts=(1, 5), progress=False)["summary"]
    full = pr[pr.rule == "full"]["memory_size"].iloc[0]
    assert (pr["memory_size"] <= full).all()
    sizes = pr[pr.subset == "all"].set_index("arm")["memory_size"]
    assert sizes["pruned <5"] == sizes["random, same size as <5"]
    sh = cl.shift_study(n_before=600, n_after=400, seeds=1, progress=False)["summary"]
    assert set(sh["scenario"]) == {"same", "volatile", "new motifs"}
    assert isinstance(sh, pd.DataFrame)


def test_no_structure_study_times_both_arms():
    mc = cl.MemoryTransformerConfig(d_model=8, n_heads=2, d_ff=16, n_layers=1, key_dim=8, key_bars=8, n_neighbors=8)
    out = cl.no_structure_study(n_bars=500, seeds=1, model_config=mc, trainer_config=cl.TrainerConfig(epochs=1),
                                seq_len=SEQ, progress=False)
    per = out["per_seed"]
    assert set(per["market"]) == {"motifs", "no structure"} and (per["seconds"] > 0).all()
    assert set(out["summary"]["arm"]) == {"memory", "no memory"}
