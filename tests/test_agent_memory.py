"""AgentMemory (lesson 08): store, hybrid search, decay, outcomes, tiers, cleanup, reliability, causality."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sqlite3
import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import course_lib as cl

T0 = pd.Timestamp("2024-01-01")
DAY = pd.Timedelta("1D")


def _mem(**kw) -> cl.AgentMemory:
    return cl.AgentMemory(":memory:", **kw)


def _search(mem, *args, **kw):
    kw.setdefault("touch", False)
    return mem.search(*args, **kw)


# --- basics ------------------------------------------------------------------------------------------------
def test_add_search_columns_and_context_manager(tmp_path):
    with cl.AgentMemory(tmp_path / "m.sqlite") as mem:
        i = mem.add("momentum", "observation", "gap down after an earnings miss", now=T0, importance=2.0,
                    vector=[1.0, 0.0, 0.0], symbol="AAPL", metadata={"note": 1})
        assert len(mem) == 1 and isinstance(i, int)
        res = mem.search("earnings", vector=[1, 0, 0], now=T0 + DAY, k=5)
        for col in ("id", "agent", "kind", "text", "bm25", "cosine", "relevance", "importance", "recency",
                    "importance_n", "relevance_n", "recency_n", "score", "pnl", "tier", "access_count"):
            assert col in res.columns
        assert res.loc[0, "id"] == i and res.loc[0, "metadata"] == {"note": 1}
        assert res.loc[0, "recency"] == pytest.approx(0.5 ** (1 / 3))  # short tier: 3-day half-life
    with pytest.raises(cl.AgentMemoryError, match="closed"):
        len(mem)


def test_newer_item_outranks_older_all_else_equal():
    mem = _mem()
    old = mem.add("a", "observation", "rate hike surprise", now=T0, importance=1.0, vector=[1, 0])
    new = mem.add("a", "observation", "rate hike surprise", now=T0 + 2 * DAY, importance=1.0, vector=[1, 0])
    for kw in ({"text": "rate hike"}, {"vector": [1, 0]}, {}):
        text = kw.pop("text", None)
        res = _search(mem, text, now=T0 + 5 * DAY, k=2, **kw)
        assert res["id"].tolist() == [new, old]
        assert res.loc[0, "recency"] > res.loc[1, "recency"]
    # equal ages too: the tie goes to the newer id
    same = mem.add("a", "observation", "rate hike surprise", now=T0 + 2 * DAY, importance=1.0, vector=[1, 0])
    assert _search(mem, "rate hike", now=T0 + 5 * DAY, k=1)["id"].item() == same


def test_decay_minmax_and_hybrid_score():
    assert cl.decay(0, 3) == 1.0
    assert cl.decay(3, 3) == pytest.approx(0.5) and cl.decay(6, 3) == pytest.approx(0.25)
    assert cl.decay(pd.Timedelta("6D"), "3D") == pytest.approx(0.25)
    with pytest.raises(ValueError, match="negative age"):
        cl.decay(-1, 3)
    assert cl.minmax([2.0, 4.0, 3.0]).tolist() == [0.0, 1.0, 0.5]
    assert cl.minmax([5.0, 5.0]).tolist() == [1.0, 1.0]
    s = cl.hybrid_scores([1, 3], [0.2, 0.1], [0.5, 0.9], {"importance": 2.0})
    assert s["score"].tolist() == pytest.approx([0 * 2 + 1 + 0, 2 * 1 + 0 + 1])
    mem = _mem()
    for d, imp in ((0, 5.0), (1, 1.0), (2, 3.0)):
        mem.add("a", "signal", "oil spike", now=T0 + d * DAY, importance=imp)
    res = _search(mem, "oil", now=T0 + 3 * DAY, k=3, weights={"relevance": 0.0})
    assert res["importance_n"].min() == 0 and res["importance_n"].max() == 1
    assert np.allclose(res["score"], res["importance_n"] + res["recency_n"])


def test_filters_by_agent_kind_and_time():
    mem = _mem()
    a = mem.add("momentum", "signal", "breakout", now=T0)
    mem.add("analog", "signal", "breakout", now=T0)
    mem.add("momentum", "reflection", "breakout", now=T0)
    future = mem.add("momentum", "signal", "breakout", now=T0 + 10 * DAY)
    res = _search(mem, "breakout", now=T0 + DAY, agents=["momentum"], kinds="signal")
    assert res["id"].tolist() == [a]
    assert future not in _search(mem, "breakout", now=T0 + DAY)["id"].tolist()
    view = mem.namespace("analog")
    view.add("observation", "quiet tape", now=T0)
    assert set(view.search(now=T0 + DAY, mine=True)["agent"]) == {"analog"}
    assert len(view.search(now=T0 + DAY)) == 4
    with pytest.raises(cl.InvalidItemError, match="unknown kind"):
        mem.search("x", now=T0, kinds=["gossip"])


def test_times_accept_anything_pandas_does():
    mem = _mem()
    mem.add("a", "observation", "x", now="2024-01-01 12:00")
    mem.add("a", "observation", "x", now=pd.Timestamp("2024-01-01 13:00", tz="Europe/Berlin"))
    mem.add("a", "observation", "x", now=np.datetime64("2024-01-01T14:00"))
    assert len(_search(mem, "x", now="2024-01-01 14:00")) == 3
    with pytest.raises(ValueError, match="required"):
        mem.search("x", now=None)
    with pytest.raises(ValueError, match="NaT"):
        mem.add("a", "observation", "x", now=pd.NaT)


# --- outcomes --------------------------------------------------------------------------------------------
def test_outcome_is_invisible_before_it_is_known():
    mem = _mem()
    d = mem.record_decision("momentum", "long SPY on breakout", now=T0, direction=1, confidence=0.7,
                            regime="calm", symbol="SPY")
    before = _search(mem, "SPY breakout", now=T0 + DAY, k=10)
    mem.resolve(d, -0.02, at=T0 + 2 * DAY)
    early = _search(mem, "SPY breakout", now=T0 + DAY, k=10)
    pd.testing.assert_frame_equal(before, early)
    assert early["kind"].tolist() == ["decision"] and np.isnan(early.loc[0, "pnl"])
    assert np.isnan(mem.decisions(now=T0 + DAY).loc[0, "pnl"])
    late = _search(mem, "SPY breakout", now=T0 + 2 * DAY, k=10)
    assert set(late["kind"]) == {"decision", "outcome"}
    assert (late["pnl"] == -0.02).all()
    assert mem.decisions(now=T0 + 2 * DAY).loc[0, "pnl"] == -0.02
    with pytest.raises(cl.AgentMemoryError, match="already resolved"):
        mem.resolve(d, 0.01, at=T0 + 3 * DAY)
    d2 = mem.record_decision("momentum", "short", now=T0 + 5 * DAY, direction=-1)
    with pytest.raises(cl.InvalidItemError, match="cannot be known earlier"):
        mem.resolve(d2, 0.01, at=T0 + 4 * DAY)
    with pytest.raises(cl.AgentMemoryError, match="no pending decision"):
        mem.resolve(12345, 0.01, at=T0 + 9 * DAY)
    with pytest.raises(cl.InvalidItemError, match="finite"):
        mem.resolve(d2, float("nan"), at=T0 + 9 * DAY)


def test_outcome_stats_by_agent_kind_regime():
    mem = _mem()
    plan = [("mom", "calm", 0.01), ("mom", "calm", -0.01), ("mom", "volatile", 0.02), ("rev", "calm", 0.03)]
    for k, (agent, regime, pnl) in enumerate(plan):
        d = mem.record_decision(agent, "trade", now=T0 + k * DAY, direction=1, regime=regime)
        mem.resolve(d, pnl, at=T0 + (k + 1) * DAY)
    mem.record_decision("mom", "pending", now=T0 + 3 * DAY, direction=1, regime="calm", kind="signal")
    stats = mem.outcome_stats(now=T0 + 10 * DAY).set_index(["agent", "kind", "regime"])
    assert stats.loc[("mom", "decision", "calm"), ["wins", "losses"]].tolist() == [1, 1]
    assert stats.loc[("mom", "decision", "calm"), "win_rate"] == 0.5
    assert stats.loc[("rev", "decision", "calm"), "mean_pnl"] == pytest.approx(0.03)
    assert len(stats) == 3  # the pending signal is not an outcome yet
    early = mem.outcome_stats(now=T0 + 2 * DAY, by=["agent"])
    assert early.set_index("agent").loc["mom", "n"] == 2


# --- tiers, decay, access, cleanup -----------------------------------------------------------------------
def test_tier_half_lives_and_maintenance():
    mem = _mem()
    important = mem.add("a", "lesson", "never fade a squeeze", now=T0, importance=9.0)
    used = mem.add("a", "observation", "opening drive fails", now=T0, importance=1.0)
    faded = mem.add("a", "observation", "nothing happened", now=T0, importance=1.0)
    for d in (1, 2):
        mem.search("opening drive", now=T0 + d * DAY, k=1)
    changes = mem.maintain(now=T0 + 3 * DAY).set_index("id")
    assert changes.loc[important, "to_tier"] == "medium" and changes.loc[used, "to_tier"] == "medium"
    assert changes.loc[used, "reason"] == "accessed often"
    # the change counts from the next instant: a later search decays it with the medium half-life (90 days)
    res = _search(mem, "opening drive", now=T0 + 4 * DAY, k=1)
    assert res.loc[0, "tier"] == "medium" and res.loc[0, "recency"] == pytest.approx(0.5 ** (4 / 90))
    assert _search(mem, "opening drive", now=T0 + 3 * DAY, k=1).loc[0, "tier"] == "short"
    later = mem.maintain(now=T0 + 40 * DAY).set_index("id")
    assert later.loc[faded, "to_tier"] == "deleted" and faded not in set(mem.items()["id"])
    assert later.loc[important, "to_tier"] == "long"  # importance 9 >= the medium tier's 8
    gone = mem.maintain(now=T0 + 4000 * DAY)
    assert set(gone["to_tier"]) <= {"medium", "short", "deleted"}


def test_access_reinforces_with_age_from_accessed():
    mem = _mem(config=cl.AgentMemoryConfig(age_from="accessed"))
    i = mem.add("a", "observation", "fed minutes hawkish", now=T0)
    first = mem.search("fed minutes", now=T0 + 6 * DAY)  # touches the item at day 6
    again = mem.search("fed minutes", now=T0 + 6 * DAY)
    assert first.loc[0, "recency"] == pytest.approx(0.25) == again.loc[0, "recency"]  # same time, same answer
    later = _search(mem, "fed minutes", now=T0 + 9 * DAY)
    assert later.loc[0, "id"] == i and later.loc[0, "recency"] == pytest.approx(0.5)  # 3 days since the access
    assert later.loc[0, "access_count"] == 2
    plain = _mem()
    plain.add("a", "observation", "fed minutes hawkish", now=T0)
    plain.search("fed minutes", now=T0 + 6 * DAY)
    assert _search(plain, "fed minutes", now=T0 + 9 * DAY).loc[0, "recency"] == pytest.approx(0.125)


def test_cleanup_reports_what_it_removed_and_keeps_pending_decisions():
    mem = _mem()
    weak = mem.add("a", "observation", "old noise", now=T0, importance=0.5)
    strong = mem.add("a", "observation", "old but vital", now=T0, importance=1000.0)
    pending = mem.record_decision("a", "open trade", now=T0, direction=1, importance=0.1)
    for d in range(5):
        mem.add("a", "signal", f"signal {d}", now=T0 + (20 + d) * DAY, importance=5.0)
    removed = mem.cleanup(now=T0 + 30 * DAY, min_strength=0.01, keep_last=3)
    assert {"id", "agent", "kind", "text", "strength", "reason"} <= set(removed.columns)
    reasons = dict(zip(removed["id"], removed["reason"]))
    assert weak in reasons and "strength" in reasons[weak]
    assert strong not in reasons and pending not in reasons
    assert sum("newest 3" in r for r in reasons.values()) == 2  # 5 signals, keep the last 3
    assert len(mem) == 1 + 1 + 3
    assert mem.cleanup(now=T0 + 30 * DAY).empty


def test_persistence_same_answers_after_reopen(tmp_path):
    path = tmp_path / "diary.sqlite"
    diary = cl.make_agent_diary(n_queries=5, n_background=200, path=str(path), seed=3)
    q = diary.queries.iloc[2]
    before = diary.memory.search(q.text, vector=q.vector, now=q.now, k=5, touch=False)
    diary.memory.close()
    with cl.AgentMemory(path) as again:
        after = again.search(q.text, vector=q.vector, now=q.now, k=5, touch=False)
        assert again.vector_dim == 8
    pd.testing.assert_frame_equal(before, after)


# --- refusals and bad input -----------------------------------------------------------------------------
def test_refuses_other_versions_and_foreign_files(tmp_path):
    path = tmp_path / "m.sqlite"
    cl.AgentMemory(path).close()
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    with pytest.raises(cl.SchemaVersionError, match="version 99"):
        cl.AgentMemory(path)
    text = tmp_path / "notes.txt"
    text.write_text("not a database at all, just some words " * 100)
    with pytest.raises(cl.AgentMemoryError, match="not an AgentMemory store"):
        cl.AgentMemory(text)
    assert text.read_text().startswith("not a database")
    other = tmp_path / "other.sqlite"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE prices (t INTEGER, close REAL)")
    con.commit()
    con.close()
    with pytest.raises(cl.AgentMemoryError, match="not an AgentMemory store"):
        cl.AgentMemory(other)
    con = sqlite3.connect(other)
    assert [r[0] for r in con.execute("SELECT name FROM sqlite_master")] == ["prices"]
    con.close()


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(importance=float("nan")), "importance"),
        (dict(importance=-1.0), "importance"),
        (dict(vector=[1.0, 2.0]), "3-dimensional"),
        (dict(vector=[1.0, np.nan, 0.0]), "NaN"),
        (dict(kind="gossip"), "unknown kind"),
        (dict(agent=""), "agent"),
        (dict(metadata={"x": float("nan")}), "JSON"),
        (dict(tier="forever"), "tier"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(bad, match):
    mem = _mem()
    mem.add("a", "observation", "first", now=T0, vector=[1.0, 0.0, 0.0])
    item = dict(agent="a", kind="observation", text="second", now=T0, vector=[0.0, 1.0, 0.0], **{})
    item.update(bad)
    with pytest.raises(cl.InvalidItemError, match=match):
        mem.add(**item)
    good = dict(agent="a", kind="observation", text="third", now=T0, vector=[0.0, 0.0, 1.0])
    with pytest.raises(cl.InvalidItemError, match=match):
        mem.add_many([good, item])  # the good item of the batch is not stored either
    assert len(mem) == 1 and mem.items()["text"].tolist() == ["first"]


def test_bad_queries_and_decisions():
    mem = _mem(vector_dim=3)
    with pytest.raises(cl.InvalidItemError, match="length 2"):
        mem.search(vector=[1.0, 2.0], now=T0)
    with pytest.raises(cl.InvalidItemError, match="confidence"):
        mem.record_decision("a", "x", now=T0, confidence=1.5)
    with pytest.raises(cl.InvalidItemError, match="kind"):
        mem.record_decision("a", "x", now=T0, kind="observation")
    assert len(mem) == 0 and mem.decisions(now=T0).empty


# --- reliability across processes ------------------------------------------------------------------------
def _ctx():
    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


def _writer(path: str, tag: str, batches: int, size: int, committed) -> None:
    mem = cl.AgentMemory(path)
    for b in range(batches):
        mem.add_many([dict(agent=tag, kind="observation", text=f"{tag} batch {b} item {i}",
                           now=T0 + pd.Timedelta(seconds=b * size + i), importance=1.0, vector=[1.0, float(i)])
                      for i in range(size)])
        if committed is not None:
            with committed.get_lock():
                committed.value += 1
    mem.close()


def test_killed_mid_batch_loses_no_committed_item(tmp_path):
    path = str(tmp_path / "crash.sqlite")
    cl.AgentMemory(path, vector_dim=2).close()
    ctx = _ctx()
    committed = ctx.Value("i", 0)
    size = 2000
    proc = ctx.Process(target=_writer, args=(path, "w", 10_000, size, committed))
    proc.start()
    deadline = time.time() + 60
    while committed.value < 3 and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.03)  # most likely in the middle of the next batch
    done = committed.value
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    assert done >= 3
    with cl.AgentMemory(path) as mem:
        n = len(mem)
        assert n >= done * size and n % size == 0  # every committed batch, no half batch
        assert mem._c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert len(mem.search("batch", now=T0 + pd.Timedelta(days=1), k=3)) == 3
        mem.add("w", "observation", "after the crash", now=T0)


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    cl.AgentMemory(path, vector_dim=2).close()
    ctx = _ctx()
    procs = [ctx.Process(target=_writer, args=(path, tag, 40, 25, None)) for tag in ("p1", "p2")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with cl.AgentMemory(path) as mem:
        items = mem.items()
        assert len(items) == 2 * 40 * 25 and items["id"].is_unique
        assert items.groupby("agent").size().to_dict() == {"p1": 1000, "p2": 1000}
        assert mem._c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# --- time causality ---------------------------------------------------------------------------------------
def _snapshot(mem, cut):
    return [
        _search(mem, "breakout volume", vector=[1.0, 0.5], now=cut, k=5),
        _search(mem, now=cut, k=5),
        mem.decisions(now=cut),
        mem.outcome_stats(now=cut),
    ]


def _populate(mem, times, texts, importances):
    ids = []
    for t, text, imp in zip(times, texts, importances):
        ids.append(mem.add("a", "observation", text, now=t, importance=imp, vector=[1.0, imp]))
    return ids


def test_future_changes_leave_past_searches_unchanged():
    mem = _mem()
    rng = np.random.default_rng(0)
    for d in range(30):
        mem.add(str(rng.choice(["x", "y"])), "observation", "breakout volume" if d % 2 else "quiet tape",
                now=T0 + d * DAY, importance=float(rng.uniform(0.5, 3)), vector=rng.normal(size=2))
    dec = mem.record_decision("x", "long breakout", now=T0 + 5 * DAY, direction=1)
    cut = T0 + 15 * DAY
    before = _snapshot(mem, cut)
    mem.resolve(dec, 0.05, at=T0 + 16 * DAY)
    mem.add("x", "observation", "breakout volume huge", now=T0 + 20 * DAY, importance=50.0, vector=[1.0, 0.5])
    mem.search("breakout volume", vector=[1.0, 0.5], now=T0 + 25 * DAY, k=10)  # touches at a later time
    mem.maintain(now=T0 + 26 * DAY, policy=cl.TierPolicy(delete_below=0.0))
    for a, b in zip(before, _snapshot(mem, cut)):
        pd.testing.assert_frame_equal(a, b)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(3, 15),
    cut=st.integers(1, 30),
    seed=st.integers(0, 10_000),
    extra=st.integers(1, 5),
)
def test_property_future_changes_never_move_the_past(n, cut, seed, extra):
    rng = np.random.default_rng(seed)
    mem = _mem()
    words = ["breakout", "volume", "gap", "fade", "squeeze"]
    times = [T0 + int(d) * DAY for d in rng.integers(0, 30, n)]
    _populate(mem, times, [" ".join(rng.choice(words, 2)) for _ in range(n)], rng.uniform(0.1, 5, n))
    decs = [mem.record_decision("a", "trade breakout", now=t, direction=1) for t in times[:2]]
    when = T0 + cut * DAY
    before = _snapshot(mem, when)
    for d in decs:  # outcomes known only after the cut
        mem.resolve(d, float(rng.normal()), at=max(when, T0 + 31 * DAY) + DAY)
    _populate(mem, [when + (k + 1) * DAY for k in range(extra)], ["breakout volume"] * extra, [9.0] * extra)
    mem.search("breakout", now=when + DAY, k=20)
    mem.search("volume", vector=[1.0, 0.5], now=when + 3 * DAY, k=20)
    for a, b in zip(before, _snapshot(mem, when)):
        pd.testing.assert_frame_equal(a, b)


def test_bm25_matches_fts5_and_ignores_future_items():
    mem = _mem()
    texts = ["gap down earnings miss", "earnings beat", "gap up on volume volume", "quiet session", "gap fill"]
    for d, text in enumerate(texts):
        mem.add("a", "observation", text, now=T0 + d * DAY)
    ours = mem.bm25("gap earnings", now=T0 + 10 * DAY)
    fts = dict(mem._c.execute("SELECT rowid, -bm25(items_fts) FROM items_fts WHERE items_fts MATCH "
                              "'\"gap\" OR \"earnings\"'").fetchall())
    assert set(ours.index) == set(fts) and np.allclose([fts[i] for i in ours.index], ours.to_numpy())
    past = mem.bm25("gap earnings", now=T0 + 2 * DAY)
    for d in range(20):  # many later items with these words: FTS5's statistics move, ours at T0+2 do not
        mem.add("a", "observation", "gap gap earnings", now=T0 + (11 + d) * DAY)
    pd.testing.assert_series_equal(past, mem.bm25("gap earnings", now=T0 + 2 * DAY))
    fts_after = dict(mem._c.execute("SELECT rowid, -bm25(items_fts) FROM items_fts WHERE items_fts MATCH "
                                    "'\"gap\" OR \"earnings\"'").fetchall())
    assert not np.isclose(fts_after[1], fts[1])


@pytest.mark.parametrize("weak_share", [0.2, 0.8])  # few go (rows leave the text index) / most go (it is rebuilt)
def test_cleanup_keeps_text_index_in_step_with_the_items(weak_share):
    mem = _mem()
    rng = np.random.default_rng(3)
    weak = rng.random(60) < weak_share
    ids = [mem.add("a", "observation", f"gap {'weak' if w else 'kept'} item{i}", now=T0 + i * pd.Timedelta("1h"),
                   importance=1e-6 if w else 10.0) for i, w in enumerate(weak)]
    removed = mem.cleanup(now=T0 + 3 * DAY, min_strength=1e-3)
    gone = {i for i, w in zip(ids, weak) if w}
    assert set(removed["id"]) == gone and list(removed["id"]) == sorted(gone)
    assert all(t.startswith("gap weak item") and t.endswith(f"item{ids.index(i)}")
               for i, t in zip(removed["id"], removed["text"]))  # each text belongs to its own id
    fts = dict(mem._c.execute("SELECT rowid, -bm25(items_fts) FROM items_fts WHERE items_fts MATCH '\"gap\"'"))
    ours = mem.bm25("gap", now=T0 + 3 * DAY)
    assert set(fts) == set(ours.index) == set(ids) - gone
    assert np.allclose([fts[i] for i in ours.index], ours.to_numpy())
    assert mem._c.execute("INSERT INTO items_fts (items_fts, rank) VALUES ('integrity-check', 1)") is not None
    in_place = _search(mem, "gap kept", vector=None, now=T0 + 3 * DAY, k=20)
    mem._cache, mem._stale = type(mem._cache)(), True  # what another process (or a reopened store) builds
    pd.testing.assert_frame_equal(in_place, _search(mem, "gap kept", vector=None, now=T0 + 3 * DAY, k=20))


# --- composers, agents, calibration, diary ---------------------------------------------------------------
def test_thompson_weights_and_regret_on_switching_skill():
    rng = np.random.default_rng(0)
    w = cl.ThompsonComposer(n_draws=2000).weights(np.array([30.0, 5.0]), np.array([10.0, 5.0]), rng)
    assert w.sum() == pytest.approx(1.0) and w[0] > 0.8
    one = cl.ThompsonComposer().weights(np.zeros((3, 4)), np.zeros((3, 4)), rng)
    assert set(np.unique(one)) <= {0.0, 1.0} and np.allclose(one.sum(axis=1), 1)
    assert cl.WinRateComposer().weights(np.array([1.0, 3.0]), np.array([1.0, 1.0]), rng).tolist() == [0, 1]
    sched = cl.make_skill_schedule(900, n_agents=3, high=0.7, low=0.4, seed=1)
    assert sched.attrs["switch_at"] == [300, 600]
    comps = [cl.EqualWeightComposer(), cl.WinRateComposer(), cl.ThompsonComposer(),
             cl.ThompsonComposer("thompson_discounted", half_life=50)]
    regret = cl.simulate_skill_switch(sched, comps, n_runs=40, seed=0)
    final = {k: v[:, -1].mean() for k, v in regret.items()}
    assert final["thompson_discounted"] < final["thompson"] < final["equal"]
    again = cl.simulate_skill_switch(sched, comps, n_runs=40, seed=0)
    assert all(np.array_equal(regret[k], again[k]) for k in regret)


def _market(n=420, seed=0):
    return cl.make_synthetic_market(n, seed=seed).ohlcv


def _run(prices, seed=0):
    agents = [cl.MomentumAgent(), cl.MeanReversionAgent(), cl.VolatilityAgent(min_history=60),
              cl.AnalogAgent(k=8, seq_len=12, lookback=6, train_bars=168)]
    comps = [cl.EqualWeightComposer(), cl.WinRateComposer(), cl.ThompsonComposer(n_draws=64),
             cl.ThompsonComposer("thompson_discounted", half_life=60, n_draws=64)]
    return cl.run_agents(prices, agents, comps, _mem(), start=200, seed=seed)


def test_run_agents_shares_one_memory_and_is_causal():
    prices = _market()
    run = _run(prices)
    assert set(run.decisions["agent"]) <= {"momentum", "mean_reversion", "volatility", "analog"}
    assert {"equal", "win_rate", "thompson", "thompson_discounted"} <= set(run.positions.columns)
    assert run.positions.abs().max().max() <= 1.0
    for w in run.weights.values():
        assert np.allclose(w.sum(axis=1), 1.0)
    resolved = run.decisions.dropna(subset=["pnl"])
    assert (resolved["resolved_at"] > resolved["decided_at"]).all()
    cut = prices.index[330]
    changed = prices.copy()
    changed.loc[changed.index > cut, ["open", "high", "low", "close"]] *= 3.0
    other = _run(changed)
    pd.testing.assert_frame_equal(run.positions.loc[:cut], other.positions.loc[:cut])
    for name in run.weights:
        pd.testing.assert_frame_equal(run.weights[name].loc[:cut], other.weights[name].loc[:cut])


def test_calibration_uses_only_past_outcomes_and_helps_an_overconfident_agent():
    rng = np.random.default_rng(0)
    n = 600
    t = pd.date_range("2020-01-01", periods=n, freq="D")
    conf = rng.uniform(0.5, 1.0, n)
    win = rng.random(n) < 0.5 + 0.3 * (conf - 0.5)  # says 0.9, wins 62%: overconfident
    d = pd.DataFrame({"decided_at": t, "resolved_at": t + pd.Timedelta("1D"), "confidence": conf,
                      "pnl": np.where(win, 0.01, -0.01)})
    for method in ("isotonic", "platt"):
        cal = cl.calibrate_confidence(d, method=method, min_history=50, refit_every=10)
        assert cal.iloc[:50].isna().all() and cal.iloc[60:].notna().all()
        ok = cal.notna()
        assert cl.brier_score(cal[ok], win[ok]) < cl.brier_score(conf[ok], win[ok])
        cut = 300
        future = d.copy()
        future.loc[future.index >= cut, "pnl"] *= -1  # rewrite every outcome from the cut on
        later = cl.calibrate_confidence(future, method=method, min_history=50, refit_every=10)
        known = d["resolved_at"] <= d["decided_at"].iloc[cut]
        assert known.sum() < cut + 1
        pd.testing.assert_series_equal(cal.iloc[:cut + 1], later.iloc[:cut + 1])
    table = cl.reliability_table(conf, win, n_bins=5)
    assert table["n"].sum() == n and (table["mean_confidence"].diff().dropna() > 0).all()


def test_diary_full_hybrid_beats_relevance_only():
    diary = cl.make_agent_diary(n_queries=12, n_background=300, seed=1)
    per_query = cl.evaluate_retrieval(diary, k=3)
    table = cl.retrieval_table(per_query, n_boot=200)
    assert table.loc["full hybrid", "precision"] > table.loc["relevance only", "precision"]
    assert table.loc["full hybrid", "ndcg_gain_low"] > 0
    assert cl.precision_at_k([1, 2, 3], {1, 3}, 2) == 0.5
    assert cl.ndcg_at_k([1, 2], {1, 2}, 2) == pytest.approx(1.0)
    assert cl.ndcg_at_k([2, 1], {1}, 2) == pytest.approx(1 / np.log2(3))


# ------------------------------------------------------------------ the future after T moves nothing before T
def test_agent_decisions_do_not_depend_on_how_many_bars_follow():
    """Rule: a decision at t uses bars up to t, the choice of its training period included. Appending bars
    after T moves no signal, composed position, composer weight or recorded decision at or before T."""
    prices = _market(420)
    T = prices.index[330]
    full, short = _run(prices), _run(prices.loc[:T])
    pd.testing.assert_frame_equal(full.positions.loc[:T], short.positions.loc[:T])
    for name in full.weights:
        pd.testing.assert_frame_equal(full.weights[name].loc[:T], short.weights[name].loc[:T])
    for name in full.signals:
        pd.testing.assert_frame_equal(full.signals[name].loc[:T], short.signals[name].loc[:T])
    cols = ["agent", "direction", "confidence", "decided_at"]
    before = full.decisions[full.decisions["decided_at"] < T][cols].reset_index(drop=True)
    pd.testing.assert_frame_equal(before, short.decisions[short.decisions["decided_at"] < T][cols].reset_index(drop=True))
    timed = cl.AnalogAgent(k=8, seq_len=12, lookback=6, train_until=prices.index[167])
    pd.testing.assert_frame_equal(timed.signals(prices).loc[:T], timed.signals(prices.loc[:T]).loc[:T])


def test_maintenance_never_changes_what_an_earlier_search_saw():
    """Rule: maintain at M (deletions included) leaves every search, item list and decision at or before M as
    it was; later searches no longer see the retired items; only cleanup frees them."""
    mem = _mem()
    rng = np.random.default_rng(7)
    for d in range(12):
        mem.add("x", "observation", "breakout volume" if d % 2 else "quiet tape", now=T0 + d * DAY,
                importance=float(rng.uniform(0.2, 0.6)), vector=rng.normal(size=2))
    dec = mem.record_decision("x", "long breakout", now=T0 + DAY, direction=1, confidence=0.6)
    mem.resolve(dec, 0.01, at=T0 + 2 * DAY)
    M = T0 + 30 * DAY
    times = [T0 + 5 * DAY, T0 + 12 * DAY, M]
    mem.add("x", "lesson", "breakout volume matters", now=T0 + 3 * DAY, importance=5.0, vector=[1.0, 0.5])
    n0 = len(mem)
    before = {t: [*_snapshot(mem, t), mem.items(now=t)] for t in times}
    changes = mem.maintain(now=M)
    gone = set(changes.loc[changes["to_tier"] == "deleted", "id"])
    assert gone and dec in gone  # faded items and the resolved decision leave the short tier
    for t in times:
        for a, b in zip(before[t], [*_snapshot(mem, t), mem.items(now=t)]):
            pd.testing.assert_frame_equal(a, b)
    later = M + pd.Timedelta("1s")
    assert gone.isdisjoint(_search(mem, now=later, k=50)["id"]) and gone.isdisjoint(mem.items(now=later)["id"])
    assert gone.isdisjoint(mem.items()["id"]) and len(mem) == n0 - len(gone) > 0
    assert dec not in set(mem.decisions(now=later)["id"])
    removed = mem.cleanup(now=later, min_strength=None)
    assert set(removed["id"]) == gone and set(removed["reason"]) == {"retired by maintain"}
    assert _search(mem, now=T0 + 12 * DAY, k=50)["id"].isin(gone).sum() == 0  # cleanup: the past goes too


def test_calibration_fits_on_the_decisions_that_state_a_confidence():
    rng = np.random.default_rng(1)
    n = 300
    t = pd.date_range("2020-01-01", periods=n, freq="D")
    conf = rng.uniform(0.5, 1.0, n)
    d = pd.DataFrame({"decided_at": t, "resolved_at": t + pd.Timedelta("1D"), "confidence": conf,
                      "pnl": np.where(rng.random(n) < conf - 0.1, 0.01, -0.01)})
    d.loc[120, "confidence"] = np.nan  # record_decision allows a decision without a confidence
    for method in ("isotonic", "platt"):
        with pytest.warns(UserWarning, match="1 of 300 decisions state no confidence"):
            cal = cl.calibrate_confidence(d, method=method, min_history=50, refit_every=10)
        assert cal.attrs["no_confidence"] == 1 and np.isnan(cal.iloc[120])
        assert cal.drop(index=120).iloc[60:].notna().all()
        assert cal.between(0, 1).sum() == n - 1 - cal.iloc[:60].isna().sum()
        report, _ = cl.calibration_report(d.assign(agent="a"), method=method, min_history=50, refit_every=10)
        assert report.loc["a", "no_confidence"] == 1 and np.isfinite(report.loc["a", "brier_calibrated"])
