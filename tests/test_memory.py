"""ExternalMemoryBank: exactly-k results, causal filtering, ring buffer, eviction, backends vs brute force."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from course_lib import NO_TIME_FILTER, ExternalMemoryBank, MemoryConfig, recall_at_k, sample_by_priority

EXACT = ["numpy", "torch", "faiss", "auto"]


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _brute(keys, queries, k, avail=None, as_of=None):
    s = _unit(queries) @ _unit(keys).T
    if as_of is not None:
        s = np.where(avail[None, :] > np.asarray(as_of)[:, None], -np.inf, s)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(s, order, 1)
    return np.where(np.isfinite(top), order, -1), top


def _bank(n=500, d=16, backend="auto", cap=None, **kw):
    rng = np.random.default_rng(1)
    keys = rng.normal(size=(n, d)).astype(np.float32)
    t = np.arange(n, dtype=np.int64) * 100
    bank = ExternalMemoryBank(MemoryConfig(key_dim=d, value_dim=3, capacity=cap or n, backend=backend, **kw))
    bank.add(keys, values=rng.normal(size=(n, 3)), timestamp=t, available_at=t + 250,
             future_return=rng.normal(size=n), symbol=np.where(np.arange(n) % 2, "SPX", "NDX"))
    return bank, keys, t


@pytest.mark.parametrize("backend", EXACT)
@pytest.mark.parametrize("batch", [1, 37, 3000])
def test_exact_backends_agree_with_brute_force(backend, batch):
    bank, keys, t = _bank(backend=backend, auto_faiss_min_batch=1000)
    q = np.random.default_rng(batch).normal(size=(batch, keys.shape[1]))
    res = bank.search(q, k=10, as_of=NO_TIME_FILTER)
    idx, top = _brute(keys, q, 10)
    assert res.scores.shape == res.indices.shape == res.mask.shape == (batch, 10)
    np.testing.assert_allclose(res.scores, top, atol=1e-5)
    # index sets agree except where two scores tie to float precision
    assert np.mean(np.sort(res.indices, 1) == np.sort(idx, 1)) > 0.995


@pytest.mark.parametrize("backend", EXACT + ["ivf", "hnsw"])
def test_causal_filter_mixed_time_batch(backend):
    bank, keys, t = _bank(n=4000, backend=backend, auto_faiss_min_batch=64, auto_numpy_max_batch=0)
    rng = np.random.default_rng(5)
    pick = rng.integers(0, 4000, size=200)
    q = keys[pick] + 0.01 * rng.normal(size=(200, keys.shape[1]))  # queries look like stored windows
    as_of = t[pick]  # each query lives at its own window's end time
    res = bank.search(q, k=8, as_of=as_of)
    avail = res.metadata("available_at")
    assert (avail[res.mask] <= np.repeat(as_of[:, None], 8, 1)[res.mask]).all()
    assert not (res.indices == pick[:, None]).any(), "a query retrieved itself"
    # the masked-out future must not change the past: exact backends equal brute force with the filter
    if backend in EXACT:
        idx, top = _brute(keys, q, 8, bank.metadata("available_at"), as_of)
        np.testing.assert_allclose(res.scores, np.where(np.isfinite(top), top, 0.0), atol=1e-5)
        np.testing.assert_array_equal(res.mask, idx >= 0)
    else:  # the approximate index itself answered (no silent exact fallback), with high causal recall
        assert res.backend == backend
        idx, _ = _brute(keys, q, 8, bank.metadata("available_at"), as_of)
        np.testing.assert_array_equal(res.mask, idx >= 0)
        assert recall_at_k(res.indices, idx) >= 0.9


def test_adding_future_entries_does_not_change_past_queries():
    bank, keys, t = _bank(n=300)
    q = np.random.default_rng(0).normal(size=(5, 16))
    before = bank.search(q, k=6, as_of=t[150])
    rng = np.random.default_rng(9)
    bank2 = ExternalMemoryBank(bank.config, capacity=400)
    bank2.add(keys, timestamp=t, available_at=t + 250)
    bank2.add(rng.normal(size=(50, 16)), timestamp=t[-1] + 1000, available_at=t[-1] + 2000)
    after = bank2.search(q, k=6, as_of=t[150])
    np.testing.assert_array_equal(before.indices, after.indices)


def test_exactly_k_with_mask_when_memory_is_small():
    bank = ExternalMemoryBank(MemoryConfig(key_dim=4, value_dim=2, capacity=10))
    res = bank.search(np.ones((3, 4)), k=5, as_of=NO_TIME_FILTER)
    assert res.indices.shape == (3, 5) and not res.mask.any() and (res.indices == -1).all()
    bank.add(np.eye(4)[:3], values=np.ones((3, 2)), timestamp=[1, 2, 3], available_at=[5, 6, 7])
    res = bank.search(np.ones((2, 4)), k=5, as_of=[6, 100])
    assert res.mask.sum(1).tolist() == [2, 3]
    assert (res.indices[~res.mask] == -1).all() and (res.scores[~res.mask] == 0).all()
    assert np.isnan(res.metadata("importance")[~res.mask]).all()
    assert (res.metadata("timestamp")[~res.mask] == -1).all()
    assert res.values.shape == (2, 5, 2) and (res.values[~res.mask] == 0).all()


def test_torch_queries_give_torch_results():
    bank, keys, _ = _bank(n=100)
    q = torch.randn(4, 16, requires_grad=True)
    res = bank.search(q, k=3, as_of=NO_TIME_FILTER)
    assert isinstance(res.scores, torch.Tensor) and res.keys.shape == (4, 3, 16)
    assert res.indices.dtype == torch.int64 and res.mask.dtype == torch.bool and not res.scores.requires_grad


def test_keys_normalised_and_add_returns_slots():
    bank = ExternalMemoryBank(MemoryConfig(key_dim=3, capacity=8))
    slots = bank.add(np.array([[3.0, 4.0, 0.0], [0, 0, 2.0]]))
    assert slots.tolist() == [0, 1]
    np.testing.assert_allclose(np.linalg.norm(bank.keys, axis=1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        bank.add(np.ones((2, 4)))
    with pytest.raises(ValueError, match="available_at"):
        bank.add(np.ones((1, 3)), future_return=[0.1])
    vbank = ExternalMemoryBank(MemoryConfig(key_dim=3, value_dim=2, capacity=8))
    with pytest.raises(ValueError, match="values given without available_at"):
        vbank.add(np.ones((1, 3)), values=np.ones((1, 2)), timestamp=[5])


def test_fifo_wraparound_overwrites_oldest():
    bank = ExternalMemoryBank(MemoryConfig(key_dim=2, capacity=5, eviction="fifo"))
    bank.add(np.ones((3, 2)), timestamp=[0, 1, 2])
    slots = bank.add(np.ones((4, 2)), timestamp=[3, 4, 5, 6])
    assert slots.tolist() == [3, 4, 0, 1]
    assert sorted(bank.metadata("timestamp").tolist()) == [2, 3, 4, 5, 6]
    slots = bank.add(np.ones((7, 2)), timestamp=np.arange(10, 17))  # longer than the memory
    assert len(bank) == 5 and sorted(bank.metadata("timestamp").tolist()) == [12, 13, 14, 15, 16]
    assert len(slots) == 5


def test_lru_evicts_least_recently_retrieved():
    bank = ExternalMemoryBank(MemoryConfig(key_dim=4, capacity=4, eviction="lru", backend="numpy"))
    bank.add(np.eye(4), timestamp=[0, 1, 2, 3])
    bank.search(np.eye(4)[[0]], k=1, as_of=NO_TIME_FILTER)  # entry 0 used recently
    bank.add(np.ones((1, 4)), timestamp=[9])
    assert sorted(bank.metadata("timestamp").tolist()) == [0, 2, 3, 9]  # 1 was the least recently used


@pytest.mark.parametrize("sampling", [False, True])
def test_importance_keeps_rare_large_moves(sampling):
    rng = np.random.default_rng(0)
    n, cap = 2000, 200
    ret = rng.normal(0, 0.01, size=n)
    crash = np.arange(100, 110)
    ret[crash] = -0.08
    banks = {}
    for policy in ("fifo", "importance"):
        bank = ExternalMemoryBank(MemoryConfig(key_dim=8, capacity=cap, eviction=policy,
                                               importance_sampling=sampling, importance_alpha=2.0, seed=1))
        for s in range(0, n, 50):  # a stream of batches
            sl = slice(s, s + 50)
            bank.add(rng.normal(size=(50, 8)), timestamp=np.arange(n)[sl], available_at=np.arange(n)[sl] + 1,
                     future_return=ret[sl])
        banks[policy] = np.isin(crash, bank.metadata("timestamp")).mean()
    assert banks["fifo"] == 0.0
    assert banks["importance"] >= 0.8


def test_sample_by_priority_follows_p_alpha():
    p = np.array([1.0, 1.0, 8.0])
    draws = sample_by_priority(p, 20000, alpha=1.0, rng=np.random.default_rng(0))
    assert abs(np.mean(draws == 2) - 0.8) < 0.02
    draws = sample_by_priority(p, 20000, alpha=0.0, rng=np.random.default_rng(0))
    assert abs(np.mean(draws == 2) - 1 / 3) < 0.02


def test_update_keys_changes_search_and_ann_index():
    for backend in ("auto", "ivf", "hnsw"):
        bank, keys, _ = _bank(n=3000, backend=backend)
        target = np.zeros((1, 16))
        target[0, 3] = 1.0
        before = bank.search(target, k=1, as_of=NO_TIME_FILTER).indices[0, 0]
        slot = (before + 1) % 3000
        bank.update_keys([slot], target)
        assert bank.search(target, k=1, as_of=NO_TIME_FILTER).indices[0, 0] == slot, backend


def test_approximate_backends_recall():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(50, 32))
    keys = centers[rng.integers(0, 50, 8000)] + 0.3 * rng.normal(size=(8000, 32))
    q = centers[rng.integers(0, 50, 100)] + 0.3 * rng.normal(size=(100, 32))
    exact = ExternalMemoryBank(MemoryConfig(key_dim=32, capacity=8000, backend="torch"))
    exact.add(keys)
    ref = exact.search(q, k=10, as_of=NO_TIME_FILTER).indices
    for backend in ("ivf", "hnsw"):
        bank = ExternalMemoryBank(MemoryConfig(key_dim=32, capacity=8000, backend=backend, ivf_nprobe=32))
        bank.add(keys)
        assert recall_at_k(bank.search(q, k=10, as_of=NO_TIME_FILTER).indices, ref) > 0.9, backend


def test_recall_at_k():
    assert recall_at_k(np.array([[1, 2, 3]]), np.array([[3, 2, 1]])) == 1.0
    assert recall_at_k(np.array([[1, 9, -1]]), np.array([[1, 2, -1]])) == 0.5


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="backend"):
        MemoryConfig(backend="annoy")
    with pytest.raises(ValueError, match="eviction"):
        MemoryConfig(eviction="random")
    with pytest.raises(RuntimeError, match="faiss-gpu|GPU"):
        if not torch.cuda.is_available():
            ExternalMemoryBank(MemoryConfig(backend="faiss-gpu"))
        else:  # pragma: no cover
            raise RuntimeError("GPU")


def test_reset_and_free_form_metadata():
    bank = ExternalMemoryBank(MemoryConfig(key_dim=2, capacity=4))
    bank.add(np.ones((2, 2)), timestamp=[1, 2], available_at=[1, 2], vol=[0.1, 0.2], tag=["a", "bb"])
    bank.add(np.ones((1, 2)))  # omitted fields are filled
    assert np.isnan(bank.metadata("vol")[2]) and bank.metadata("tag")[2] == ""
    res = bank.search(np.ones((1, 2)), k=4, as_of=NO_TIME_FILTER)
    assert set(res.metadata("tag")[0]) == {"a", "bb", ""}
    bank.reset()
    assert len(bank) == 0 and "vol" not in bank.metadata_names


def test_nat_available_at_is_never_retrieved_and_nat_timestamp_refused():
    """WindowSet.available_at is NaT past the data's end: such an entry must never be found (NaT as int64 is
    the smallest time, i.e. "always available", if nobody looks)."""
    bank = ExternalMemoryBank(MemoryConfig(key_dim=2, capacity=8, backend="numpy"))
    end = pd.DatetimeIndex(["2020-01-01", "2020-01-02", "2020-01-03"])
    avail = pd.DatetimeIndex(["2020-01-02", "2020-01-03", None])  # the last label is not known yet
    bank.add(np.eye(2)[[0, 0, 1]], timestamp=end, available_at=avail, future_return=[0.1, 0.2, np.nan])
    for as_of in (pd.Timestamp("2020-01-03"), pd.Timestamp("2100-01-01")):
        res = bank.search(np.eye(2)[[1]], k=3, as_of=as_of)
        assert 2 not in res.indices[res.mask].tolist()
        assert res.mask.sum() == 2
    assert (bank.metadata("available_at")[2] == np.iinfo(np.int64).max)  # same as WindowSet.available_at_ns()
    with pytest.raises(ValueError, match="NaT in 1 of 2 rows"):
        bank.add(np.eye(2), timestamp=pd.DatetimeIndex(["2020-01-04", None]), available_at=pd.Timestamp("2020-02-01"))
    with pytest.raises(ValueError, match="before timestamp in 1 of 2 rows"):
        bank.add(np.eye(2), timestamp=[10, 20], available_at=[15, 19])
    assert len(bank) == 3  # refused batches wrote nothing


@pytest.mark.parametrize("field", ["regime", "importance", "vol"])
def test_outcome_like_fields_need_available_at(field):
    """Only fields known at the window's end (key, timestamp, symbol) may be stored without available_at."""
    bank = ExternalMemoryBank(MemoryConfig(key_dim=2, capacity=8))
    with pytest.raises(ValueError, match=f"{field} given without available_at"):
        bank.add(np.eye(2), timestamp=[1, 2], **{field: [1.0, 2.0]})
    bank.add(np.eye(2), timestamp=[1, 2], symbol=["A", "B"])  # identifiers are known at t
    bank.add(np.eye(2), timestamp=[3, 4], available_at=[3, 4], **{field: [1.0, 2.0]})  # an explicit declaration
    assert len(bank) == 4 and bank.metadata("available_at").tolist() == [1, 2, 3, 4]


