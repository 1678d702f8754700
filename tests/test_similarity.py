"""Analog search: causal, distinct episodes, exact explanations, and unmoved by anything after the query."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import course_lib as cl
from course_lib.similarity import _distinct_top


def _ohlcv(n=700, seed=0):
    rng = np.random.default_rng(seed)
    idx = pd.bdate_range("2001-01-01", periods=n)
    close = 100 * np.exp(np.cumsum(rng.normal(0.0002, 0.01, n)))
    open_ = np.r_[close[0], close[:-1]]
    spread = np.abs(rng.normal(0, 0.004, n)) * close
    return pd.DataFrame(
        {"open": open_, "high": np.maximum(open_, close) + spread, "low": np.minimum(open_, close) - spread,
         "close": close, "volume": rng.uniform(1e6, 2e6, n)},
        index=pd.DatetimeIndex(idx, name="time"),
    )  # fmt: skip


def _windows(ohlcv, seq_len=16, horizon=1, fit_until=None):
    feats = cl.compute_features(ohlcv)
    until = fit_until if fit_until is not None else feats.index[len(feats) // 2]
    scaler = cl.FeatureScaler().fit(feats.loc[:until])
    target = cl.forward_log_return(ohlcv["close"], horizon).reindex(feats.index)
    return cl.make_windows(scaler.transform(feats), target, seq_len, horizon, drop_unlabeled=False)


@pytest.fixture(scope="module")
def market():
    ohlcv = _ohlcv()
    return ohlcv, _windows(ohlcv)


# ------------------------------------------------------------------------------------ distinct & causal
@pytest.mark.parametrize("method", ["raw", "shape", "stats"])
def test_find_analogs_returns_distinct_resolved_episodes(market, method):
    ohlcv, w = market
    q = w.end_time[600]
    a = cl.find_analogs(w, q, k=8, method=method, close=ohlcv["close"], horizons=(1, 5, 10))
    assert len(a) == 8 and a["rank"].tolist() == list(range(1, 9))
    bars = ohlcv.index
    pos = bars.get_indexer(a["end_time"])
    qpos = bars.get_loc(q)
    assert (qpos - pos >= 16).all(), "a neighbour overlaps the query"
    gaps = np.abs(pos[:, None] - pos[None, :])[~np.eye(len(pos), dtype=bool)]
    assert (gaps >= 16).all(), "two neighbours are one episode"
    assert (pos + 10 <= qpos).all(), "a neighbour's 10-bar outcome was not known at the query"
    assert a["similarity"].is_monotonic_decreasing
    assert np.isclose(a["weight"].sum(), 1.0) and (a["weight"] >= 0).all()
    logc = np.log(ohlcv["close"].to_numpy())
    np.testing.assert_allclose(a["fwd_5"], logc[pos + 5] - logc[pos])


def test_without_exclusion_one_episode_fills_the_table(market):
    """The bug the exclusion zone fixes: plain kNN returns neighbours one bar apart."""
    ohlcv, w = market
    plain = cl.find_analogs(w, w.end_time[600], k=8, exclusion=0, close=ohlcv["close"])
    pos = np.sort(ohlcv.index.get_indexer(plain["end_time"]))
    assert (np.diff(pos) < 16).any()


def test_greedy_selection_matches_a_brute_force_reference():
    rng = np.random.default_rng(3)
    for _ in range(30):
        m = int(rng.integers(5, 80))
        scores = rng.normal(size=m)
        scores[rng.random(m) < 0.2] = -np.inf
        pos = rng.permutation(200)[:m]
        k, excl = int(rng.integers(1, 6)), int(rng.integers(0, 30))
        got = _distinct_top(scores, pos, k, excl)
        want: list[int] = []
        for c in np.argsort(-scores, kind="stable"):
            if np.isfinite(scores[c]) and all(abs(pos[c] - pos[t]) >= excl for t in want):
                want.append(int(c))
            if len(want) == k:
                break
        assert got.tolist() == want


def test_index_requires_a_time_and_matches_brute_force():
    rng = np.random.default_rng(0)
    index = cl.AnalogIndex(4, "euclidean")
    vec = rng.normal(size=(50, 4)).astype(np.float32)
    end = np.arange(50, dtype=np.int64) * 10
    index.add(vec, end, end + 5, np.arange(50), rng.normal(size=50))
    q = rng.normal(size=(3, 4)).astype(np.float32)
    with pytest.raises(cl.MissingTimeError):
        index.search(q, k=3)
    as_of = np.array([100, 300, 600])
    hits = index.search(q, k=3, as_of=as_of)
    for i in range(3):
        ok = np.flatnonzero(end + 5 <= as_of[i])
        d = np.linalg.norm(vec[ok] - q[i], axis=1)
        want = ok[np.argsort(d)[:3]]
        assert hits.indices[i, hits.mask[i]].tolist() == want[: hits.mask[i].sum()].tolist()
    # a young memory: the row is padded, never filled with an unresolved entry
    young = index.search(q[:1], k=5, as_of=np.array([25]))
    assert young.mask.sum() == 3 and (young.indices[0, 3:] == -1).all()  # ready at 5, 15, 25
    everything = index.search(q[:1], k=5, as_of=cl.NO_TIME_FILTER)
    assert everything.mask.all()
    with pytest.raises(ValueError, match="query_pos"):
        index.search(q, k=3, as_of=as_of, exclusion=5)


# --------------------------------------------------------------------------------------- forecasts
def test_explain_contributions_sum_exactly_to_the_forecast(market):
    ohlcv, w = market
    for weighting in ("simplex", "softmax", "uniform"):
        a = cl.find_analogs(w, w.end_time[620], k=7, close=ohlcv["close"], horizons=(5,), weighting=weighting)
        f = cl.analog_forecast(a, "fwd_5")
        e = cl.explain(a, "fwd_5")
        assert math.fsum(e["contribution"]) == f.mean == e.attrs["forecast"]
        assert e["contribution"].sum() == pytest.approx(f.mean, abs=1e-15)
        assert f.n == 7 and 0 <= f.up_share <= 1 and f.quantiles[0.1] <= f.quantiles[0.5] <= f.quantiles[0.9]
        np.testing.assert_allclose(e["contribution"], a["weight"] * a["fwd_5"])


def test_weights():
    d = np.array([0.5, 1.0, 2.0])
    np.testing.assert_allclose(cl.analog_weights(distance=d, scheme="simplex"),
                               np.exp(-d / 0.5) / np.exp(-d / 0.5).sum())  # fmt: skip
    s = np.array([0.9, 0.8, 0.1])
    w = cl.analog_weights(s, scheme="softmax", temperature=0.1)
    np.testing.assert_allclose(w, np.exp(s / 0.1) / np.exp(s / 0.1).sum())
    assert cl.analog_weights(s, scheme="uniform").tolist() == [1 / 3] * 3
    twin = cl.analog_weights(distance=np.array([0.0, 0.3]), scheme="simplex")
    assert twin.tolist() == [1.0, 0.0]
    bad = pd.DataFrame({"rank": [1, 2], "end_time": pd.bdate_range("2020-01-01", periods=2),
                        "similarity": [0.9, 0.8], "weight": [0.9, 0.9], "fwd_1": [0.01, -0.02]})  # fmt: skip
    with pytest.raises(ValueError, match="sum to one"):
        cl.analog_forecast(bad)


def test_embeddings_keep_and_lose_what_they_say(market):
    _, w = market
    double = cl.WindowSet(w.X * 2.0, w.y, w.end_time, w.available_at, w.end_pos, w.feature_names, w.horizon,
                          w.seq_len)  # fmt: skip
    for method, invariant in (("shape", True), ("raw", False), ("stats", False)):
        a = cl.embed_windows(w.subset(np.arange(5)), method, lookback=8).vectors
        b = cl.embed_windows(double.subset(np.arange(5)), method, lookback=8).vectors
        assert np.allclose(a, b, atol=1e-5) == invariant, method
    e = cl.embed_windows(w, "raw", lookback=8)
    assert e.vectors.shape == (len(w), 8 * w.n_features) and (e.end_time == w.end_time).all()
    assert set(cl.EMBEDDING_DESCRIPTIONS) == {"raw", "shape", "stats", "memory_keys"}
    with pytest.raises(ValueError, match="trainer"):
        cl.embed_windows(w, "memory_keys")


# --------------------------------------------------------------------------------------- causality
def _tripled_after(ohlcv, T):
    out = ohlcv.copy()
    out.loc[out.index > T, ["open", "high", "low", "close"]] *= 3.0
    return out


def test_tripling_prices_after_T_moves_no_analog_forecast_or_signal_before_T():
    ohlcv = _ohlcv(600, seed=4)
    T = ohlcv.index[450]
    fit_until = ohlcv.index[300]
    changed = _tripled_after(ohlcv, T)
    w0, w1 = _windows(ohlcv, fit_until=fit_until), _windows(changed, fit_until=fit_until)
    s0 = cl.AnalogSearch(w0, method="shape", close=ohlcv["close"], horizons=(1, 5))
    s1 = cl.AnalogSearch(w1, method="shape", close=changed["close"], horizons=(1, 5))
    for q in w0.end_time[(w0.end_time > ohlcv.index[150]) & (w0.end_time <= T)][::7]:
        a0, a1 = s0.query(q, k=5), s1.query(q, k=5)
        pd.testing.assert_frame_equal(a0, a1)
        assert cl.analog_forecast(a0, "fwd_5") == cl.analog_forecast(a1, "fwd_5")
    # the kNN forecaster, online, and both analog rules on top of it
    before = np.flatnonzero(w0.end_time <= T)
    lab0, lab1 = w0.subset(np.arange(200)), w1.subset(np.arange(200))
    p0 = cl.KNNAnalogForecaster(k=6, lookback=8, online=True, exclusion=16).fit(lab0).predict(w0.subset(before))
    p1 = cl.KNNAnalogForecaster(k=6, lookback=8, online=True, exclusion=16).fit(lab1).predict(
        w1.subset(np.arange(len(w1)))
    ).loc[: T]  # fmt: skip
    pd.testing.assert_frame_equal(p0.drop(columns="y").iloc[:-1], p1.drop(columns="y").iloc[: len(p0) - 1])
    for strat in (cl.HistoricalSimilarityStrategy(min_neighbors=1), cl.AnalogSpreadStrategy(0.2)):
        pd.testing.assert_series_equal(strat.positions(p0), strat.positions(p1.iloc[: len(p0)]))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    cut=st.floats(0.4, 0.9),
    factor=st.floats(0.2, 5.0),
    k=st.integers(1, 6),
    exclusion=st.integers(0, 30),
    method=st.sampled_from(["raw", "shape", "stats"]),
)
def test_property_analogs_before_T_ignore_any_change_after_T(seed, cut, factor, k, exclusion, method):
    ohlcv = _ohlcv(260, seed=seed)
    T = ohlcv.index[int(cut * len(ohlcv))]
    changed = ohlcv.copy()
    rng = np.random.default_rng(seed + 1)
    after = changed.index > T
    noise = np.exp(rng.normal(0, 0.05, after.sum()))[:, None]
    changed.loc[after, ["open", "high", "low", "close"]] *= factor * noise
    changed.loc[after, "high"] = changed.loc[after, ["open", "high", "low", "close"]].max(axis=1)
    changed.loc[after, "low"] = changed.loc[after, ["open", "high", "low", "close"]].min(axis=1)
    fit_until = ohlcv.index[100]
    w0, w1 = _windows(ohlcv, 12, 2, fit_until), _windows(changed, 12, 2, fit_until)
    q = T - pd.Timedelta(days=int(rng.integers(0, 30)))
    kw = dict(k=k, exclusion=exclusion, method=method, horizons=(2, 4))
    a0 = cl.find_analogs(w0, q, close=ohlcv["close"], **kw)
    a1 = cl.find_analogs(w1, q, close=changed["close"], **kw)
    pd.testing.assert_frame_equal(a0, a1)


# ----------------------------------------------------------------------------------- the lesson's tools
def test_walk_forward_analogs_backtests_both_rules_with_costs():
    ohlcv = _ohlcv(900, seed=2)
    cfg = cl.AnalogBacktestConfig(seq_len=16, horizon=3, k=5, n_folds=2,
                                  backtest=cl.BacktestConfig(cost_bps=5, n_boot=50))  # fmt: skip
    res = cl.walk_forward_analogs(ohlcv, cfg)
    assert set(res.table.index) == {"buy_and_hold", "analog_share", "analog_mean_spread"}
    assert {"sharpe", "sharpe_ci_low", "sharpe_ci_high", "turnover"} <= set(res.table.columns)
    assert res.predictions.index.is_monotonic_increasing and res.predictions["n_neighbors"].le(5).all()
    # later prices do not move earlier positions
    T = res.predictions.index[len(res.predictions) // 2]
    again = cl.walk_forward_analogs(_tripled_after(ohlcv, T), cfg)
    for name in res.positions:
        pd.testing.assert_series_equal(res.positions[name].loc[:T], again.positions[name].loc[:T])


def test_measures_by_hand():
    y = np.array([0.01, -0.02, 0.03, 0.0, -0.01])
    pred = np.array([0.02, -0.01, -0.01, 0.01, 0.0])
    hr = cl.hit_rate(pred, y)
    assert hr["n"] == 3 and hr["rate"] == pytest.approx(2 / 3) and hr["low"] < 2 / 3 < hr["high"]
    bench = np.full(5, 0.001)
    want = 1 - np.sum((y - pred) ** 2) / np.sum((y - bench) ** 2)
    assert cl.oos_r2(pred, y, 0.001) == pytest.approx(want)
    assert cl.oos_r2(bench, y, bench) == 0.0


def test_time_shuffled_keeps_the_bars_and_breaks_the_order():
    ohlcv = _ohlcv(300)
    null = cl.time_shuffled(ohlcv, seed=1)
    r0, r1 = np.log(ohlcv.close).diff().dropna(), np.log(null.close).diff().dropna()
    np.testing.assert_allclose(np.sort(r0), np.sort(r1), rtol=1e-9, atol=1e-12)
    assert not np.allclose(r0, r1) and null.close.iloc[0] == pytest.approx(ohlcv.close.iloc[0])
    cl.validate_ohlcv(null)
    assert (null.index == ohlcv.index).all()


def test_novel_motif_market_hides_the_new_motifs_until_the_cut():
    m = cl.novel_motif_market(800, 600, seed=3)
    assert len(m.ohlcv) == 1400 and m.ohlcv.index.is_unique and m.ohlcv.index.is_monotonic_increasing
    novel = m.motifs.name.isin(["failed_rebound", "failed_selloff"])
    assert (m.motifs.loc[novel, "start_pos"] >= 800).all() and (m.motifs.loc[~novel, "end_pos"] < 800).all()
    assert set(m.motifs.loc[novel, "direction"]) == {-1, 1}
    r = np.log(m.ohlcv.close).diff().iloc[795:805]
    assert r.abs().max() < 0.2  # the join has no price jump
    first = m.motifs.loc[novel].iloc[0]
    assert (m.motif_bars.iloc[first.start_pos : first.end_pos + 1] == first.motif_id).all()


def test_inference_time_learning_reports_every_arm_per_occurrence():
    exp = cl.inference_time_learning(seeds=(0, 1), n_before=900, n_after=700, seq_len=16, horizon=5,
                                     knn_k=5, lookback=8, progress=False)  # fmt: skip
    df = exp.per_occurrence
    assert set(df.arm) == {"knn frozen", "knn online"} and set(df.seed) == {0, 1}
    assert df.groupby(["seed", "occurrence"]).seen.nunique().eq(1).all()
    assert (df.groupby(["seed", "arm"]).seen.apply(lambda s: s.is_monotonic_increasing)).all()
    curves = exp.curve()
    assert set(curves) == set(exp.arms)
    c = curves["knn online"]
    assert (c["low"] <= c["mean"]).all() and (c["mean"] <= c["high"]).all()
    assert set(exp.summary().columns) >= {"all", "n"}


def test_motif_recall_counts_same_motif_neighbours():
    m = cl.make_synthetic_market(1500, seed=0)
    last = m.motifs.iloc[-1]
    same = m.motifs[(m.motifs.name == last["name"]) & (m.motifs.end_pos < last.end_pos)]
    other = m.motifs[m.motifs.name != last["name"]]
    idx = m.ohlcv.index
    nts = [idx[same.end_pos.to_numpy()[:2]].append(idx[other.end_pos.to_numpy()[:2]])]
    rec = cl.motif_recall(m, [idx[last.end_pos]], nts, tolerance=1)
    assert rec["recall"].iloc[0] == pytest.approx(0.5) and 0 < rec["chance"].iloc[0] < 0.5


def test_plots_draw_and_label_hindsight(market):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ohlcv, w = market
    a = cl.find_analogs(w, w.end_time[500], k=4, close=ohlcv["close"], horizons=(1, 10))
    fig = cl.plot_analogs(ohlcv["close"], a, horizon=10, lookback=16)
    labels = [t.get_text() for ax in fig.axes for t in ax.get_legend().get_texts()]
    assert any("hindsight" in s for s in labels)
    plt.close(fig)
    exp = pd.DataFrame({"mean": [0.4, 0.6], "low": [0.2, 0.5], "high": [0.6, 0.7]}, index=[0, 3])
    ax = cl.plot_learning_curve({"online": exp})
    assert ax.get_legend() is not None
    plt.close("all")


def test_analog_skill_scores_every_later_window_and_is_causal():
    ohlcv = _ohlcv(700, seed=6)
    res = cl.analog_skill(ohlcv, seq_len=16, horizon=3, lookback=8, k=5, method="shape",
                          feature_columns=["log_return"])  # fmt: skip
    row = res.loc["all"]
    assert row.n > 250 and row.hit_low <= row.hit_rate <= row.hit_high
    assert {"r2_return", "r2_var_analog", "r2_var_trailing", "r2_var_ewma"} <= set(res.columns)
    for col in ("r2_return", "r2_var_analog", "r2_var_trailing", "r2_var_ewma"):
        assert row[f"{col}_low"] <= row[col] <= row[f"{col}_high"]
    knn = cl.KNNAnalogForecaster(k=3, lookback=8, method="stats")
    with pytest.raises(ValueError, match="method"):
        cl.KNNAnalogForecaster(method="fourier")
    w = _windows(ohlcv)
    lab = w.subset(np.flatnonzero(np.isfinite(w.y)))
    p = knn.fit(lab.subset(np.arange(200))).predict(lab.subset(np.arange(300, 310)))
    assert p["n_neighbors"].eq(3).all() and (p["memory_spread"] >= 0).all()


# ------------------------------------------------------------------- what the figures know at the query
def _fan_data(ax) -> list[np.ndarray]:
    """Everything the fan draws except the labelled hindsight line: each line's y values and the band."""
    from course_lib.plots.similarity import HINDSIGHT_LABEL

    out = [np.asarray(line.get_ydata(), float) for line in ax.get_lines() if line.get_label() != HINDSIGHT_LABEL]
    out += [np.asarray(p.vertices, float) for c in ax.collections for p in c.get_paths()]
    return out


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cut=st.integers(420, 640), searched=st.sampled_from([1, 3, 5]), drawn=st.sampled_from([10, 20, 30]),
       exclusion=st.sampled_from([1, 4, 16]))
