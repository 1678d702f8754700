"""Regime detectors (lesson 07): causal filters, label alignment, scores, the memory vote."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import course_lib as cl


def _returns(n: int = 600, seed: int = 0) -> pd.Series:
    """Two volatility regimes in blocks, so every detector has something to find."""
    rng = np.random.default_rng(seed)
    vol = np.where((np.arange(n) // 100) % 2 == 0, 0.01, 0.03)
    return pd.Series(rng.standard_normal(n) * vol, index=pd.bdate_range("2010-01-01", periods=n), name="r")


def _change_after(r: pd.Series, cut: int, factor: float = 3.0, seed: int = 1) -> pd.Series:
    out = r.copy()
    noise = np.random.default_rng(seed).standard_normal(len(r) - cut) * 0.02
    out.iloc[cut:] = out.iloc[cut:] * factor + noise
    return out


@pytest.fixture(scope="module")
def returns() -> pd.Series:
    return _returns()


@pytest.fixture(scope="module")
def hmm(returns) -> cl.HMMRegimeDetector:
    return cl.HMMRegimeDetector(2, seed=0).fit(returns.iloc[:300])


# --------------------------------------------------------------------------------------- HMM
def test_forward_filter_matches_smoother_at_the_last_bar_and_prefixes(hmm, returns):
    f = hmm.filter(returns)
    s = hmm.smooth(returns)
    assert list(f.columns) == [0, 1] and f.index.equals(returns.index)
    np.testing.assert_allclose(f.sum(axis=1), 1.0, atol=1e-10)
    # at the last bar there is no future: filtered == smoothed (checks the recursion against hmmlearn)
    np.testing.assert_allclose(f.iloc[-1], s.iloc[-1], atol=1e-8)
    # filtering a prefix gives exactly the same rows
    pd.testing.assert_frame_equal(hmm.filter(returns.iloc[:400]), f.iloc[:400])
    assert s.attrs.get("look_ahead") is True


def test_forward_filter_loglik_matches_hmmlearn_score(hmm, returns):
    m = hmm.model_
    X = hmm._standardise(returns.to_frame())
    _, ll = cl.forward_filter(np.log(m.startprob_), np.log(m.transmat_), m._compute_log_likelihood(X),
                              return_loglik=True)
    assert ll == pytest.approx(m.score(X), rel=1e-9)


def test_states_are_ordered_calm_to_wild(hmm, returns):
    summary = hmm.state_summary()
    assert summary["ann_vol"].is_monotonic_increasing
    labels = hmm.predict(returns)
    vol = returns.groupby(labels).std()
    assert vol.loc[0] < vol.loc[1]


def test_hmm_filter_is_causal_but_smoother_is_not(hmm, returns):
    cut = 450
    changed = _change_after(returns, cut)
    pd.testing.assert_frame_equal(hmm.filter(changed).iloc[:cut], hmm.filter(returns).iloc[:cut])
    pd.testing.assert_series_equal(hmm.predict(changed).iloc[:cut], hmm.predict(returns).iloc[:cut])
    assert not np.allclose(hmm.smooth(changed).iloc[:cut], hmm.smooth(returns).iloc[:cut])


def test_hmm_refits_from_other_seeds_with_a_warning(returns):
    with pytest.warns(cl.RegimeFitWarning, match="did not converge"):
        det = cl.HMMRegimeDetector(2, n_iter=1, max_restarts=2, seed=5).fit(returns.iloc[:300])
    assert det.seeds_tried_ == [5, 6, 7] and det.converged_ is False
    with warnings.catch_warnings():
        warnings.simplefilter("error", cl.RegimeFitWarning)
        ok = cl.HMMRegimeDetector(2, seed=0).fit(returns.iloc[:300])
    assert ok.converged_ and ok.seeds_tried_ == [0]


def test_hmm_refuses_nan_and_wrong_width(hmm, returns):
    bad = returns.copy()
    bad.iloc[3] = np.nan
    with pytest.raises(cl.DataError, match="NaN"):
        cl.HMMRegimeDetector(2).fit(bad)
    with pytest.raises(cl.DataError, match="column"):
        hmm.filter(pd.concat([returns, returns], axis=1))
    with pytest.raises(RuntimeError, match="fit"):
        cl.HMMRegimeDetector(2).filter(returns)


# ------------------------------------------------------------------- other detectors, causality
def test_markov_switching_filter_is_causal(returns):
    cut = 450
    det = cl.MarkovSwitchingDetector(2, em_iter=30).fit(returns.iloc[:300])
    f = det.filter(returns)
    np.testing.assert_allclose(f.sum(axis=1), 1.0, atol=1e-8)
    pd.testing.assert_frame_equal(det.filter(_change_after(returns, cut)).iloc[:cut], f.iloc[:cut])
    labels = det.predict(returns)
    assert returns.groupby(labels).std().is_monotonic_increasing
    assert det.smooth(returns).attrs["look_ahead"]


def test_volatility_threshold_is_causal_and_uses_training_quantiles(returns):
    det = cl.VolatilityThresholdDetector(2, window=20, quantiles=[0.5]).fit(returns.iloc[:300])
    vol = det.trailing_vol(returns.iloc[:300]).dropna()
    assert det.thresholds_[0] == pytest.approx(np.median(vol))
    cut = 450
    pd.testing.assert_frame_equal(det.filter(_change_after(returns, cut)).iloc[:cut], det.filter(returns).iloc[:cut])


def _keys(r: pd.Series, lookback: int = 8) -> pd.DataFrame:
    a = r.abs().rolling(5, min_periods=1).mean()
    frame = pd.DataFrame({"r": r / 0.02, "a": (a - 0.016) / 0.01})  # centred: cosine sees direction, not size
    return cl.window_keys(frame, lookback)


def test_knn_vote_is_causal_and_never_sees_unknown_labels(returns):
    true = pd.Series(np.where((np.arange(len(returns)) // 100) % 2 == 0, "calm", "stressed"), index=returns.index)
    keys = _keys(returns)
    det = cl.KNNRegimeDetector(k=10, label_delay=5).fit(keys, true)
    probs = det.filter(keys)
    cut = 450
    changed_true = true.copy()
    changed_true.iloc[cut - 5:] = "calm"  # labels of bars >= cut-5 are only known from bar cut on
    det2 = cl.KNNRegimeDetector(k=10, label_delay=5).fit(_keys(_change_after(returns, cut)), changed_true,
                                                          classes=["calm", "stressed"])
    probs2 = det2.filter(_keys(_change_after(returns, cut)))
    pd.testing.assert_frame_equal(probs2.iloc[: cut - 7], probs.iloc[: cut - 7])
    # the first bars have no known label at all: uniform
    np.testing.assert_allclose(probs.iloc[0], 0.5)
    assert (det.predict(keys).loc[true.index[300:]] == true.iloc[300:]).mean() > 0.6


def test_regime_vote_count_and_similarity():
    bank = cl.ExternalMemoryBank(cl.MemoryConfig(key_dim=2, capacity=10, backend="numpy"))
    keys = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    bank.add(keys, timestamp=[1, 2, 3, 4], available_at=[1, 2, 3, 10], regime=np.array([0, 0, 1, 1]))
    res = bank.search(np.array([[1.0, 0.05]]), k=4, as_of=5)  # the last entry is not known at 5
    count = cl.regime_vote(res, [0, 1], weighting="count")
    np.testing.assert_allclose(count, [[2 / 3, 1 / 3]])
    sim = cl.regime_vote(res, [0, 1], weighting="similarity", temperature=0.1)
    assert sim[0, 0] > count[0, 0] and sim.sum() == pytest.approx(1.0)
    empty = bank.search(np.array([[1.0, 0.0]]), k=2, as_of=0)
    np.testing.assert_allclose(cl.regime_vote(empty, [0, 1]), [[0.5, 0.5]])


def test_regime_aware_memory_restricts_to_one_regime():
    rng = np.random.default_rng(0)
    keys = rng.standard_normal((50, 3))
    reg = np.array(["a", "b"] * 25)
    t = pd.bdate_range("2020-01-01", periods=50)
    mem = cl.RegimeAwareMemory(3, ["a", "b"])
    mem.add(keys, reg, t, t, future_return=np.where(reg == "a", 1.0, -1.0))
    res = mem.search(keys[:4], k=5, as_of=t[-1], regime=["a", "b", "a", "b"])
    codes = res.metadata("regime")
    assert (codes[[0, 2]][res.mask[[0, 2]]] == 0).all() and (codes[[1, 3]][res.mask[[1, 3]]] == 1).all()
    np.testing.assert_allclose(mem.forecast(keys[:2], k=5, as_of=t[-1], regime=["a", "b"]), [1.0, -1.0])
    with pytest.raises(cl.MissingTimeError):
        mem.search(keys[:1], k=2, as_of=None)
    assert np.isnan(mem.forecast(keys[:1], k=3, as_of=t[0] - pd.Timedelta(days=1))).all()


def test_min_duration_filter_debounces_causally():
    raw = pd.Series([0, 0, 1, 0, 0, 1, 1, 1, 0, 1, 1])
    out = cl.min_duration_filter(raw, 2)
    assert out.tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    for cut in range(1, len(raw)):  # the output before any cut depends on raw before it only
        assert cl.min_duration_filter(raw.iloc[:cut], 2).tolist() == out.iloc[:cut].tolist()


# ------------------------------------------------------------------------------ alignment, scores
def test_align_labels_recovers_a_permuted_labelling():
    rng = np.random.default_rng(0)
    true = pd.Series(rng.choice(["bull", "bear", "crash"], 500, p=[0.5, 0.3, 0.2]))
    perm = {"bull": 2, "bear": 0, "crash": 1}
    pred = true.map(perm)
    noisy = pred.where(rng.random(500) > 0.2, rng.integers(0, 3, 500))
    mapping = cl.align_labels(true, noisy)
    assert mapping == {v: k for k, v in perm.items()}
    assert (cl.relabel(pred, mapping) == true).all()


@settings(max_examples=25, deadline=None)
@given(st.permutations(list(range(4))), st.integers(0, 10_000))
def test_align_labels_property(perm, seed):
    rng = np.random.default_rng(seed)
    true = pd.Series(rng.integers(0, 4, 300))
    pred = true.map(dict(enumerate(perm)))
    assert cl.align_labels(true, pred) == {perm[i]: i for i in range(4) if (true == i).any()}


def test_align_labels_with_more_states_than_regimes():
    true = pd.Series(["a"] * 60 + ["b"] * 40)
    pred = pd.Series([0] * 30 + [2] * 30 + [1] * 40)
    mapping = cl.align_labels(true, pred)
    assert mapping[1] == "b" and {mapping[0], mapping[2]} == {"a"}


def test_regime_scores():
    idx = pd.bdate_range("2020-01-01", periods=504)
    true = pd.Series(np.repeat(["calm", "stressed", "calm", "stressed"], 126), index=idx)
    s = cl.regime_scores(true, true)
    assert s["balanced_accuracy"] == 1.0 and s["ari"] == 1.0 and s["detection_delay"] == 0.0
    assert s["true_switches_per_year"] == pytest.approx(3 / 2)
    const = cl.regime_scores(true, pd.Series("calm", index=idx))
    assert const["balanced_accuracy"] == pytest.approx(0.5) and const["ari"] == pytest.approx(0.0)
    assert const["detected_share"] == pytest.approx(1 / 3)
    late = true.shift(5).fillna("calm")
    d = cl.detection_delays(true, late)
    assert d["delay"].tolist() == [5.0, 5.0, 5.0]
    assert cl.regime_scores(true, late)["confusion"].loc["stressed", "calm"] == 10
    with pytest.raises(ValueError, match="align_labels"):
        cl.regime_scores(true, pd.Series(0, index=idx))


def test_group_regimes_and_drawdown_rule():
    reg = pd.Series(["bull", "crash", "sideways", "bear"])
    assert cl.group_regimes(reg).tolist() == ["calm", "stressed", "calm", "stressed"]
    with pytest.raises(ValueError, match="no group"):
        cl.group_regimes(pd.Series(["boom"]))
    idx = pd.bdate_range("2020-01-01", periods=300)
    close = pd.Series(np.r_[np.linspace(100, 120, 100), np.linspace(120, 90, 100), np.full(100, 90.0)], index=idx)
    lab = cl.label_drawdown_regimes(close)
    assert lab.iloc[50] == "calm" and lab.iloc[150] == "correction" and lab.iloc[250] == "bear"
    changed = close.copy()
    changed.iloc[200:] = 200.0
    assert (cl.label_drawdown_regimes(changed).iloc[:200] == lab.iloc[:200]).all()


# ---------------------------------------------------------------- hypothesis: the future never leaks
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 1000), cut=st.integers(260, 380), factor=st.floats(0.2, 5.0))
def test_detectors_ignore_the_future_property(seed, cut, factor):
    r = _returns(400, seed)
    changed = _change_after(r, cut, factor, seed + 1)
    train = r.iloc[:250]  # every detector is fitted on bars before the cut
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cl.RegimeFitWarning)
        hmm = cl.HMMRegimeDetector(2, n_iter=50, seed=seed).fit(train)
    vol = cl.VolatilityThresholdDetector(2).fit(train)
    for det in (hmm, vol):
        pd.testing.assert_frame_equal(det.filter(changed).iloc[:cut], det.filter(r).iloc[:cut])
        pd.testing.assert_series_equal(det.predict(changed).iloc[:cut], det.predict(r).iloc[:cut])
    true = pd.Series(np.where((np.arange(400) // 100) % 2 == 0, "calm", "stressed"), index=r.index)
    knn = [cl.KNNRegimeDetector(k=5, label_delay=3).fit(_keys(x), true, classes=["calm", "stressed"])
           for x in (r, changed)]
    pd.testing.assert_frame_equal(knn[1].filter(_keys(changed)).loc[: r.index[cut - 1]],
                                  knn[0].filter(_keys(r)).loc[: r.index[cut - 1]])


def test_run_regime_study_small():
    market = cl.make_synthetic_market(900, seed=0)
    cfg = cl.RegimeStudyConfig(n_folds=2, min_train_frac=0.5, detectors=tuple(d for d in cl.DETECTORS
                                                                               if d != "knn_transformer"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cl.RegimeFitWarning)
        study = cl.run_regime_study(market, cfg, seed=0)
    assert set(study.scores["detector"]) == set(cfg.detectors)
    assert study.scores["balanced_accuracy"].between(0, 1).all()
    assert len(study.retrieval) == 2
    test_bars = study.labels["hmm_filter"].index
    assert (test_bars > study.true.index[int(len(study.true) * 0.5)]).all()
    bt = cl.regime_backtest(market.ohlcv["close"], study.labels, study.true, {"calm": 1.0, "stressed": 0.0})
    assert {"buy_and_hold", "true_regime", "hmm_filter"} <= set(bt.index)
    assert bt.loc["buy_and_hold", "exposure"] > 0.9
    mean, lo, hi = cl.seed_interval([0.1, 0.2, 0.3])
    assert lo < mean < hi and mean == pytest.approx(0.2)
    table = study.scores.assign(market="m", seed=0)
    assert set(cl.summarise_seeds(table, "ari")["detector"]) == set(cfg.detectors)


def test_window_and_transformer_keys_are_causal():
    market = cl.make_synthetic_market(300, seed=3)
    feats = cl.compute_features(market.ohlcv)
    scaled = cl.FeatureScaler().fit(feats.iloc[:100]).transform(feats)
    changed = scaled.copy()
    cut = 150
    changed.iloc[cut:] = changed.iloc[cut:] * 3 + 1
    mc = cl.MemoryTransformerConfig(input_dim=scaled.shape[1], seq_len=16, d_model=16, n_heads=2, n_layers=1,
                                    d_ff=32, n_neighbors=4, key_dim=8, key_bars=8)
    trainer = cl.MemoryTransformerTrainer(mc, cl.TrainerConfig(device="cpu", progress=False))
    for make in (lambda x: cl.window_keys(x, 8), lambda x: cl.transformer_keys(trainer, x)):
        a, b = make(scaled), make(changed)
        assert a.index.equals(b.index)
        before = a.index < scaled.index[cut]
        np.testing.assert_allclose(a[before].to_numpy(), b[before].to_numpy(), atol=1e-6)
        assert not np.allclose(a[~before].to_numpy(), b[~before].to_numpy())


@pytest.fixture(scope="module")
def markov(returns) -> cl.MarkovSwitchingDetector:
    return cl.MarkovSwitchingDetector(2, em_iter=30).fit(returns.iloc[:300])


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(301, 590), factor=st.floats(0.2, 5.0), seed=st.integers(0, 1000))
def test_markov_and_hmm_filters_ignore_the_future_property(markov, hmm, returns, cut, factor, seed):
    changed = _change_after(returns, cut, factor, seed)
    for det in (markov, hmm):
        pd.testing.assert_frame_equal(det.filter(changed).iloc[:cut], det.filter(returns).iloc[:cut])


# ------------------------------------------------------------------ a label is known after its bar
def test_knn_vote_refuses_a_delay_that_lets_a_bar_see_its_own_label(returns):
    true = pd.Series(np.where((np.arange(len(returns)) // 100) % 2 == 0, "calm", "stressed"), index=returns.index)
    with pytest.raises(ValueError, match="its own label"):
        cl.KNNRegimeDetector(k=10, label_delay=0)
    keys = _keys(returns)
    with pytest.raises(ValueError, match="not after its own bar"):
        cl.KNNRegimeDetector(k=10, label_delay=1).fit(keys, true, available_at=keys.index)
    # the smallest delay allowed: flipping bar t's own label never moves the vote at t
    det = cl.KNNRegimeDetector(k=10, label_delay=1).fit(keys, true)
    flipped = true.copy()
    t = 400
    flipped.iloc[t] = "calm" if true.iloc[t] == "stressed" else "stressed"
    again = cl.KNNRegimeDetector(k=10, label_delay=1).fit(keys, flipped)
    pd.testing.assert_frame_equal(det.filter(keys.iloc[: t + 1]), again.filter(keys.iloc[: t + 1]))


# ------------------------------------------------------------------ annualised by the bar frequency
def test_state_summary_and_drawdown_labels_annualise_by_the_bar_frequency():
    rng = np.random.default_rng(3)
    n = 2000
    hourly = pd.date_range("2024-01-01", periods=n, freq="h")  # a 24/7 market: 8760 bars a year
    per_bar = 0.56 / np.sqrt(24 * 365)  # 56% a year
    r = pd.Series(rng.standard_normal(n) * per_bar, index=hourly)
    det = cl.HMMRegimeDetector(1, seed=0).fit(r)
    assert det.state_summary()["ann_vol"].iloc[0] == pytest.approx(0.56, rel=0.05)  # 252 gave 9.5%
    assert det.state_summary(periods=252.0)["ann_vol"].iloc[0] == pytest.approx(0.56 * np.sqrt(252 / 8760), rel=0.05)
    close = pd.Series(100 * np.exp(np.cumsum(r.to_numpy())), index=hourly)
    lab = cl.label_drawdown_regimes(close)
    assert (lab.iloc[300:] != "calm").mean() > 0.9  # 56% volatility is never calm (high_vol = 25%)
    daily = cl.HMMRegimeDetector(1, seed=0).fit(pd.Series(r.to_numpy(), index=pd.bdate_range("2000-01-03", periods=n)))
    assert daily.state_summary()["ann_vol"].iloc[0] == pytest.approx(per_bar * np.sqrt(252), rel=0.05)
    with pytest.raises(ValueError, match="periods="):
        cl.HMMRegimeDetector(1, seed=0).fit(pd.Series(r.to_numpy())).state_summary()


def test_bounded_scores_get_intervals_inside_their_bounds():
    """Balanced accuracy near 1 over three seeds: the t interval would reach past 1; it is clipped and says so."""
    table = pd.DataFrame({"market": "m", "detector": "d", "seed": [0, 1, 2],
                          "balanced_accuracy": [0.99, 0.80, 0.97], "ari": [0.99, 0.60, 0.95],
                          "sharpe": [2.0, -1.0, 4.0]})
    bal = cl.summarise_seeds(table, "balanced_accuracy").iloc[0]
    ari = cl.summarise_seeds(table, "ari").iloc[0]
    assert bal["high"] == 1.0 and bal["clipped"] and 0 <= bal["low"] <= bal["mean"]
    assert ari["high"] == 1.0 and ari["clipped"] and ari["low"] >= -0.5
    sharpe = cl.summarise_seeds(table, "sharpe").iloc[0]  # unbounded: not clipped
    assert not sharpe["clipped"] and sharpe["low"] < -1.0
    mean, lo, hi = cl.seed_interval([0.99, 0.80, 0.97], bounds=(0.0, 1.0))
    assert hi == 1.0 and lo < mean