def test_lru_block_eviction_is_exact_and_amortised(monkeypatch):
    """Victims are chosen in blocks (one O(M) pass per capacity//64 rows), yet every single add still
    evicts exactly the least recently used entry present, also after queued victims were retrieved."""
    from course_lib.memory import bank as bank_mod

    calls = []
    real = bank_mod.lru_order
    monkeypatch.setattr(bank_mod, "lru_order", lambda *a: calls.append(1) or real(*a))
    cap, rng = 640, np.random.default_rng(0)
    bank = ExternalMemoryBank(MemoryConfig(key_dim=8, capacity=cap, eviction="lru", backend="numpy"))
    keys = rng.normal(size=(cap, 8))
    for s in range(0, cap, 64):
        bank.add(keys[s:s + 64], timestamp=np.arange(s, s + 64))
    bank.search(keys[rng.integers(0, cap, 50)], k=3, as_of=NO_TIME_FILTER)
    for step in range(120):
        expect = np.lexsort((bank._insert_seq, bank._access.last))[0]
        slot = bank.add(rng.normal(size=(1, 8)), timestamp=[cap + step])
        assert slot.tolist() == [expect], step
        if step % 7 == 0:  # retrieve the next queued victims: they must now survive
            queued = bank._victims.slots[bank._victims.pos:bank._victims.pos + 2]
            bank.search(bank.keys[queued], k=1, as_of=NO_TIME_FILTER)
    assert len(calls) <= 120 // (cap // 64) + 15  # one selection per block, plus refills after skips


