"""The Milvus memory backend, against Milvus Lite (the embedded engine, in a temporary file) and against a
Milvus server when one runs: ``make test`` starts one (tests/milvus_server.py) and names it in
``COURSE_MILVUS_URI``. Without a server the server cases skip with the reason.

Every collection a test creates has a name unique to this run (and xdist worker) and is dropped afterwards,
so a second run against the same server starts clean. Skipped when the optional extra ``scale`` (pymilvus,
milvus-lite) is not installed; the test of the clear error for a missing extra runs always.
"""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest

import course_lib as cl
from course_lib.memory import NO_TIME_FILTER, ExternalMemoryBank, MemoryConfig, MissingTimeError

D, K = 8, 5
RUN = f"t{uuid.uuid4().hex[:10]}"  # this run's prefix for collection names
SERVER_URI = os.environ.get("COURSE_MILVUS_URI", "")
NO_SERVER = os.environ.get("COURSE_MILVUS_SKIP") or (
    "no Milvus server: COURSE_MILVUS_URI is not set (`make test` starts one; by hand: "
    "python tests/milvus_server.py run -- pytest tests/test_milvus.py)")


def _unit(rng, n):
    x = rng.normal(size=(n, D)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_missing_extra_names_it(hide_module, tmp_path):
    """Without pymilvus installed, asking for the backend says which extra to install."""
    hide_module("pymilvus")
    with pytest.raises(ImportError, match=r'course-lib\[scale\]'):
        ExternalMemoryBank(MemoryConfig(key_dim=D, backend="milvus", uri=str(tmp_path / "m.db")))


def test_milvus_needs_a_uri():
    with pytest.raises(ValueError, match="uri"):
        MemoryConfig(backend="milvus")


def _server_module():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("milvus_server", Path(__file__).with_name("milvus_server.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_server_runner_without_a_server_runs_the_command_with_the_reason(monkeypatch):
    """`make test` on a machine where no server starts: the tests run, the server cases skip with the reason,
    the command's exit status is kept, and the (half-started) server is cleaned up."""
    import sys

    mod = _server_module()
    monkeypatch.delenv("COURSE_MILVUS_URI", raising=False)

    def no_server(self):
        raise RuntimeError("pip install -r milvus-server-requirements.txt failed (no wheel for this platform)")

    stopped = []
    monkeypatch.setattr(mod.Server, "start", no_server)
    monkeypatch.setattr(mod.Server, "stop", lambda self: stopped.append(True))
    check = ("import os, sys; e = os.environ; "
             "sys.exit(3 if 'no wheel' in e['COURSE_MILVUS_SKIP'] and 'COURSE_MILVUS_URI' not in e else 9)")
    assert mod.run([sys.executable, "-c", check]) == 3
    assert stopped == [True]


pymilvus = pytest.importorskip("pymilvus", reason='optional extra "scale" not installed')
pytest.importorskip("milvus_lite", reason='optional extra "scale" not installed')


@pytest.fixture(scope="module", params=["lite", "server"])
def db(request, tmp_path_factory):
    """Where the banks live: a Milvus Lite file, or the test server."""
    if request.param == "server":
        if not SERVER_URI:
            pytest.skip(NO_SERVER)
        return SERVER_URI
    return str(tmp_path_factory.mktemp("milvus") / "memory.db")


@pytest.fixture(scope="module")
def names(db):
    """``names("filled")``: a collection name unique to this run (and worker); all are dropped at the end."""
    made: list[str] = []

    def name(base: str) -> str:
        made.append(f"{RUN}_{base}")
        return made[-1]

    yield name
    client = pymilvus.MilvusClient(db) if "://" in db else None
    if client is not None:
        for n in made:
            for c in (n, f"{n}__state"):
                if client.has_collection(c):
                    client.drop_collection(c)
        client.close()


@pytest.fixture(scope="module")
def filled(db, names):
    """One Milvus bank and the exact in-memory bank with the same 300 entries, times 0..299 (+3 to resolve)."""
    rng = np.random.default_rng(0)
    keys = _unit(rng, 300)
    ts = np.arange(300, dtype=np.int64)
    fr = rng.normal(size=300).astype(np.float32)
    sym = np.array(["AAA", "BBBB"] * 150)
    mil = ExternalMemoryBank(MemoryConfig(key_dim=D, capacity=1000, backend="milvus", uri=db,
                                          milvus_collection=names("filled")))
    exact = ExternalMemoryBank(MemoryConfig(key_dim=D, capacity=1000, backend="numpy"))
    for bank in (mil, exact):
        bank.add(keys, timestamp=ts, available_at=ts + 3, future_return=fr, symbol=sym)
    yield mil, exact, keys
    mil.close()


def test_factory_returns_the_milvus_bank(filled):
    mil, _, _ = filled
    assert type(mil).__name__ == "MilvusMemoryBank"
    assert len(mil) == 300


def test_mixed_time_batch_has_no_lookahead_and_exactly_k(filled):
    mil, _, keys = filled
    rng = np.random.default_rng(1)
    q = keys[rng.integers(0, 300, 40)] + 0.05 * rng.normal(size=(40, D)).astype(np.float32)
    as_of = rng.integers(0, 300, 40)
    as_of[:4] = [0, 2, 4, 5]  # queries that see nothing, or fewer than k entries
    res = mil.search(q, k=K, as_of=as_of)
    assert res.indices.shape == res.mask.shape == res.scores.shape == (40, K)
    assert res.keys.shape == (40, K, D)
    avail = res.metadata("available_at")
    assert not (res.mask & (avail > as_of[:, None])).any()  # zero look-ahead leaks
    assert (res.indices[~res.mask] == -1).all()
    eligible = np.array([(np.arange(300) + 3 <= t).sum() for t in as_of])
    assert (res.mask.sum(1) == np.minimum(K, eligible)).all()  # k eligible neighbours whenever they exist


def test_filter_inside_search_not_after(filled):
    """Queries early in time still get k neighbours although most entries are not yet available."""
    mil, _, keys = filled
    res = mil.search(keys[250:260], k=K, as_of=20)  # 18 of 300 entries visible
    assert res.mask.all()
    assert (res.metadata("available_at") <= 20).all()


def test_flat_equals_exact_backend(filled):
    mil, exact, keys = filled
    rng = np.random.default_rng(2)
    q = _unit(rng, 30)
    as_of = rng.integers(0, 320, 30)
    a, b = mil.search(q, k=K, as_of=as_of), exact.search(q, k=K, as_of=as_of)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    np.testing.assert_allclose(a.keys, b.keys, atol=1e-6)
    for name in ("timestamp", "available_at", "symbol"):
        np.testing.assert_array_equal(a.metadata(name), b.metadata(name))
    np.testing.assert_allclose(a.metadata("future_return"), b.metadata("future_return"))
    u, v = mil.search(q, k=K, as_of=NO_TIME_FILTER), exact.search(q, k=K, as_of=NO_TIME_FILTER)
    np.testing.assert_array_equal(u.indices, v.indices)


@pytest.mark.parametrize("max_calls, overfetch", [(8, 4), (1, 1)])  # the default; one call that must fall back
def test_grouped_times_give_each_query_its_exact_eligible_top_k(filled, monkeypatch, max_calls, overfetch):
    """Queries with many distinct times share a few engine calls, and each still gets what the exact bank gives."""
    import course_lib.memory.milvus as milvus_module

    mil, exact, _ = filled
    monkeypatch.setattr(milvus_module, "_MAX_CALLS", max_calls)
    monkeypatch.setattr(milvus_module, "_OVERFETCH", overfetch)
    calls = []
    real = mil._client.search
    monkeypatch.setattr(mil._client, "search", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    rng = np.random.default_rng(4)
    q = _unit(rng, 64)
    as_of = rng.integers(0, 320, 64)
    a, b = mil.search(q, k=K, as_of=as_of), exact.search(q, k=K, as_of=as_of)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert not (a.mask & (a.metadata("available_at") > as_of[:, None])).any()
    if max_calls == 8:
        assert len(calls) <= 8 + 64 // 4  # a few group calls (and rare fallbacks), not one per distinct time
    else:
        assert len(calls) > 1  # one group, an over-fetch of k: most queries had to ask again alone


def test_search_requires_as_of(filled):
    mil, _, keys = filled
    with pytest.raises(MissingTimeError):
        mil.search(keys[:2], k=K)
    with pytest.raises(ValueError, match="available_at"):
        mil.add(keys[:2], timestamp=[1, 2], future_return=[0.1, 0.2])


def test_reopen_same_uri_holds_same_entries(db, names, tmp_path):
    rng = np.random.default_rng(3)
    keys = _unit(rng, 50)
    ts = np.arange(50, dtype=np.int64) * 10
    cfg = MemoryConfig(key_dim=D, value_dim=2, capacity=40, backend="milvus", uri=db,
                       milvus_collection=names("reopen"))
    bank = ExternalMemoryBank(cfg)
    vals = rng.normal(size=(50, 2)).astype(np.float32)
    bank.add(keys[:30], values=vals[:30], timestamp=ts[:30], available_at=ts[:30] + 5, regime=np.arange(30))
    bank.add(keys[30:], values=vals[30:], timestamp=ts[30:], available_at=ts[30:] + 5, regime=np.arange(30, 50))
    assert len(bank) == 40  # FIFO: the 10 oldest were overwritten
    before = bank.search(keys[:8], k=K, as_of=10_000)
    bank.close()
    again = ExternalMemoryBank(cfg)
    assert len(again) == 40
    after = again.search(keys[:8], k=K, as_of=10_000)
    np.testing.assert_array_equal(before.indices, after.indices)
    np.testing.assert_allclose(before.values, after.values)
    assert sorted(again.metadata("timestamp")) == list(ts[10:])
    np.testing.assert_array_equal(np.sort(again.metadata("regime")), np.arange(10, 50))
    # save -> the standard bank file: an in-memory bank reads it, and it restores into Milvus
    path = again.save(tmp_path / "mem.npz")
    mem = ExternalMemoryBank.load(path)
    assert len(mem) == 40 and mem.config.backend == "auto"
    ref = mem.search(keys[:8], k=K, as_of=10_000)
    np.testing.assert_allclose(np.sort(ref.scores, 1), np.sort(after.scores, 1), atol=1e-5)
    restored = type(again).load(path, uri=db, milvus_collection=names("restored"))
    assert len(restored) == 40
    np.testing.assert_allclose(restored.search(keys[:8], k=K, as_of=10_000).scores, after.scores, atol=1e-5)
    with pytest.raises(cl.MemoryFileError, match="key_dim"):
        ExternalMemoryBank(MemoryConfig(key_dim=D + 1, value_dim=2, capacity=40, backend="milvus", uri=db,
                                        milvus_collection=cfg.milvus_collection))
    again.drop()
    restored.drop()


# ------------------------------------------------------------------ the bank on a server: consistency, lean
# searches, load without drop-and-recreate, the exact pass for short results, nprobe / ef, causality


@pytest.fixture
def spy(monkeypatch):
    """``spy(obj, "method")``: a list that records the keyword arguments of every call (the call still runs)."""

    def watch(obj, method):
        calls, real = [], getattr(obj, method)

        def wrapped(*args, **kwargs):
            calls.append(kwargs)
            return real(*args, **kwargs)

        monkeypatch.setattr(obj, method, wrapped)
        return calls

    return watch


def test_session_consistency_by_default_strong_on_request(db, names, spy):
    """Reads wait for this process's writes only ("Session"); "Strong" is a parameter, for several writers."""
    keys = _unit(np.random.default_rng(5), 12)
    for level in ("Session", "Strong"):
        kw = {} if level == "Session" else {"consistency_level": level}
        bank = ExternalMemoryBank(MemoryConfig(key_dim=D, capacity=50, backend="milvus", uri=db,
                                               milvus_collection=names(f"consistency_{level}")), **kw)
        assert bank.consistency_level == level
        searches, gets = spy(bank._client, "search"), spy(bank._client, "get")
        bank.add(keys, timestamp=np.arange(12), available_at=np.arange(12))
        res = bank.search(keys[:3], k=K, as_of=11)  # read-your-writes: the entries just added are seen
        assert res.mask.all()
        assert {c["consistency_level"] for c in searches + gets} == {level}
        if "://" in db:  # the server records the collection's level (Milvus Lite has none)
            code = bank._client.describe_collection(bank._name)["consistency_level"]
            assert code == {"Session": 1, "Strong": 0}[level]
        bank.drop()
    with pytest.raises(ValueError, match="consistency_level"):
        ExternalMemoryBank(MemoryConfig(key_dim=D, backend="milvus", uri=db), consistency_level="strong-ish")


def test_search_is_lean_then_one_get(filled, spy):
    """The engine returns only what ranking needs; the chosen entries come back in one get."""
    mil, exact, keys = filled
    searches, gets = spy(mil._client, "search"), spy(mil._client, "get")
    as_of = np.arange(40, 280, 6)
    a, b = mil.search(keys[:40], k=K, as_of=as_of), exact.search(keys[:40], k=K, as_of=as_of)
    assert searches and all(c["output_fields"] == ["available_at"] for c in searches)
    assert len(gets) == 1 and sorted(gets[0]["ids"]) == sorted(set(a.indices[a.mask].tolist()))
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.keys, b.keys, atol=1e-6)
    np.testing.assert_allclose(a.metadata("future_return"), b.metadata("future_return"))


class _Short(list):
    """An engine answer for one query cut to its first ``n`` hits (what a filtered HNSW search can return)."""

    def __init__(self, hits, n):
        super().__init__(list(hits)[:n])
        self.ids, self.distances = list(hits.ids)[:n], list(hits.distances)[:n]


@pytest.mark.parametrize("exact_rows", [20_000, 0])  # one read of the few eligible entries / count per time first
def test_short_engine_results_are_completed_exactly(filled, monkeypatch, exact_rows):
    """Whatever the engine returns (here: nothing or 2 hits for a third of the queries), each query gets its
    exact eligible top k, and nothing after its time."""
    import course_lib.memory.milvus as milvus_module

    mil, exact, keys = filled
    monkeypatch.setattr(milvus_module, "_EXACT_ROWS", exact_rows)
    real = mil._client.search
    monkeypatch.setattr(mil._client, "search", lambda *a, **kw: [
        _Short(h, (0, 2)[i % 2]) if i % 3 == 0 else h for i, h in enumerate(real(*a, **kw))])
    rng = np.random.default_rng(6)
    q = _unit(rng, 30)
    as_of = rng.integers(0, 320, 30)
    before = mil.stats["engine_short"]
    a, b = mil.search(q, k=K, as_of=as_of), exact.search(q, k=K, as_of=as_of)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    assert not (a.mask & (a.metadata("available_at") > as_of[:, None])).any()  # 0 leaks
    assert mil.stats["engine_short"] > before
    u, v = mil.search(q, k=K, as_of=NO_TIME_FILTER), exact.search(q, k=K, as_of=NO_TIME_FILTER)
    np.testing.assert_array_equal(u.indices, v.indices)


def test_future_entries_do_not_move_past_results(db, names):
    """Adding entries that resolve after T leaves every search at or before T unchanged."""
    rng = np.random.default_rng(7)
    keys = _unit(rng, 120)
    ts = np.arange(120, dtype=np.int64)
    bank = ExternalMemoryBank(MemoryConfig(key_dim=D, capacity=500, backend="milvus", uri=db,
                                           milvus_collection=names("future")))
    bank.add(keys[:80], timestamp=ts[:80], available_at=ts[:80] + 2)
    q, as_of = _unit(rng, 16), rng.integers(0, 82, 16)
    before = bank.search(q, k=K, as_of=as_of)
    bank.add(keys[80:], timestamp=ts[80:], available_at=ts[80:] + 2)  # resolve at 82.. > every as_of
    bank.add(-q[:4], timestamp=[90] * 4, available_at=[200] * 4)  # the future's best matches, unresolved
    after = bank.search(q, k=K, as_of=as_of)
    np.testing.assert_array_equal(before.indices, after.indices)
    np.testing.assert_allclose(before.scores, after.scores, atol=1e-6)
    assert not (after.mask & (after.metadata("available_at") > as_of[:, None])).any()
    bank.drop()


def test_load_fills_a_new_collection_without_dropping_it(db, names, monkeypatch, tmp_path):
    rng = np.random.default_rng(8)
    keys = _unit(rng, 30)
    mem = ExternalMemoryBank(MemoryConfig(key_dim=D, capacity=64, backend="numpy"))
    mem.add(keys, timestamp=np.arange(30), available_at=np.arange(30) + 1, future_return=rng.normal(size=30))
    path = mem.save(tmp_path / "mem.npz")
    drops, creates = [], []
    real_drop, real_create = pymilvus.MilvusClient.drop_collection, pymilvus.MilvusClient.create_collection
    monkeypatch.setattr(pymilvus.MilvusClient, "drop_collection", lambda s, n, **kw: drops.append(n) or real_drop(s, n, **kw))
    monkeypatch.setattr(pymilvus.MilvusClient, "create_collection",
                        lambda s, n, **kw: creates.append(n) or real_create(s, n, **kw))
    name = names("loaded")
    bank = cl.MilvusMemoryBank.load(path, uri=db, milvus_collection=name)
    assert drops == [] and sorted(creates) == [name, f"{name}__state"]  # created once, never dropped
    assert len(bank) == 30
    np.testing.assert_array_equal(bank.search(keys[:5], k=K, as_of=100).indices,
                                  mem.search(keys[:5], k=K, as_of=100).indices)
    with pytest.raises(cl.MemoryFileError, match="overwrite"):
        cl.MilvusMemoryBank.load(path, uri=db, milvus_collection=name)
    monkeypatch.undo()
    bank.drop()


@pytest.mark.parametrize("index, name, default", [("HNSW", "ef", 96), ("IVF_FLAT", "nprobe", 16)])
def test_nprobe_and_ef_are_settable_per_search(db, names, spy, index, name, default):
    """Per call, or from the config (ivf_nprobe, hnsw_ef_search); HNSW's ef never below the hits asked for."""
    keys = _unit(np.random.default_rng(9), 40)
    bank = ExternalMemoryBank(MemoryConfig(key_dim=D, capacity=64, backend="milvus", uri=db, milvus_index=index,
                                           milvus_collection=names(f"params_{index}")))
    bank.add(keys, timestamp=np.arange(40), available_at=np.arange(40))
    calls = spy(bank._client, "search")
    for given, sent in (({}, default), ({name: 80}, 80)):
        assert bank.search(keys[:3], k=K, as_of=39, **given).mask.all()
        assert calls[-1]["search_params"]["params"] == {name: sent}
    if index == "HNSW":
        bank.search(keys[:12], k=K, as_of=np.arange(12) * 3 + 5, ef=2)  # grouped times: over-fetch of 4k hits
        assert calls[-1]["search_params"]["params"]["ef"] >= calls[-1]["limit"] > K
    bank.drop()
