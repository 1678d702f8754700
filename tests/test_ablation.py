"""The ablation ladder: its shape, the causality of its retrieval arms and the arithmetic of its paired differences."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

import course_lib as cl
from course_lib.data.windows import WindowSet
from course_lib.model import MemoryTransformerConfig
from course_lib.training import TrainerConfig
from course_lib.training.ablation import ARMS, _cheap_arm, _raft_features, _score, compare_arms, raft_forecast

SEQ = 16


@pytest.fixture(scope="module")
def splits():
    market = cl.make_synthetic_market(n_bars=520, seed=3, config=cl.PLANTED_MARKET)
    return market, cl.prepare_dataset(market.ohlcv, seq_len=SEQ)


def mcfg(**kw) -> MemoryTransformerConfig:
    base = dict(input_dim=7, seq_len=SEQ, d_model=16, n_heads=2, n_layers=2, d_ff=24, key_dim=8, n_neighbors=8,
                key_bars=8)
    base.update(kw)
    return MemoryTransformerConfig(**base)


def test_compare_arms_shape_and_columns(splits):
    market, s = splits
    subsets = cl.motif_subsets(market, s.test)
    cmp = compare_arms(s.train, s.val, s.test, mcfg(), TrainerConfig(epochs=1, batch_size=64, progress=False,
                       device="cpu"), seeds=(0, 1), subsets=subsets, n_boot=100, progress=False)
    names = ["all", *subsets]
    assert list(cmp.summary.index) == [(a, n) for a in ARMS for n in names]
    assert {"accuracy", "diff", "seed_ci_low", "seed_ci_high", "boot_ci_low", "boot_ci_high"} <= set(cmp.summary)
    assert len(cmp.per_seed) == len(ARMS) * 2 * len(names)
    assert {"arm", "seed", "subset", "accuracy", "ic", "n"} <= set(cmp.per_seed)
    ref = cmp.summary.loc["no_memory"]
    assert (ref["diff"] == 0).all() and ref["seed_ci_low"].isna().all()
    other = cmp.summary.drop(index="no_memory", level="arm")
    assert (other["boot_ci_low"] <= other["boot_ci_high"]).all()
    for arm in ARMS:
        assert set(cmp.predictions[arm]) == {0, 1}
        assert len(cmp.predictions[arm][0]) == len(s.test)
    for arm in ("full", "attention_only", "blend_only", "no_memory"):
        assert "gate" in cmp.predictions[arm][0]
    assert cmp.predictions["full"][0]["gate"].notna().all()
    assert cmp.predictions["blend_only"][0]["blend"].notna().all()   # retrieval feeds the blend head only
    assert cmp.predictions["blend_only"][0]["gate"].isna().all()     # ... and no attention gate
    gates = cl.gate_by_subset(cmp, "full", contrast=("onset", "no_motif"))
    assert "onset - no_motif" in gates.index


def test_compare_arms_refuses_unknown_arm_and_missing_reference(splits):
    _, s = splits
    with pytest.raises(ValueError, match="unknown arm"):
        compare_arms(s.train, s.val, s.test, mcfg(), arms=("full", "lstm"), progress=False)
    with pytest.raises(ValueError, match="reference"):
        compare_arms(s.train, s.val, s.test, mcfg(), arms=("full", "ridge"), progress=False)


def _changed_after(w: WindowSet, cut: pd.Timestamp, rng: np.random.Generator) -> WindowSet:
    """``w`` with every outcome not yet known at ``cut`` (label available after it) replaced by noise."""
    y = np.asarray(w.y, np.float32).copy()
    late = np.asarray(w.available_at > cut)
    y[late] = rng.normal(scale=0.05, size=late.sum()).astype(np.float32)
    return WindowSet(w.X, y, w.end_time, w.available_at, w.end_pos, w.feature_names, w.horizon, w.seq_len)


@pytest.mark.parametrize("arm", ["knn_analog", "raft_linear"])
def test_retrieval_arms_are_causal(splits, arm):
    """Changing the test outcomes not yet known at T moves no prediction at or before T (online memory)."""
    _, s = splits
    cut = s.test.end_time[len(s.test) // 2]
    before = _cheap_arm(arm, s.train, s.val, s.test, mcfg(), online=True)
    after = _cheap_arm(arm, s.train, s.val, _changed_after(s.test, cut, np.random.default_rng(0)), mcfg(), online=True)
    early = before.index <= cut
    np.testing.assert_array_equal(before.loc[early, "pred_return"], after.loc[early, "pred_return"])
    assert not np.allclose(before.loc[~early, "pred_return"], after.loc[~early, "pred_return"]), "vacuous test"


def test_raft_never_retrieves_unresolved_windows(splits):
    _, s = splits
    r = raft_forecast(s.train, s.val, s.test, k=8, lookback=8, online=True)
    q = s.test.end_time_ns()[:, None]
    got = r.rows >= 0
    assert got.any()
    assert (r.memory_available_at[np.maximum(r.rows, 0)][got] <= np.broadcast_to(q, r.rows.shape)[got]).all()
    # in training too: every training window retrieves only training windows resolved by its own end
    _, rows = _raft_features(s.train, s.train, 8, 8, (0,), 0.1, 1.0)
    ok = rows >= 0
    avail = s.train.available_at_ns()[np.maximum(rows, 0)]
    assert (avail[ok] <= np.broadcast_to(s.train.end_time_ns()[:, None], rows.shape)[ok]).all()
    assert (rows[0] < 0).all()  # the first window has no resolved past


def _alternating(s, n: int) -> tuple[np.ndarray, WindowSet]:
    """The first ``n`` training windows relabelled up, down, up, ...: a test set whose hits are known exactly."""
    y = np.where(np.arange(n) % 2 == 0, 0.01, -0.01)
    w = s.train.subset(np.arange(n))
    return y, WindowSet(w.X, y.astype(np.float32), w.end_time, w.available_at, w.end_pos, w.feature_names, 1,
                        w.seq_len)


def _frame(sig: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"pred_return": sig, "direction_signal": sig})


def test_paired_difference_on_a_constructed_case(splits):
    """Arm A hits every window; arm B's hit rate per seed is known: diff, t-interval and bootstrap follow."""
    _, s = splits
    n = 200
    y, test = _alternating(s, n)
    miss = {0: 20, 1: 40, 2: 60}  # seed -> windows B gets wrong (the first ones)
    preds = {"a": {}, "b": {}}
    for seed, k in miss.items():
        preds["a"][seed] = _frame(y.copy())
        b = y.copy()
        b[:k] = -b[:k]
        preds["b"][seed] = _frame(b)
    first_half = np.arange(n) < n // 2
    cmp = _score(preds, test, ("a", "b"), (0, 1, 2), {"early": first_half}, "b", 500, 5)
    d = np.array([k / n for k in miss.values()])
    row = cmp.summary.loc[("a", "all")]
    assert row["diff"] == pytest.approx(d.mean())
    half = sps.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    assert row["seed_ci_low"] == pytest.approx(d.mean() - half)
    assert row["seed_ci_high"] == pytest.approx(d.mean() + half)
    assert row["boot_ci_low"] <= d.mean() <= row["boot_ci_high"]
    early = cmp.summary.loc[("a", "early")]
    assert early["diff"] == pytest.approx(np.mean([k / (n // 2) for k in miss.values()]))
    assert cmp.summary.loc[("b", "all"), "diff"] == 0.0
    # any two arms, reference or not: the opposite order flips the sign
    assert cmp.paired("b", "a")["diff"] == pytest.approx(-d.mean())


def test_ladder_table_plots_and_the_two_interval_reading(splits):
    import matplotlib

    matplotlib.use("Agg")
    _, s = splits
    n = 120
    y, test = _alternating(s, n)
    preds = {"no_memory": {}, "full": {}}
    for seed, k in {0: 10, 1: 20, 2: 30}.items():
        b = y.copy()
        b[:k] = -b[:k]
        preds["no_memory"][seed] = _frame(b)
        f = _frame(y.copy())
        f["gate"] = np.where(np.arange(n) < 20, 0.7, 0.5) + 0.01 * seed
        f["blend"] = np.where(np.arange(n) < 20, 0.2, 0.4)
        preds["full"][seed] = f
    early = np.arange(n) < 20
    cmp = _score(preds, test, ("no_memory", "full"), (0, 1, 2), {"early": early, "late": ~early}, "no_memory", 300, 5)
    table = cl.ladder_table(cmp)
    assert table.loc["no_memory"].iloc[1] == "reference" and table.shape == (2, 6)
    axes = cl.plot_ladder(cmp.summary, subsets=("all", "early"))
    assert len(axes) == 2
    gates = cl.gate_by_subset(cmp, "full", contrast=("early", "late"))
    row = gates.loc["early - late"]
    assert row["mean"] == pytest.approx(0.2) and row["seed_ci_low"] <= 0.2 <= row["seed_ci_high"]
    assert row["boot_ci_low"] > 0
    assert cl.plot_gate_by_window(gates, start=0.5) is not None
    blend = cl.gate_by_subset(cmp, "full", contrast=("early", "late"), column="blend")
    assert blend.loc["early - late", "mean"] == pytest.approx(-0.2) and blend.loc["early - late", "boot_ci_high"] < 0
    with pytest.raises(ValueError, match="no 'gate' column"):
        cl.gate_by_subset(cmp, "no_memory")
    with pytest.raises(ValueError, match="column='weights'"):
        cl.gate_by_subset(cmp, "full", column="weights")
    text = cl.read_two_intervals(0.05, 0.01, 0.09, -0.02, 0.08)
    assert "only the interval over seeds lies above zero" in text
    assert "both intervals lie below zero" in cl.read_two_intervals(-0.05, -0.09, -0.01, -0.08, -0.02)
    assert "no interval excludes zero" in cl.read_two_intervals(0.0, -0.01, 0.01, -0.02, 0.08)
    assert "no conclusion" in cl.read_two_intervals(-0.04, -0.04, -0.04 + 1e-15, -0.04, -0.04)
    assert "opposite sides" in cl.read_two_intervals(0.0, 0.01, 0.02, -0.03, -0.02)


def test_block_bootstrap_subset_ci_resamples_the_whole_period():
    from course_lib.stats import block_bootstrap_subset_ci

    x = np.r_[np.ones(50), np.zeros(50)]
    mask = np.zeros(100, bool)
    mask[::10] = True
    lo, hi = block_bootstrap_subset_ci(x, mask, block=10, n_boot=300)
    assert 0 <= lo < 0.5 < hi <= 1
    assert block_bootstrap_subset_ci(x, np.zeros(100, bool), block=10) != block_bootstrap_subset_ci(x, mask, block=10)
    with pytest.raises(ValueError, match="one length"):
        block_bootstrap_subset_ci(x, mask[:50], block=10)


def test_planted_direction_names_the_motif_that_just_ended_and_nothing_else(splits):
    market, s = splits
    test = s.test
    d = cl.planted_direction(market, test)
    onset = cl.motif_subsets(market, test)["onset"]
    assert set(np.unique(d)) <= {-1, 0, 1}
    assert ((d != 0) == onset).all()       # an oracle speaks exactly on the onset windows
    pos = market.ohlcv.index.get_indexer(test.end_time)
    for i in np.flatnonzero(onset):        # ... and says what was planted for the motif that ended there
        m = market.motifs[(pos[i] - market.motifs["end_pos"] >= 0) & (pos[i] - market.motifs["end_pos"] < 3)]
        assert d[i] == int(m["direction"].iloc[0])
    # the planted aftermath really drifts that way: the oracle beats a coin on the onsets of a strong market
    strong = cl.make_synthetic_market(n_bars=3000, seed=1, config=cl.PLANTED_MARKET)
    sp = cl.prepare_dataset(strong.ohlcv, seq_len=SEQ)
    o, dd = cl.motif_subsets(strong, sp.test)["onset"], cl.planted_direction(strong, sp.test)
    assert np.mean(np.sign(sp.test.y[o]) == dd[o]) > 0.6