def test_importance_block_eviction_takes_lowest_priority():
    cap, rng = 640, np.random.default_rng(1)
    bank = ExternalMemoryBank(MemoryConfig(key_dim=4, capacity=cap, eviction="importance",
                                           importance_sampling=False))
    prio = rng.uniform(1, 2, cap).astype(np.float32)
    bank.add(rng.normal(size=(cap, 4)), timestamp=np.arange(cap), available_at=np.arange(cap), importance=prio)
    lowest = np.argsort(prio)[:40]
    rescued = lowest[3]  # queued as a victim, then its priority rises: it must survive
    evicted = []
    for step in range(39):
        evicted += bank.add(rng.normal(size=(1, 4)), timestamp=[cap + step], available_at=[cap + step],
                            importance=[5.0]).tolist()
        if step == 0:
            bank.update_importance([rescued], 10.0)
    assert set(evicted) == set(lowest.tolist()) - {rescued}
    assert bank.metadata("importance")[rescued] == 10.0


def test_latest_available_bound_skips_scan_and_stays_causal(monkeypatch):
    """All-visible query batches skip the causal filter's O(M) scan; the cached bound never hides a later
    entry (it follows adds) and is recomputed when the entry holding it is evicted."""
    bank = ExternalMemoryBank(MemoryConfig(key_dim=2, capacity=3, backend="numpy"))
    bank.add(np.eye(2)[[0, 0]], timestamp=[1, 2], available_at=[2, 3])
    assert bank.search(np.eye(2)[[0]], k=3, as_of=10).mask.sum() == 2
    bank.add(np.eye(2)[[0]], timestamp=[3], available_at=[20])  # later than the cached bound
    res = bank.search(np.eye(2)[[0]], k=3, as_of=10)
    assert res.mask.sum() == 2 and 2 not in res.indices[res.mask]
    bank.add(np.eye(2)[[1, 1]], timestamp=[4, 5], available_at=[5, 6])  # fifo: evicts slots 0 and 1
    bank.add(np.eye(2)[[1]], timestamp=[6], available_at=[7])  # evicts slot 2, which held the bound 20
    assert bank._max_avail is None or bank._max_avail >= 7
    assert bank.search(np.eye(2)[[1]], k=3, as_of=7).mask.sum() == 3
    assert bank._latest_available() == 7
    scans = []
    real = np.flatnonzero
    monkeypatch.setattr(np, "flatnonzero", lambda *a, **kw: scans.append(1) or real(*a, **kw))
    bank.search(np.eye(2)[[1, 1]], k=3, as_of=[7, 8])
    assert not scans, "an all-visible batch scanned every entry"
    bank.search(np.eye(2)[[1, 1]], k=3, as_of=[6, 8])
    assert scans


