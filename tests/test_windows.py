"""Windows, scaler, splits and folds: shapes, times, purge gaps, and causality under a changed future."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from course_lib import (
    DataError,
    FeatureConfig,
    FeatureScaler,
    chronological_split,
    compute_features,
    forward_log_return,
    make_windows,
    prepare_dataset,
    walk_forward_folds,
)

SMALL = FeatureConfig(vol_window=5, volume_window=5, rsi_window=5, momentum_window=3, trend_window=10)


def make_ohlcv(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[100.0, close[:-1]]
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, n))
    idx = pd.bdate_range("2015-01-01", periods=n, name="time")
    return pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": rng.lognormal(10, 0.5, n)},
        index=idx,
    )


def change_future(df: pd.DataFrame, T: pd.Timestamp, seed: int = 7) -> pd.DataFrame:
    """Multiply every bar after T by random noise (whole rows, so high >= low still holds)."""
    rng = np.random.default_rng(seed)
    out = df.copy()
    after = out.index > T
    k = int(after.sum())
    out.loc[after, ["open", "high", "low", "close"]] = out.loc[after, ["open", "high", "low", "close"]].mul(
        np.exp(rng.normal(0, 0.3, k)), axis=0
    )
    out.loc[after, "volume"] = out.loc[after, "volume"] * rng.uniform(0.1, 10, k)
    return out


# ---------------------------------------------------------------------------------------------- windows


@pytest.mark.parametrize("horizon", [1, 3])
def test_make_windows_layout_and_times(horizon):
    df = make_ohlcv(120)
    feats = compute_features(df, SMALL)
    target = forward_log_return(df["close"], horizon).reindex(feats.index)
    seq_len = 8
    ws = make_windows(feats, target, seq_len, horizon)
    n = len(feats)
    assert ws.X.shape == (n - seq_len + 1 - horizon, seq_len, feats.shape[1]) and ws.X.dtype == np.float32
    assert (
        ws.feature_names == tuple(feats.columns) and ws.n_features == feats.shape[1] and len(ws) == len(ws.y)
    )
    values = feats.to_numpy(np.float32)
    for i in (0, 5, len(ws) - 1):
        e = ws.end_pos[i]
        np.testing.assert_array_equal(ws.X[i][-1], values[e])  # the window ends at row end_pos
        np.testing.assert_array_equal(ws.X[i], values[e - seq_len + 1 : e + 1])
        assert ws.end_time[i] == feats.index[e]
        assert ws.available_at[i] == feats.index[e + horizon]  # label known h bars later
        assert ws.y[i] == pytest.approx(
            np.log(df["close"].loc[feats.index[e + horizon]] / df["close"].loc[feats.index[e]])
        )
    assert (ws.available_at > ws.end_time).all()
    # int64 *nanoseconds* even though pandas 3 built this index in microseconds
    assert feats.index.unit == "us"
    np.testing.assert_array_equal(ws.end_time_ns(), [t.value for t in ws.end_time])
    np.testing.assert_array_equal(ws.available_at_ns(), [t.value for t in ws.available_at])
    assert ws.available_at[0].year == 2015


def test_make_windows_keeps_unlabelled_tail_on_request():
    df = make_ohlcv(80)
    feats = compute_features(df, SMALL)
    target = forward_log_return(df["close"], 2).reindex(feats.index)
    ws = make_windows(feats, target, 5, 2, drop_unlabeled=False)
    assert len(ws) == len(feats) - 4
    assert np.isnan(ws.y[-2:]).all() and ws.available_at[-2:].isna().all()
    assert (ws.available_at_ns()[-2:] == np.iinfo(np.int64).max).all()  # never available
    assert ws.end_time[-1] == feats.index[-1]


def test_make_windows_errors():
    feats = compute_features(make_ohlcv(60), SMALL)
    with pytest.raises(DataError, match="seq_len"):
        make_windows(feats, None, 0)
    with pytest.raises(DataError, match="only"):
        make_windows(feats, None, len(feats) + 1)
    bad = feats.copy()
    bad.iloc[3, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        make_windows(bad, None, 5)


def test_make_windows_refuses_a_target_built_with_another_horizon():
    df = make_ohlcv(120)
    feats = compute_features(df, SMALL)
    target = forward_log_return(df["close"], 5).reindex(feats.index)
    with pytest.raises(DataError, match=r"horizon=1 but the target was built with horizon=5.*look-ahead"):
        make_windows(feats, target, 8)  # default horizon=1 would release 5-bar labels 4 bars early
    with pytest.raises(DataError, match="later than it is known"):
        make_windows(feats, target, 8, horizon=7)
    ws = make_windows(feats, target, 8, horizon=5)  # the matching horizon still works
    assert ws.horizon == 5 and ws.available_at[0] == feats.index[ws.end_pos[0] + 5]
    # a target without a recorded horizon (built by hand) is taken at its word
    plain = pd.Series(target.to_numpy(), index=target.index)
    assert len(make_windows(feats, plain, 8, horizon=1)) == len(feats) - 8 + 1 - 5
    with pytest.raises(DataError, match="horizon must be >= 1"):
        make_windows(feats, None, 8, horizon=0)


def test_a_target_that_lost_its_recorded_horizon_needs_an_explicit_one():
    # pandas drops target.attrs when the target goes through a DataFrame column: the guard used to fall
    # silent and a 5-bar target passed as horizon 1, releasing each label 4 bars early
    df = make_ohlcv(120)
    feats = compute_features(df, SMALL)
    target = forward_log_return(df["close"], 5).reindex(feats.index)
    for lost in (feats.assign(y=target)["y"], pd.DataFrame({"y": target})["y"]):
        assert "horizon" not in lost.attrs
        with pytest.raises(DataError, match=r"pass horizon=h.*does not record it.*look-ahead"):
            make_windows(feats, lost, 8)
        ws = make_windows(feats, lost, 8, horizon=5)
        assert ws.horizon == 5 and (ws.available_at == feats.index[ws.end_pos + 5]).all()
    assert make_windows(feats, None, 8).horizon == 1  # no target: no label to release
    assert make_windows(feats, forward_log_return(df["close"]).reindex(feats.index), 8).horizon == 1


def test_windowset_subset():
    df = make_ohlcv(100)
    ds = prepare_dataset(df, seq_len=6, feature_config=SMALL)
    ws = ds.windows
    idx = np.array([0, 3, 7])
    sub = ws.subset(idx)
    np.testing.assert_array_equal(sub.X, ws.X[idx])
    assert list(sub.end_time) == [ws.end_time[i] for i in idx]
    assert len(ws.subset(slice(2, 5))) == 3 and len(ws.subset(ws.y > 0)) == int((ws.y > 0).sum())


# ------------------------------------------------------------------------------------------------ scaler


def test_scaler_uses_train_rows_only_and_round_trips():
    feats = compute_features(make_ohlcv(200), SMALL)
    train = feats.iloc[:100]
    scaler = FeatureScaler(clip=None).fit(train)
    pd.testing.assert_series_equal(scaler.mean_, train.mean())
    out = scaler.transform(feats)
    np.testing.assert_allclose(out.iloc[:100].mean().to_numpy(), 0, atol=1e-5)
    np.testing.assert_allclose(out.iloc[:100].std(ddof=0).to_numpy(), 1, atol=1e-4)
    assert scaler.fitted_until_ == train.index[-1]
    state = json.loads(json.dumps(scaler.state_dict()))
    again = FeatureScaler.from_state_dict(state)
    pd.testing.assert_frame_equal(again.transform(feats), out)
    assert again.fitted_until_ == scaler.fitted_until_ == train.index[-1]
    del state["fitted_until"]  # a state saved before fitted_until was recorded still loads
    assert FeatureScaler.from_state_dict(state).fitted_until_ is None


def test_scaler_clips_and_errors():
    feats = compute_features(make_ohlcv(200), SMALL)
    scaler = FeatureScaler(clip=1.0).fit(feats.iloc[:50])
    out = scaler.transform(feats)
    assert out.abs().to_numpy().max() <= 1.0
    with pytest.raises(DataError, match="not fitted"):
        FeatureScaler().transform(feats)
    with pytest.raises(DataError, match="missing"):
        scaler.transform(feats.drop(columns=["rsi"]))
    with pytest.raises(DataError, match="at least 2"):
        FeatureScaler().fit(feats.iloc[:1])


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_non_finite_features_are_refused_naming_the_column_and_first_bar(bad):
    # an inf used to pass make_windows and make the scaler store mean=inf (the column became the clip value)
    feats = compute_features(make_ohlcv(120), SMALL)
    broken = feats.copy()
    broken.iloc[[30, 40], broken.columns.get_loc("range")] = bad
    first = re.escape(str(feats.index[30]))
    with pytest.raises(DataError, match=rf"make_windows: .*NaN or inf: column 'range' is {bad} at {first}"):
        make_windows(broken, None, 5)
    with pytest.raises(DataError, match=rf"FeatureScaler.fit: .*column 'range' is {bad} at {first}.*dropna"):
        FeatureScaler().fit(broken.iloc[:50])


# ------------------------------------------------------------------------------------------------ splits


@pytest.mark.parametrize(
    ("n", "gap", "val_frac"), [(100, 0, 0.15), (500, 7, 0.2), (1000, 70, 0.1), (300, 5, 0.0)]
)
def test_chronological_split_sorted_disjoint_purged(n, gap, val_frac):
    s = chronological_split(n, 0.6, val_frac, gap)
    parts = [p for p in (s.train, s.val, s.test) if len(p)]
    for p in parts:
        assert (np.diff(p) == 1).all()  # sorted, contiguous
    assert len(np.intersect1d(s.train, s.test)) == 0 and len(np.intersect1d(s.train, s.val)) == 0
    for a, b in zip(parts, parts[1:]):
        assert b[0] - a[-1] - 1 == gap  # exactly `gap` samples purged between consecutive parts
    assert s.train[0] == 0 and s.test[-1] == n - 1
    assert len(s.train) == int(n * 0.6)


def test_chronological_split_errors():
    with pytest.raises(DataError, match="too few"):
        chronological_split(10, 0.7, 0.15, gap=5)
    with pytest.raises(DataError, match="train_frac"):
        chronological_split(100, 0.9, 0.2)
    with pytest.raises(DataError, match="gap"):
        chronological_split(100, 0.7, 0.15, gap=-1)


def test_split_and_folds_refuse_a_gap_shorter_than_the_purge():
    with pytest.raises(DataError, match=r"gap=2 is shorter.*horizon 5 = 5"):
        chronological_split(500, gap=2, horizon=5)
    with pytest.raises(DataError, match=r"horizon 3 \+ seq_len 10 - 1 = 12"):
        chronological_split(500, gap=11, horizon=3, seq_len=10)
    with pytest.raises(DataError, match=r"gap=1 is shorter.*gap=4"):
        walk_forward_folds(500, 3, horizon=4)  # the default gap=1
    with pytest.raises(DataError, match="= 12"):
        walk_forward_folds(500, 3, val_size=20, gap=11, horizon=3, seq_len=10)
    with pytest.raises(DataError, match="without horizon"):
        chronological_split(500, gap=20, seq_len=10)
    assert chronological_split(500, gap=12, horizon=3, seq_len=10).gap == 12  # exactly enough is fine
    assert len(walk_forward_folds(500, 3, gap=4, horizon=4)) == 3
    assert chronological_split(500).gap == 1  # no horizon given: unchecked, as before
    with pytest.raises(DataError, match=r"gap=3 is shorter"):
        prepare_dataset(make_ohlcv(400), seq_len=10, horizon=2, gap=3, feature_config=SMALL)


def test_prepare_dataset_default_gap_purges_overlap():
    seq_len, h = 10, 3
    ds = prepare_dataset(make_ohlcv(400), seq_len=seq_len, horizon=h, feature_config=SMALL)
    assert ds.split.gap == h + seq_len - 1
    for a, b in ((ds.train, ds.val), (ds.val, ds.test)):
        last_label_bar = a.end_pos[-1] + h  # the last bar whose return is in a's labels
        first_input_bar = b.end_pos[0] - seq_len + 1  # the first bar b's inputs read
        assert first_input_bar > last_label_bar
        assert b.end_time[0] > a.available_at[-1]


# ------------------------------------------------------------------------------------------------- folds


@pytest.mark.parametrize(
    ("expanding", "val_size", "gap"), [(True, 0, 1), (True, 20, 5), (False, 10, 3), (False, 0, 0)]
)
def test_walk_forward_folds(expanding, val_size, gap):
    n, k, min_train = 600, 4, 150
    folds = walk_forward_folds(n, k, min_train=min_train, val_size=val_size, gap=gap, expanding=expanding)
    assert len(folds) == k
    tests = np.concatenate([f.test for f in folds])
    assert (np.diff(tests) == 1).all() and tests[-1] == n - 1  # test blocks tile the tail, in order
    for i, f in enumerate(folds):
        assert len(f.test) > 0 and (np.diff(f.train) == 1).all()
        before_test = f.val if val_size else f.train
        assert f.test[0] - before_test[-1] - 1 == gap
        if val_size:
            assert len(f.val) == val_size and f.val[0] - f.train[-1] - 1 == gap
        assert len(np.intersect1d(f.train, f.test)) == 0 and len(np.intersect1d(f.val, f.test)) == 0
        if expanding:
            assert f.train[0] == 0 and len(f.train) == min_train + i * len(folds[0].test)
        else:
            assert len(f.train) == min_train
        if i:
            assert f.test[0] == folds[i - 1].test[-1] + 1


def test_walk_forward_folds_errors():
    with pytest.raises(DataError, match="n_folds"):
        walk_forward_folds(100, 0)
    with pytest.raises(DataError, match="folds"):
        walk_forward_folds(20, 5, min_train=18)
    with pytest.raises(DataError, match="gap"):
        walk_forward_folds(100, 2, gap=-1)
    with pytest.raises(DataError, match="val_size"):
        walk_forward_folds(100, 2, val_size=-5)


# --------------------------------------------------------------------------------------------- causality


@pytest.mark.parametrize(("horizon", "seed"), [(1, 0), (5, 1)])
def test_prepare_dataset_is_causal(horizon, seed):
    """Change every price after T: nothing known at or before T may move (features, scaler, samples, split)."""
    df = make_ohlcv(500, seed=seed)
    seq_len = 12
    full = prepare_dataset(df, seq_len=seq_len, horizon=horizon, feature_config=SMALL)
    # T after the training period's last label, so the scaler's fit rows are all in the unchanged past
    T = full.train.available_at[-1] + pd.Timedelta(days=3)
    assert T < df.index[-1]
    moved = prepare_dataset(
        change_future(df, T, seed), seq_len=seq_len, horizon=horizon, feature_config=SMALL
    )

    past = full.features.index <= T
    pd.testing.assert_frame_equal(full.features.loc[past], moved.features.loc[past])
    assert not full.features.loc[~past].equals(moved.features.loc[~past])  # the change was real
    pd.testing.assert_series_equal(full.scaler.mean_, moved.scaler.mean_)
    pd.testing.assert_series_equal(full.scaler.std_, moved.scaler.std_)
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(full.split, name), getattr(moved.split, name))

    known = np.asarray(full.windows.available_at <= T)
    assert known.sum() > len(full.train)  # some validation samples are in the known past too
    np.testing.assert_array_equal(full.windows.X[known], moved.windows.X[known])
    np.testing.assert_array_equal(full.windows.y[known], moved.windows.y[known])
    np.testing.assert_array_equal(full.windows.end_time[known], moved.windows.end_time[known])
    np.testing.assert_array_equal(full.windows.available_at[known], moved.windows.available_at[known])
    # the first sample whose label needs a bar after T does move
    first_unknown = int(np.flatnonzero(~known)[0])
    assert full.windows.y[first_unknown] != moved.windows.y[first_unknown]


def test_windows_inputs_before_t_do_not_see_the_label_period():
    """A window ending at t reads no bar after t: changing bars after t leaves X unchanged but moves y."""
    df = make_ohlcv(200)
    feats = compute_features(df, SMALL)
    target = forward_log_return(df["close"], 2).reindex(feats.index)
    ws = make_windows(feats, target, 10, 2)
    i = 50
    t = ws.end_time[i]
    df2 = change_future(df, t)
    feats2 = compute_features(df2, SMALL)
    ws2 = make_windows(feats2, forward_log_return(df2["close"], 2).reindex(feats2.index), 10, 2)
    np.testing.assert_array_equal(ws.X[: i + 1], ws2.X[: i + 1])
    assert ws.y[i] != ws2.y[i]
