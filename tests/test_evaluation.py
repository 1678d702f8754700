"""Walk-forward evaluation: per-fold scaling and training on the past only, baselines on the same bars."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from course_lib import (
    BacktestConfig,
    DataError,
    WalkForwardConfig,
    cost_sensitivity,
    load_sample,
    walk_forward_evaluate,
)
from course_lib.backtest.evaluation import _fold_windows
from course_lib.data.features import compute_features, forward_log_return
from course_lib.data.windows import make_windows, walk_forward_folds

NO_MODEL = ("buy_and_hold", "momentum", "knn_analog", "knn_similarity")
TINY_MODEL = dict(d_model=8, n_heads=2, n_layers=1, d_ff=16, key_dim=8, n_neighbors=4)


def _perturb_after(df: pd.DataFrame, T: pd.Timestamp) -> pd.DataFrame:
    out = df.copy()
    later = out.index > T
    factor = np.linspace(1.02, 1.4, int(later.sum()))[:, None]
    out.loc[later, ["open", "high", "low", "close"]] = (
        out.loc[later, ["open", "high", "low", "close"]].to_numpy() * factor
    )
    return out


@pytest.fixture(scope="module")
def prices():
    return load_sample("sp500").iloc[-900:]


def test_baselines_walk_forward_table_and_causality(prices):
    cfg = WalkForwardConfig(n_folds=3, seq_len=16, strategies=NO_MODEL, knn_lookback=8,
                            backtest=BacktestConfig(n_boot=200))  # fmt: skip
    res = walk_forward_evaluate(prices, cfg, progress=False)
    assert list(res.table.index) == list(NO_MODEL)
    for col in ("sharpe", "sharpe_ci_low", "sharpe_ci_high", "max_drawdown", "turnover"):
        assert res.table[col].notna().all()
    assert (res.table.sharpe_ci_low <= res.table.sharpe_ci_high).all()
    # every strategy trades the same decision times: the concatenated, contiguous test blocks
    times = [p.index for p in res.positions.values()]
    assert all(t.equals(times[0]) for t in times)
    pos_in_prices = prices.index.get_indexer(times[0])
    assert (np.diff(pos_in_prices) == 1).all()
    assert len(res.per_fold) == 3 * len(NO_MODEL)
    assert res.summary().shape[1] == len(NO_MODEL)
    # the future does not move the past
    T = times[0][len(times[0]) // 2]
    res2 = walk_forward_evaluate(_perturb_after(prices, T), cfg, progress=False)
    for name in NO_MODEL:
        a, b = res.positions[name], res2.positions[name]
        pd.testing.assert_series_equal(a.loc[:T], b.loc[:T])
    assert not res.positions["momentum"].loc[T:].equals(res2.positions["momentum"].loc[T:])


def test_scaler_is_fitted_on_the_folds_training_bars_only(prices):
    cfg = WalkForwardConfig(seq_len=16)
    feats = compute_features(prices)
    target = forward_log_return(prices["close"]).reindex(feats.index)
    raw = make_windows(feats, target, 16)
    fold = walk_forward_folds(len(raw), 3, min_train=200, val_size=30, gap=16)[1]
    _, scaler = _fold_windows(feats, target, raw.end_pos, fold, cfg)
    last_train_bar = feats.index[raw.end_pos[fold.train[-1]]]
    assert scaler.fitted_until_ == last_train_bar
    pd.testing.assert_series_equal(scaler.mean_, feats.loc[:last_train_bar].mean())


def test_models_retrained_per_fold_do_not_see_the_future(prices):
    data = prices.iloc[-500:]
    cfg = WalkForwardConfig(
        n_folds=1, seq_len=8, knn_lookback=4, knn_k=8, model=TINY_MODEL, trainer=dict(epochs=1, batch_size=64),
        strategies=("transformer", "memory_transformer", "memory_agreement"), backtest=BacktestConfig(n_boot=0),
    )  # fmt: skip
    res = walk_forward_evaluate(data, cfg, progress=False)
    assert set(res.table.index) == {"transformer", "memory_transformer", "memory_agreement"}
    assert {(0, "transformer"), (0, "memory_transformer")} == set(res.histories)
    pred = res.predictions["memory_transformer"]
    assert pred["memory_return"].notna().all() and pred["fold"].eq(0).all()
    assert res.predictions["transformer"]["memory_return"].isna().all()
    T = res.positions["transformer"].index[len(pred) // 2]
    res2 = walk_forward_evaluate(_perturb_after(data, T), cfg, progress=False)
    for name in res.positions:
        pd.testing.assert_series_equal(res.positions[name].loc[:T], res2.positions[name].loc[:T])


def test_cost_sensitivity_and_errors(prices):
    idx = prices.index[-300:]
    positions = {"flip": pd.Series(np.where(np.arange(300) % 2, 1.0, -1.0), index=idx),
                 "hold": pd.Series(1.0, index=idx)}  # fmt: skip
    table = cost_sensitivity(positions, prices, costs_bps=(0, 10))
    flip = table[table.strategy == "flip"].set_index("cost_bps")
    hold = table[table.strategy == "hold"].set_index("cost_bps")
    assert flip.loc[10, "sharpe"] < flip.loc[0, "sharpe"] - 1  # trading every bar: costs eat the edge
    assert hold.loc[10, "sharpe"] == pytest.approx(hold.loc[0, "sharpe"], abs=0.01)  # one entry only
    with pytest.raises(ValueError, match="unknown strategies"):
        WalkForwardConfig(strategies=("magic",))
    with pytest.raises(DataError, match="folds"):
        walk_forward_evaluate(prices.iloc[-150:], WalkForwardConfig(n_folds=5, seq_len=32), progress=False)


def test_knn_memory_contents_are_stated_and_configurable(prices):
    """By default the kNN searches train+val windows (the transformer's memory holds train only);
    knn_memory="train" makes the two memories like-for-like, and the result says which it was."""
    from course_lib import KNNAnalogForecaster

    base = dict(n_folds=2, seq_len=16, strategies=("knn_analog",), knn_lookback=8,
                backtest=BacktestConfig(n_boot=0))  # fmt: skip
    default = walk_forward_evaluate(prices, WalkForwardConfig(**base), progress=False)
    like = walk_forward_evaluate(prices, WalkForwardConfig(**base, knn_memory="train"), progress=False)
    assert "validation" in default.memory_contents["knn_analog"]
    assert like.memory_contents["knn_analog"].startswith("training windows only")
    cfg = like.config
    features = compute_features(prices, cfg.feature_config)
    target = forward_log_return(prices["close"], cfg.horizon).reindex(features.index)
    raw = make_windows(features, target, cfg.seq_len, cfg.horizon)
    fold = like.folds[0]
    assert len(fold.val) > 0
    windows, _ = _fold_windows(features, target, raw.end_pos, fold, cfg)
    test = windows.subset(fold.test)
    train_only = KNNAnalogForecaster(k=cfg.knn_k, lookback=cfg.knn_lookback).fit(windows.subset(fold.train))
    got = like.predictions["knn_analog"].query("fold == 0").drop(columns="fold")
    pd.testing.assert_frame_equal(got, train_only.predict(test))
    # the default memory also holds the validation windows, and they change what the kNN predicts
    both = np.concatenate([fold.train, fold.val])
    with_val = KNNAnalogForecaster(k=cfg.knn_k, lookback=cfg.knn_lookback).fit(windows.subset(both))
    got_default = default.predictions["knn_analog"].query("fold == 0").drop(columns="fold")
    pd.testing.assert_frame_equal(got_default, with_val.predict(test))
    assert not np.allclose(got_default["pred_return"], got["pred_return"])
    with pytest.raises(ValueError, match="knn_memory"):
        WalkForwardConfig(knn_memory="everything")


def test_walk_forward_with_several_seeds_keeps_each_seeds_positions(prices):
    data = prices.iloc[-500:]
    cfg = WalkForwardConfig(
        n_folds=1, seq_len=8, model=TINY_MODEL, trainer=dict(epochs=1, batch_size=64), seeds=(0, 1),
        strategies=("transformer", "memory_transformer"), backtest=BacktestConfig(n_boot=0),
    )  # fmt: skip
    res = walk_forward_evaluate(data, cfg, progress=False)
    assert set(res.seed_positions) == {(s, k) for s in ("transformer", "memory_transformer") for k in (0, 1)}
    for name in ("transformer", "memory_transformer"):
        mean = (res.seed_positions[(name, 0)] + res.seed_positions[(name, 1)]) / 2
        pd.testing.assert_series_equal(res.positions[name], mean, check_names=False)
    assert {(0, "transformer", 0), (0, "transformer", 1)} <= set(res.histories)


def test_paired_strategy_difference_and_cost_decomposition(prices):
    from course_lib import cost_decomposition, paired_strategy_difference

    idx = prices.index[-300:]
    rng = np.random.default_rng(0)
    a = pd.Series(rng.normal(0.001, 0.01, 300), index=idx)
    same = paired_strategy_difference(a, a, block=5, n_boot=200)
    assert same["sharpe_diff"] == 0.0 and same["sharpe_ci_low"] == same["sharpe_ci_high"] == 0.0
    shifted = paired_strategy_difference(a + 0.001, a, block=5, n_boot=200)
    assert shifted["mean_ci_low"] > 0 and shifted["sharpe_ci_low"] > 0  # a sure gain on every bar
    flip = pd.Series(np.where(np.arange(300) % 2, 1.0, -1.0), index=idx)
    table = cost_decomposition({"flip": flip}, prices, cost_bps=10)
    assert list(table.index) == ["flip", "flip long/flat"]
    row = table.loc["flip"]
    assert row["cost_drag"] == pytest.approx(row["turnover"] * 10 / 1e4)
    assert row["sharpe"] < row["sharpe_zero_cost"]
    assert table.loc["flip long/flat", "long_share"] == 1.0