def test_access_count_counts_repeated_hits():
    bank = ExternalMemoryBank(MemoryConfig(key_dim=2, capacity=4, backend="numpy"))
    bank.add(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1]]))
    bank.search(np.array([[1.0, 0.0], [1.0, 0.05], [0.0, 1.0]]), k=2, as_of=NO_TIME_FILTER)
    assert bank.access_count.tolist() == [2, 1, 3]  # slot 2 is second best for the third query too
    bank.search(np.array([[1.0, 0.0]]), k=1, as_of=NO_TIME_FILTER)
    assert bank.access_count.tolist() == [3, 1, 3]


def test_two_stage_topk_with_causal_filter_matches_brute_force():
    """The torch kernel's two-stage top-k only runs from 32,768 entries: check it there, with a causal
    filter, several query chunks (the device-side mask is built per chunk) and a padded last block."""
    from course_lib.memory import backends as B

    n, d = 40_003, 16
    assert n >= B._TWO_STAGE_MIN and n % B._BLOCK
    rng = np.random.default_rng(0)
    keys = rng.normal(size=(n, d)).astype(np.float32)
    t = np.arange(n, dtype=np.int64)
    bank = ExternalMemoryBank(MemoryConfig(key_dim=d, capacity=n, backend="torch", chunk_mb=1))
    bank.add(keys, timestamp=t, available_at=t + 5)
    q = np.concatenate([keys[[5, 40_000, 39_990]], rng.normal(size=(20, d))]).astype(np.float32)
    as_of = np.concatenate([[10, 40_010, 39_990], rng.integers(0, n, 20)])
    res = bank.search(q, k=16, as_of=as_of)
    assert res.backend == "torch"
    idx, top = _brute(keys, q, 16, t + 5, as_of)
    np.testing.assert_allclose(res.scores, np.where(np.isfinite(top), top, 0.0), atol=1e-5)
    np.testing.assert_array_equal(res.mask, idx >= 0)
    assert res.mask[0].sum() == 6  # as_of 10 sees entries 0..5 only
    assert (res.indices[1, 0] == 40_000) and not (res.indices[2] == 39_990).any()
    free = bank.search(q, k=16, as_of=NO_TIME_FILTER)
    np.testing.assert_allclose(free.scores, _brute(keys, q, 16)[1], atol=1e-5)


