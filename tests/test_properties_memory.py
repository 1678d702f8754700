"""Property tests: the memory bank under random sequences of add, evict, search, save and load.

A hypothesis state machine drives an :class:`course_lib.ExternalMemoryBank` with a small capacity (so
eviction happens all the time) through random operations, and keeps its own record of what each slot
holds, taken from what ``add`` reported (the slot ids it returned) rather than from the bank's internals.
After every search it checks:

* exactly ``k`` columns in every array, whatever the memory's size, and ``mask == (indices >= 0)`` with
  the valid neighbours first;
* no neighbour whose ``available_at`` is after the query's ``as_of`` (``NO_TIME_FILTER`` only where the
  rule says so), and as many neighbours as there are eligible entries, up to ``k``;
* the answer equals a brute-force cosine top-k over the eligible entries (scores to float32 precision;
  with tied scores any of the tied entries may be returned), for every exact backend;
* keys, values and every metadata field of each neighbour are the ones added to that slot.

Save and load must give a bank with identical contents that answers the next search identically. FIFO
eviction is also checked exactly (the live entries are the last ``capacity`` added).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import course_lib as cl
from course_lib.memory.config import BACKENDS

#: The exact kernels (``auto`` picks one of them per search); ivf/hnsw are approximate, faiss-gpu needs a GPU.
EXACT = tuple(b for b in BACKENDS if b in ("auto", "numpy", "torch", "faiss"))
NEVER = np.iinfo(np.int64).max
TOL = 2e-5  # float32 dot products of unit vectors, summed in different orders by different kernels


class BankMachine(RuleBasedStateMachine):
    backend = "numpy"
    eviction = "fifo"

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="bank_props_"))
        self.bank: cl.ExternalMemoryBank | None = None

    def teardown(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    # ---------------------------------------------------------------- setup
    @initialize(capacity=st.integers(1, 12), key_dim=st.integers(1, 6), value_dim=st.integers(0, 3),
                sampling=st.booleans(), seed=st.integers(0, 2**16))
    def setup(self, capacity, key_dim, value_dim, sampling, seed):
        cfg = cl.MemoryConfig(key_dim=key_dim, value_dim=value_dim, capacity=capacity, backend=self.backend,
                              eviction=self.eviction, importance_sampling=sampling, seed=seed)
        self.bank = cl.ExternalMemoryBank(cfg)
        self.rng = np.random.default_rng(seed)
        self.ref: dict[int, dict] = {}  # slot -> what add() put there
        self.uids: list[int] = []  # every uid added, in order
        self.now = 1_000  # the clock of the stream (int64 ns; only the order matters)
        self.saves = 0

    @property
    def cfg(self) -> cl.MemoryConfig:
        return self.bank.config

    # ---------------------------------------------------------------- operations
    @rule(n=st.integers(1, 15), horizon=st.integers(0, 6), spread_h=st.booleans(), with_return=st.booleans(),
          copies=st.integers(0, 3), unresolved=st.integers(0, 2))
    def add(self, n, horizon, spread_h, with_return, copies, unresolved):
        d = self.cfg.key_dim
        keys = self.rng.normal(size=(n, d)).astype(np.float32)
        live = list(self.ref.values())
        for i in range(min(copies, n, len(live))):  # exact copies of stored keys: tied scores
            keys[i] = live[int(self.rng.integers(len(live)))]["key"] * float(self.rng.uniform(0.5, 3))
        ts = self.now + np.arange(n, dtype=np.int64)
        h = self.rng.integers(0, horizon + 1, n) if spread_h else np.full(n, horizon)
        avail = ts + h
        avail[: min(unresolved, n)] = NEVER  # labels beyond the data's end: never retrievable
        values = self.rng.normal(size=(n, self.cfg.value_dim)).astype(np.float32)
        uids = np.arange(len(self.uids), len(self.uids) + n, dtype=np.int64)
        kw = {"future_return": self.rng.normal(0, 0.02, n)} if with_return else {}
        slots = self.bank.add(keys, values=values, timestamp=ts, available_at=avail, uid=uids, **kw)
        self.now += n + int(self.rng.integers(0, 3))
        kept = np.arange(max(0, n - self.cfg.capacity), n)  # a batch longer than the memory keeps its newest rows
        assert len(slots) == len(kept), "add must return one slot per stored row"
        assert len(set(slots.tolist())) == len(slots), f"one batch was given repeated slots {slots}"
        assert ((slots >= 0) & (slots < self.cfg.capacity)).all()
        for slot, i in zip(slots.tolist(), kept):
            unit = keys[i] / max(np.linalg.norm(keys[i]), 1e-12)
            self.ref[slot] = {"uid": int(uids[i]), "key": unit, "value": values[i], "ts": int(ts[i]),
                              "avail": int(avail[i])}
        self.uids.extend(uids.tolist())

    @rule(priority=st.floats(0, 10, allow_nan=False), share=st.floats(0, 1))
    def reprioritise(self, priority, share):
        """Importance-style feedback (summed attention weights) on part of the memory."""
        if not self.ref:
            return
        slots = np.array(sorted(self.ref))
        pick = slots[self.rng.random(len(slots)) < share]
        self.bank.update_importance(pick, priority, accumulate=bool(self.rng.integers(2)))

    @rule(nq=st.integers(1, 6), k=st.integers(1, 16), when=st.sampled_from(["scalar", "per_query", "none"]),
          from_stored=st.booleans())
    def search(self, nq, k, when, from_stored):
        d = self.cfg.key_dim
        q = self.rng.normal(size=(nq, d)).astype(np.float32)
        if from_stored and self.ref:  # a query that is exactly a stored key (the "retrieve itself" case)
            live = list(self.ref.values())
            q[0] = live[int(self.rng.integers(len(live)))]["key"]
        lo, hi = 990, self.now + 5
        if when == "scalar":
            as_of = int(self.rng.integers(lo, hi))
            times = np.full(nq, as_of)
        elif when == "per_query":
            times = self.rng.integers(lo, hi, nq).astype(np.int64)
            as_of = times
        else:
            as_of, times = cl.NO_TIME_FILTER, np.full(nq, NEVER)
        res = self.bank.search(q, k=k, as_of=as_of)
        self.check(res, q, k, times)

    @rule()
    def search_without_time_is_refused(self):
        with pytest.raises(cl.MissingTimeError):
            self.bank.search(np.ones((1, self.cfg.key_dim), np.float32), k=2)

    @precondition(lambda self: self.bank is not None)
    @rule(backend=st.sampled_from(EXACT))
    def save_and_load(self, backend):
        """Persist, reload (possibly with another exact backend) and carry on with the loaded bank."""
        self.saves += 1
        path = self.dir / f"bank{self.saves}.npz"
        self.bank.save(path)
        other = cl.ExternalMemoryBank.load(path, expect_key_dim=self.cfg.key_dim, backend=backend)
        assert len(other) == len(self.bank)
        np.testing.assert_array_equal(other.keys, self.bank.keys)
        np.testing.assert_array_equal(other.values, self.bank.values)
        assert other.metadata_names == self.bank.metadata_names
        for name in self.bank.metadata_names:
            np.testing.assert_array_equal(other.metadata(name), self.bank.metadata(name), err_msg=name)
        np.testing.assert_array_equal(other.access_count, self.bank.access_count)
        q = self.rng.normal(size=(3, self.cfg.key_dim)).astype(np.float32)
        t = np.array([self.now, self.now // 2 + 500, 995])
        a, b = self.bank.search(q, k=4, as_of=t), other.search(q, k=4, as_of=t)
        np.testing.assert_array_equal(a.mask, b.mask)
        np.testing.assert_allclose(a.scores, b.scores, atol=TOL)  # (tied entries may come in another order)
        self.bank = other

    # ---------------------------------------------------------------- checks
    def check(self, res, q, k, times):
        nq, d, vd = len(q), self.cfg.key_dim, self.cfg.value_dim
        scores, idx, mask = (np.asarray(a) for a in (res.scores, res.indices, res.mask))
        assert scores.shape == idx.shape == mask.shape == (nq, k), "not exactly k columns"
        assert np.asarray(res.keys).shape == (nq, k, d) and np.asarray(res.values).shape == (nq, k, vd)
        np.testing.assert_array_equal(mask, idx >= 0)
        avail = res.metadata("available_at")
        uid = res.metadata("uid") if "uid" in res.metadata_names else np.full((nq, k), -1)
        qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        for i in range(nq):
            eligible = [s for s, e in self.ref.items() if e["avail"] <= times[i]]
            m = min(k, len(eligible))
            assert mask[i].sum() == m, f"query {i}: {mask[i].sum()} neighbours, {m} eligible (k={k})"
            assert mask[i, :m].all(), "valid neighbours must come first"
            got = idx[i, :m]
            assert len(set(got.tolist())) == m, "a neighbour was returned twice"
            assert all(s in self.ref and self.ref[s]["avail"] <= times[i] for s in got.tolist()), \
                "a neighbour not yet available at the query time"
            assert (avail[i, :m] <= times[i]).all()
            true = np.array([float(qn[i] @ self.ref[s]["key"]) for s in got.tolist()])
            np.testing.assert_allclose(scores[i, :m], true, atol=TOL, err_msg="score is not the cosine")
            assert (np.diff(scores[i, :m]) <= TOL).all(), "scores are not best first"
            brute = np.sort([float(qn[i] @ self.ref[s]["key"]) for s in eligible])[::-1][:m]
            np.testing.assert_allclose(scores[i, :m], brute, atol=TOL, err_msg="differs from brute force")
            for j, s in enumerate(got.tolist()):
                e = self.ref[s]
                assert uid[i, j] == e["uid"]
                np.testing.assert_allclose(np.asarray(res.keys)[i, j], e["key"], atol=1e-6)
                np.testing.assert_allclose(np.asarray(res.values)[i, j], e["value"], atol=1e-6)
                assert res.metadata("timestamp")[i, j] == e["ts"]
            assert (scores[i, m:] == 0).all() and (idx[i, m:] == -1).all() and (uid[i, m:] == -1).all()
            assert not np.asarray(res.keys)[i, m:].any() and not np.asarray(res.values)[i, m:].any()

    @invariant()
    def contents_match_what_add_reported(self):
        if self.bank is None:
            return
        n = len(self.bank)
        assert n == len(self.ref) == min(len(self.uids), self.cfg.capacity)
        if n == 0:
            return
        assert sorted(self.ref) == list(range(n)), "the filled slots are not 0..size-1"
        uid = self.bank.metadata("uid")
        assert [uid[s] for s in range(n)] == [self.ref[s]["uid"] for s in range(n)]
        if self.eviction == "fifo":
            assert set(uid.tolist()) == set(self.uids[-self.cfg.capacity:]), "FIFO kept the wrong entries"
        assert len(set(uid.tolist())) == n, "one entry stored twice"


@pytest.mark.parametrize("eviction", cl.EVICTIONS)
@pytest.mark.parametrize("backend", EXACT)
def test_bank_under_random_operations(backend, eviction):
    machine = type(f"Bank_{backend}_{eviction}", (BankMachine,), {"backend": backend, "eviction": eviction})
    runs = max(4, settings.default.max_examples // 4)  # 12 machines: a quarter of the profile's examples each
    run_state_machine_as_test(machine, settings=settings(max_examples=runs, stateful_step_count=12))


@given(st.integers(1, 40), st.integers(1, 50), st.integers(1, 8), st.sampled_from(EXACT), st.integers(0, 1000))
def test_every_exact_backend_gives_the_same_neighbours(n, k, nq, backend, seed):
    """One bulk-loaded memory, all backends side by side: same neighbour scores for every query time."""
    rng = np.random.default_rng(seed)
    keys = rng.normal(size=(n, 5)).astype(np.float32)
    ts = np.arange(n, dtype=np.int64) * 10
    avail = ts + rng.integers(0, 40, n)
    q = rng.normal(size=(nq, 5)).astype(np.float32)
    as_of = rng.integers(-5, 10 * n + 40, nq)
    ref = cl.ExternalMemoryBank(key_dim=5, capacity=n, backend="numpy")
    ref.add(keys, timestamp=ts, available_at=avail)
    bank = cl.ExternalMemoryBank(key_dim=5, capacity=n, backend=backend)
    bank.add(keys, timestamp=ts, available_at=avail)
    a, b = ref.search(q, k=k, as_of=as_of), bank.search(q, k=k, as_of=as_of)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_allclose(a.scores, b.scores, atol=TOL)
    assert (b.metadata("available_at")[b.mask] <= np.broadcast_to(as_of[:, None], b.mask.shape)[b.mask]).all()
