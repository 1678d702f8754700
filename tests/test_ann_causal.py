"""Causally filtered approximate search (IVF, HNSW): ids in available_at order, the rule as an id range.

A query at t sees only entries with available_at <= t, inside the approximate search: no leaks, k eligible
neighbours whenever they exist (also early in time), recall close to exact search, and after streaming
adds, overwrites, key refreshes and out-of-order arrivals.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from course_lib.memory import NO_TIME_FILTER, ExternalMemoryBank, MemoryConfig, recall_at_k

D, K, M = 16, 8, 4000


def _unit(rng, n):
    x = rng.normal(size=(n, D)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _bank(backend, keys, ts, capacity=None, **kw):
    cfg = MemoryConfig(key_dim=D, capacity=capacity or len(keys), backend=backend, **kw)
    bank = ExternalMemoryBank(cfg)
    bank.add(keys, timestamp=ts, available_at=ts + 5)
    return bank


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    centres = _unit(rng, 40)
    keys = centres[rng.integers(0, 40, M)] + 0.3 * rng.normal(size=(M, D)).astype(np.float32)
    queries = centres[rng.integers(0, 40, 64)] + 0.3 * rng.normal(size=(64, D)).astype(np.float32)
    as_of = rng.integers(M // 10, M, 64)  # a training-like mix of times; the earliest see 10% of entries
    return keys.astype(np.float32), queries.astype(np.float32), np.arange(M, dtype=np.int64), as_of


def _check_causal(res, as_of, ts_avail):
    avail = res.metadata("available_at")
    assert not (res.mask & (avail > as_of[:, None])).any()
    eligible = (ts_avail[None, :] <= as_of[:, None]).sum(1)
    assert (res.mask.sum(1) == np.minimum(K, eligible)).all()


@pytest.mark.parametrize("backend,kw", [("ivf", dict(ivf_nprobe=8)), ("hnsw", dict(hnsw_ef_search=64))])
def test_mixed_times_no_leak_exactly_k_and_recall(data, backend, kw):
    keys, queries, ts, as_of = data
    exact = _bank("numpy", keys, ts)
    ann = _bank(backend, keys, ts, **kw)
    truth = exact.search(queries, k=K, as_of=as_of)
    got = ann.search(queries, k=K, as_of=as_of)
    _check_causal(got, as_of, ts + 5)
    assert recall_at_k(got.indices, truth.indices) >= 0.9
    early = ann.search(queries[:8], k=K, as_of=M // 20)  # 5% of the memory visible
    assert early.mask.all() and (early.metadata("available_at") <= M // 20).all()
    everything = ann.search(queries, k=K, as_of=NO_TIME_FILTER)
    assert everything.mask.all()


def test_exhaustive_ivf_equals_exact_and_the_future_does_not_move_the_past(data):
    keys, queries, ts, as_of = data
    T = int(np.median(as_of))
    past = as_of <= T
    exact = _bank("numpy", keys, ts).search(queries, k=K, as_of=as_of)
    ivf = _bank("ivf", keys, ts, ivf_nlist=16, ivf_nprobe=16)  # every cell visited: exact
    got = ivf.search(queries, k=K, as_of=as_of)
    np.testing.assert_array_equal(got.indices, exact.indices)
    changed = keys.copy()
    future = ts + 5 > T
    changed[future] = _unit(np.random.default_rng(9), int(future.sum()))  # rewrite every later entry
    again = _bank("ivf", changed, ts, ivf_nlist=16, ivf_nprobe=16).search(queries, k=K, as_of=as_of)
    np.testing.assert_array_equal(again.indices[past], got.indices[past])
    np.testing.assert_allclose(again.scores[past], got.scores[past], atol=1e-6)


@pytest.mark.parametrize("backend", ["ivf", "hnsw"])
def test_streaming_overwrites_refreshes_and_out_of_order(data, backend):
    keys, queries, ts, as_of = data
    light = dict(hnsw_m=8, hnsw_ef_construction=24) if backend == "hnsw" else {}
    bank = ExternalMemoryBank(MemoryConfig(key_dim=D, capacity=3000, backend=backend, **light))
    exact = ExternalMemoryBank(MemoryConfig(key_dim=D, capacity=3000, backend="numpy"))
    for s in range(0, M, 500):  # fills, then the FIFO ring overwrites the oldest
        for b in (bank, exact):
            b.add(keys[s:s + 500], timestamp=ts[s:s + 500], available_at=ts[s:s + 500] + 5)
        if s in (2000, 3000):  # searches between adds: the index follows the ring buffer
            bank.search(queries[:4], k=K, as_of=ts[min(s + 499, M - 1)])
    slots = np.arange(100, 200)
    fresh = _unit(np.random.default_rng(5), 100)
    for b in (bank, exact):
        b.update_keys(slots, fresh)
    late = _unit(np.random.default_rng(6), 50)  # arrives now, but its labels resolved long ago
    t_old = np.arange(50, dtype=np.int64) + 2000
    for b in (bank, exact):
        b.add(late, timestamp=t_old, available_at=t_old + 5)
    q = np.concatenate([queries, fresh[:8], late[:8]])
    t = np.concatenate([as_of, np.full(16, M + 10)])
    got, truth = bank.search(q, k=K, as_of=t), exact.search(q, k=K, as_of=t)
    avail = exact.metadata("available_at")
    _check_causal(got, t, avail)
    assert recall_at_k(got.indices, truth.indices) >= 0.85
    assert (got.indices[64:72, 0] == slots[:8]).all()  # refreshed keys are found under their slot
    assert np.isin(got.indices[72:, 0], truth.indices[72:, 0]).all()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), backend=st.sampled_from(["ivf", "hnsw"]), shuffle=st.booleans())
def test_property_no_leak_and_k_for_random_times(data, seed, backend, shuffle):
    keys, queries, _, _ = data
    rng = np.random.default_rng(seed)
    n = 2500
    avail = np.sort(rng.integers(0, 10_000, n))
    if shuffle:  # entries arriving out of time order
        avail = rng.permutation(avail)
    light = dict(hnsw_m=8, hnsw_ef_construction=24) if backend == "hnsw" else {}
    bank = ExternalMemoryBank(MemoryConfig(key_dim=D, capacity=n, backend=backend, **light))
    bank.add(keys[:n], timestamp=avail, available_at=avail)
    t = rng.integers(-10, 11_000, 32)
    res = bank.search(queries[:32], k=K, as_of=t)
    _check_causal(res, t, avail)