def test_update_importance_accumulates_repeated_slots():
    bank = ExternalMemoryBank(MemoryConfig(key_dim=2, capacity=4))
    bank.add(np.eye(2)[[0, 1, 0]], timestamp=[1, 2, 3], available_at=[1, 2, 3], importance=[1.0, 2.0, 3.0])
    bank.update_importance([0, 0, 2], [0.5, 0.25, 1.0], accumulate=True)  # e.g. attention summed per slot
    np.testing.assert_allclose(bank.metadata("importance"), [1.75, 2.0, 4.0])
    bank.update_importance([1], 9.0)
    np.testing.assert_allclose(bank.metadata("importance"), [1.75, 9.0, 4.0])
    with pytest.raises(IndexError):
        bank.update_importance([3], 1.0)


def test_bank_sample_follows_priorities():
    bank = ExternalMemoryBank(MemoryConfig(key_dim=2, capacity=8, seed=0))
    with pytest.raises(ValueError, match="empty"):
        bank.sample(3)
    bank.add(np.eye(2)[[0, 1, 0]], timestamp=[1, 2, 3], available_at=[1, 2, 3], importance=[1.0, 1.0, 8.0])
    draws = bank.sample(20_000)
    assert draws.min() >= 0 and draws.max() < 3
    assert abs(np.mean(draws == 2) - 0.8) < 0.02
    assert abs(np.mean(bank.sample(20_000, alpha=0.0) == 2) - 1 / 3) < 0.02
    assert sorted(bank.sample(3, replace=False).tolist()) == [0, 1, 2]


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("spread", ["dense", "sparse"])
def test_causal_filter_dense_and_sparse_paths_match_brute_force(backend, spread):
    """Training-like batches (queries from the whole stored period: most entries hidden from some query)
    take the full-matrix mask; live-like ones (queries near the end) the per-column one. Both are exact."""
    from course_lib.memory.backends import CausalFilter

    bank, keys, t = _bank(n=3000, backend=backend)
    rng = np.random.default_rng(11)
    pick = rng.integers(0, 3000, 64) if spread == "dense" else rng.integers(2900, 3000, 64)
    as_of = t[pick]
    avail = bank.metadata("available_at")
    assert CausalFilter(avail, as_of).dense == (spread == "dense")
    q = keys[pick] + 0.05 * rng.normal(size=(64, keys.shape[1]))
    res = bank.search(q, k=12, as_of=as_of)
    idx, top = _brute(keys, q, 12, avail, as_of)
    np.testing.assert_array_equal(res.mask, idx >= 0)
    np.testing.assert_allclose(res.scores, np.where(np.isfinite(top), top, 0.0), atol=1e-5)
    assert (avail[res.indices[res.mask]] <= np.repeat(as_of[:, None], 12, 1)[res.mask]).all()