def test_analog_fan_draws_only_what_was_known_at_the_query(cut, searched, drawn, exclusion):
    """Rule: a picture of an analog forecast at T uses prices up to T only. Changing every price after T moves
    no neighbour path, weighted mean or band of the fan (only the hindsight line, labelled as such)."""
    import matplotlib.pyplot as plt

    ohlcv = _ohlcv(700, seed=2)
    T = ohlcv.index[cut]
    figs = []
    for data in (ohlcv, _tripled_after(ohlcv, T)):
        s = cl.AnalogSearch(_windows(data, fit_until=ohlcv.index[300]), close=data["close"], horizons=(searched,))
        analogs = s.query(T, k=6, exclusion=exclusion)
        fig = cl.plot_analogs(data["close"], analogs, horizon=drawn)
        figs.append(fig)
        plt.close(fig)
    for ax_a, ax_b in zip(figs[0].axes, figs[1].axes):
        a, b = _fan_data(ax_a), _fan_data(ax_b)
        assert len(a) == len(b)
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    gap = cut - ohlcv.index.get_indexer(analogs["end_time"]).max()  # bars from the nearest neighbour to T
    assert ("known at the query" in figs[0].axes[1].get_title()) == (drawn > gap)


def test_find_analogs_refuses_horizons_it_cannot_measure_without_close(market):
    _, w = market  # one-bar labels
    with pytest.raises(ValueError, match="need `close`"):
        cl.find_analogs(w, w.end_time[600], k=3, horizons=(1, 5))
    five = _windows(_ohlcv(), horizon=5)
    with pytest.raises(ValueError, match="need `close`"):
        cl.find_analogs(five, five.end_time[600], k=3, horizons=(1, 5))  # fwd_1 would hold the 5-bar label
    ok = cl.find_analogs(five, five.end_time[600], k=3)
    assert list(ok.filter(like="fwd_").columns) == ["fwd_5"]