@pytest.mark.parametrize("sampling", [False, True])
def test_importance_eviction_never_ranks_by_an_unresolved_label(sampling):
    """Change the outcomes of entries still pending at t: the entries a query at t can see do not move.

    Labels resolve 20 bars after the window ends; the default priority is |future_return|. Before the fix,
    eviction ranked pending entries by their (future) |return| too, so a big future move rescued an entry
    and pushed out a resolved one that a query at t could otherwise still see.
    """
    n, cap, h, t_cut = 600, 100, 20, 400

    def visible_at_cut(future_scale: float) -> list[int]:
        rng = np.random.default_rng(0)
        ret = rng.normal(0, 0.01, size=n)
        ret[t_cut - h:] *= future_scale  # outcomes resolved only after t_cut
        bank = ExternalMemoryBank(MemoryConfig(key_dim=8, capacity=cap, eviction="importance",
                                               importance_sampling=sampling, seed=3))
        keys = rng.normal(size=(n, 8))
        for s in range(0, t_cut, 10):  # a stream up to the cut; each add happens at its batch's last bar
            sl = slice(s, s + 10)
            bank.add(keys[sl], timestamp=np.arange(n)[sl], available_at=np.arange(n)[sl] + h,
                     future_return=ret[sl])
        res = bank.search(np.eye(8), k=cap, as_of=t_cut - 1)
        return sorted(res.metadata("timestamp")[res.mask].tolist())

    base = visible_at_cut(1.0)
    assert base, "some resolved entries must be visible"
    for scale in (0.0, 50.0):
        assert visible_at_cut(scale) == base


def test_importance_eviction_falls_back_to_oldest_pending_when_nothing_is_resolved():
    bank = ExternalMemoryBank(MemoryConfig(key_dim=2, capacity=3, eviction="importance", importance_sampling=False))
    bank.add(np.eye(2)[[0, 1, 0]], timestamp=[0, 1, 2], available_at=[100, 100, 100], future_return=[0.0, 9.0, 9.0])
    bank.add(np.eye(2)[[1]], timestamp=[3], available_at=[100], future_return=[5.0])
    assert sorted(bank.metadata("timestamp").tolist()) == [1, 2, 3]  # the oldest pending went, not the smallest


def test_search_without_a_time_is_refused_and_the_opt_out_is_named():
    from course_lib import MissingTimeError, TierConfig, TieredMemory

    bank = ExternalMemoryBank(MemoryConfig(key_dim=2, capacity=4))
    bank.add(np.eye(2), timestamp=[0, 5], available_at=[0, 5])
    with pytest.raises(MissingTimeError, match="NO_TIME_FILTER"):
        bank.search(np.eye(2), k=2)
    with pytest.raises(MissingTimeError):
        bank.search(np.eye(2), k=2, as_of=None)
    assert bank.search(np.eye(2), k=2, as_of=NO_TIME_FILTER).mask.all()
    assert bank.search(np.eye(2), k=2, as_of=0).mask.sum() == 2  # one eligible entry per query
    tm = TieredMemory(TierConfig(key_dim=2, hot_capacity=2, warm_capacity=2, cold_capacity=2))
    tm.add(np.eye(2), available_at=[0, 5])
    with pytest.raises(MissingTimeError):
        tm.search(np.eye(2), k=1)
    assert tm.search(np.eye(2), k=1, as_of=NO_TIME_FILTER)["mask"].all()


def _same_result(a, b):
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.keys, b.keys)
    for name in a.metadata_names:
        np.testing.assert_array_equal(a.metadata(name), b.metadata(name))


def test_single_query_time_ordered_prefix_equals_the_masked_search():
    """A bank filled in time order ranks only the visible prefix of its slots for one query; the same
    entries stored out of time order take the masked path. Both give the same answer, for every as_of
    (before the first label, in the middle, after the last), and as_of between two entries' times."""
    bank, keys, t = _bank(n=400)
    assert bank._time_ordered
    rng = np.random.default_rng(3)
    perm = rng.permutation(400)
    shuffled = ExternalMemoryBank(bank.config)
    shuffled.add(keys[perm], values=bank.values[perm], timestamp=t[perm], available_at=t[perm] + 250)
    assert not shuffled._time_ordered
    for as_of in (t[0], t[0] + 250, t[100] + 251, t[250] + 249, t[-1] + 250, t[-1] + 10**6):
        q = rng.normal(size=(1, 16))
        a, b = bank.search(q, k=7, as_of=int(as_of)), shuffled.search(q, k=7, as_of=int(as_of))
        np.testing.assert_array_equal(perm[b.indices[b.mask]], a.indices[a.mask])  # same entries, same order
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.mask.sum(), min(7, int((t + 250 <= as_of).sum())))
        assert (bank.metadata("available_at")[a.indices[a.mask]] <= as_of).all()