@pytest.mark.parametrize("spoil, match", [
    (lambda d: d.assign(close=d["close"].where(d.index != d.index[200])), "missing or non-finite"),
    (lambda d: d.assign(close=d["close"].where(d.index != d.index[200], 0.0)), "non-positive price"),
    (lambda d: d.iloc[:0], "no data rows"),
    (lambda d: d.drop(columns="volume"), "missing column"),
])
def test_time_shuffled_refuses_bad_bars_with_a_clear_error(spoil, match):
    with pytest.raises(cl.DataError, match=match):
        cl.time_shuffled(spoil(_ohlcv(400)), seed=0)


def test_hit_rate_of_overlapping_outcomes_uses_a_block_bootstrap():
    """Overlapping h-bar outcomes are not independent: the interval is a block bootstrap (blocks of twice the
    horizon), wider than the binomial interval that would treat them as independent, and inside [0, 1]."""
    rng = np.random.default_rng(0)
    c = np.r_[0.0, np.cumsum(rng.standard_normal(1200))]
    past, future = c[12:1012] - c[:1000], c[22:1022] - c[12:1012]  # trailing 12-bar vs next 10-bar returns
    wilson = cl.hit_rate(past, future)
    block = cl.hit_rate(past, future, horizon=10)
    assert block["rate"] == wilson["rate"] and block["n"] == wilson["n"] == 1000
    assert block["high"] - block["low"] > 1.8 * (wilson["high"] - wilson["low"])
    assert 0 <= block["low"] <= block["rate"] <= block["high"] <= 1
    want = cl.block_bootstrap_ci((np.sign(past) == np.sign(future)).astype(float), cl.overlap_block(10), n_boot=2000)
    assert (block["low"], block["high"]) == pytest.approx(want)