def test_single_query_equals_the_same_query_in_a_batch():
    bank, keys, t = _bank(n=3000)
    rng = np.random.default_rng(4)
    q = rng.normal(size=(9, 16))
    as_of = t[rng.integers(0, 3000, 9)]
    batch = bank.search(q, k=5, as_of=as_of)
    for i in range(9):
        one = bank.search(q[i], k=5, as_of=int(as_of[i]))
        np.testing.assert_array_equal(one.indices[0], batch.indices[i])
        np.testing.assert_allclose(one.scores[0], batch.scores[i], rtol=0, atol=1e-6)


def test_time_order_is_dropped_by_eviction_and_out_of_order_adds_and_searches_stay_causal():
    rng = np.random.default_rng(5)
    fifo = ExternalMemoryBank(MemoryConfig(key_dim=8, capacity=50, eviction="fifo"))
    t = np.arange(80, dtype=np.int64) * 10
    keys = rng.normal(size=(80, 8))
    fifo.add(keys[:50], timestamp=t[:50], available_at=t[:50] + 5)
    assert fifo._time_ordered
    fifo.add(keys[50:], timestamp=t[50:], available_at=t[50:] + 5)  # wraps: slot order is no longer time order
    assert not fifo._time_ordered
    late = ExternalMemoryBank(MemoryConfig(key_dim=8, capacity=100))
    late.add(keys[40:], timestamp=t[40:], available_at=t[40:] + 5)
    late.add(keys[:40], timestamp=t[:40], available_at=t[:40] + 5)  # older entries arrive later
    assert not late._time_ordered
    for bank in (fifo, late):
        for as_of in (t[45], t[60] + 5, t[79] + 5):
            res = bank.search(keys[70], k=10, as_of=int(as_of))
            avail = bank.metadata("available_at")
            assert (avail[res.indices[res.mask]] <= as_of).all()
            assert res.mask.sum() == min(10, int((avail <= as_of).sum()))
    late.reset()
    assert late._time_ordered


def test_time_order_survives_save_and_load(tmp_path):
    bank, keys, t = _bank(n=200)
    again = ExternalMemoryBank.load(bank.save(tmp_path / "m.npz"))
    assert again._time_ordered
    q = np.random.default_rng(6).normal(size=16)
    _same_result(bank.search(q, k=4, as_of=int(t[120])), again.search(q, k=4, as_of=int(t[120])))


def test_numpy_and_torch_queries_find_the_same_neighbours():
    """numpy queries are normalised like stored keys, tensors like torch does (training's path): the scores
    may differ in the last bit, the neighbours do not."""
    bank, keys, t = _bank(n=2000)
    q = np.random.default_rng(8).normal(size=(50, 16)).astype(np.float32)
    a = bank.search(q, k=8, as_of=t[1500])
    b = bank.search(torch.from_numpy(q), k=8, as_of=t[1500])
    np.testing.assert_array_equal(a.indices, b.indices.numpy())
    np.testing.assert_allclose(a.scores, b.scores.numpy(), rtol=0, atol=1e-6)


def test_single_query_counts_accesses_like_a_batch():
    bank, keys, t = _bank(n=300)
    other = ExternalMemoryBank(bank.config)
    other.add(keys, values=bank.values, timestamp=t, available_at=t + 250)
    q = np.random.default_rng(2).normal(size=(6, 16))
    for row in q:
        bank.search(row, k=5, as_of=int(t[-1]))
    other.search(q, k=5, as_of=int(t[-1]))
    np.testing.assert_array_equal(bank.access_count, other.access_count)
