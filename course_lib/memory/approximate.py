"""Approximate search for big memories: faiss IVF and HNSW indexes that keep the causal rule exact.

The exact kernels (:mod:`.backends`) read every key; past about 1e5 entries an approximate index answers a
big batch faster at a small loss of recall (lesson 02's backend table, ``benchmarks/bench_memory.py``).
:class:`IVFIndex` and :class:`HNSWIndex` number their entries in ``available_at`` order, so "what a query at
time t may see" is a range of ids, applied inside the index search. :func:`ann_search` is what the bank
calls with ``backend="ivf"`` or ``"hnsw"``: queries that may see only a few entries (early in time) are
answered exactly instead, since an approximate index over a handful of entries would miss most of them.
"""

from __future__ import annotations

import numpy as np

from .backends import _NEG, CausalFilter, _finish, _pad, exact_numpy, faiss_blas_threshold
from .config import MemoryConfig

__all__ = ["ANN_MIN_ENTRIES", "HNSWIndex", "IVFIndex", "ann_search", "approximate_index"]

ANN_MIN_ENTRIES = 2048  # below this an approximate index is pointless: search exactly
_TIME_BLOCKS = 32  # causal ANN: the index ids are cut into this many time blocks (see _FaissANN.search)
_TIME_BLOCK_MIN = 4096  # ... of at least this many ids (the partial block is searched exactly)


def approximate_index(config: MemoryConfig) -> _FaissANN | None:
    """The approximate index ``config.backend`` asks for (``"ivf"``, ``"hnsw"``), else None."""
    d, cap = config.key_dim, config.capacity
    if config.backend == "ivf":
        return IVFIndex(d, cap, config.ivf_nlist, config.ivf_nprobe, config.seed)
    if config.backend == "hnsw":
        return HNSWIndex(d, cap, config.hnsw_m, config.hnsw_ef_construction, config.hnsw_ef_search)
    return None


def _ann_overfetch(k: int) -> int:
    """How many forbidden entries an approximate search may step over per call. Small on purpose: HNSW's
    beam (efSearch) must grow with the over-fetch, so a wide one makes every query slow; queries further
    back are grouped by time and searched with an ID selector instead (``_FaissANN.search``)."""
    return 4 * k


def ann_search(ann: _FaissANN, keys: np.ndarray, qn: np.ndarray, k: int, filt: CausalFilter | None,
               chunk_mb: int) -> tuple[np.ndarray, np.ndarray]:
    """IVF/HNSW search over ``keys`` (the bank's filled slots); queries that may see fewer than
    ``ANN_MIN_ENTRIES`` entries (early in time) are answered exactly instead: an approximate index
    restricted to a handful of entries would miss most of them, and an exact pass over so few is cheap."""
    n = len(keys)
    if filt is None or filt.trivial:
        return ann.search(keys, qn, k, filt, _ann_overfetch(k))
    few_visible = (n - filt.n_ineligible()) < ANN_MIN_ENTRIES
    if not few_visible.any():
        return ann.search(keys, qn, k, filt, _ann_overfetch(k))
    s = np.empty((len(qn), k), np.float32)
    i = np.empty((len(qn), k), np.int64)
    for rows, exact in ((~few_visible, False), (few_visible, True)):
        if not rows.any():
            continue
        sub = filt.subset(rows)
        if exact:
            s[rows], i[rows] = exact_numpy(keys, np.ascontiguousarray(qn[rows]), k, sub, chunk_mb)
        else:
            s[rows], i[rows] = ann.search(keys, np.ascontiguousarray(qn[rows]), k, sub, _ann_overfetch(k))
    return s, i


class _FaissANN:
    """Shared machinery of the approximate indexes: index ids in ``available_at`` order, so the causal
    filter is an id *range*.

    Why: a query at time t may see exactly the entries with ``available_at <= t``. If the index numbers its
    entries in ``available_at`` order, those are the ids ``[0, r)`` with ``r`` found by one binary search,
    and faiss's ``IDSelectorRange(0, r)`` applies the rule *inside* the approximate search at O(1) set-up
    cost (no O(M) bitmap per query, no over-fetch, never fewer than k eligible neighbours when they exist).
    The search effort grows with the share of entries a query may not see (``nprobe`` / ``efSearch``
    divided by the visible share), so a query early in time is as thorough among what it may see as one
    that sees everything. To batch a training-like mix of times, the ids are cut into at most 32 time
    blocks: each query sends the blocks it may fully see to the index, in one faiss call shared by every
    query with the same number of full blocks, and searches the one block it may partly see exactly.

    Entries usually arrive in time order, so new entries get the next ids; an entry that arrives out of
    order (``available_at`` earlier than some indexed entry) makes the next search renumber the index.
    """

    def __init__(self, dim: int, capacity: int):
        self.dim = dim
        self.capacity = capacity
        self.dirty = np.zeros(capacity, dtype=bool)
        self.index = None
        self._clear_ids()

    def _clear_ids(self) -> None:
        self.pos_slot = np.zeros(0, np.int64)  # index id -> slot (-1: removed)
        self.slot_pos = np.full(self.capacity, -1, np.int64)  # slot -> index id (-1: not indexed)
        self.pos_avail: np.ndarray | None = None  # available_at per id, made nondecreasing over removed ids
        self._avail_stale = True

    def mark(self, slots: np.ndarray) -> None:
        self.dirty[slots] = True

    def reset(self) -> None:
        self.dirty[:] = False
        self.index = None
        self._clear_ids()

    def search(self, keys: np.ndarray, queries: np.ndarray, k: int, filt: CausalFilter | None,
               max_overfetch: int = 1024):
        """Approximate top-k that respects the causal filter for any mix of query times (``max_overfetch``
        is kept for the caller's signature: the range selector needs no over-fetch)."""
        avail = None if filt is None or filt.trivial else filt.available_at
        self.sync(keys, avail)
        n = keys.shape[0]
        nq = len(queries)
        if avail is None:
            d, i = self._search(queries, min(k, n))
            return self._finish_ids(d, i, k)
        pos_avail = self._ordered_avail(avail)
        n_ids = len(self.pos_slot)
        live_cum = np.concatenate([[0], np.cumsum(self.pos_slot >= 0)])
        ranks = np.searchsorted(pos_avail, filt.as_of, side="right")  # ids [0, r) are visible
        n_live = int(live_cum[-1])
        # time blocks: ids [0, full) go to the index in one batched call per distinct ``full``, the partial
        # block [full, r) (at most ``block`` ids) is searched exactly; at most n/block index calls per batch
        block = max(_TIME_BLOCK_MIN, -(-n_ids // _TIME_BLOCKS))
        full = np.where(ranks >= n_ids, n_ids, ranks // block * block)
        scores = np.empty((nq, k), np.float32)
        slots = np.empty((nq, k), np.int64)
        uniq, inv = np.unique(full, return_inverse=True)
        for g, f in enumerate(uniq):
            rows = np.flatnonzero(inv == g)
            qs = np.ascontiguousarray(queries[rows])
            parts_s, parts_i = [], []
            visible = int(live_cum[f])
            if visible:
                effort = n_live / visible  # search harder when much is hidden: same work among the visible
                d, i = self._search(qs, min(k, visible), None if f >= n_ids else (0, int(f)), effort)
                ps, pi = self._finish_ids(d, i, k)
                parts_s.append(ps)
                parts_i.append(pi)
            top = int(ranks[rows].max())
            if top > f:  # the partial block, exactly, each query up to its own rank
                ids = np.arange(f, top)
                sl = self.pos_slot[f:top]
                if sl[0] >= 0 and sl[-1] - sl[0] == len(sl) - 1 and (np.diff(sl) == 1).all():
                    block_keys = keys[sl[0] : sl[-1] + 1]  # ids in slot order (the usual case): a view, no copy
                else:
                    ok = sl >= 0
                    ids, sl = ids[ok], sl[ok]
                    block_keys = keys[sl]
                sc = qs @ block_keys.T
                sc[ids[None, :] >= ranks[rows, None]] = _NEG
                kk = min(k, len(sl))
                if kk:
                    part = np.argpartition(-sc, kk - 1, axis=1)[:, :kk] if kk < len(sl) else \
                        np.broadcast_to(np.arange(len(sl)), sc.shape)
                    parts_s.append(np.take_along_axis(sc, part, 1).astype(np.float32))
                    parts_i.append(sl[part])
            if not parts_s:
                scores[rows], slots[rows] = _NEG, -1
                continue
            cs, ci = np.concatenate(parts_s, 1), np.concatenate(parts_i, 1)
            ci = np.where(np.isneginf(cs), -1, ci)
            order = np.argsort(-cs, axis=1, kind="stable")[:, :k]
            scores[rows], slots[rows] = _pad(np.take_along_axis(cs, order, 1), np.take_along_axis(ci, order, 1), k)
        return _finish(scores, slots)

    def _finish_ids(self, d: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        ids = ids.astype(np.int64)
        slots = np.where(ids >= 0, self.pos_slot[np.maximum(ids, 0)], -1)
        d = np.where(slots >= 0, d, _NEG).astype(np.float32)
        return _finish(*_pad(d, slots, k))

    def _ordered_avail(self, avail: np.ndarray) -> np.ndarray:
        """available_at per index id, nondecreasing (removed ids take their predecessor's value); renumbers
        the index if entries are out of time order."""
        if not self._avail_stale and self.pos_avail is not None and len(self.pos_avail) == len(self.pos_slot):
            return self.pos_avail
        live = self.pos_slot >= 0
        pa = np.full(len(self.pos_slot), np.iinfo(np.int64).min, np.int64)
        pa[live] = avail[self.pos_slot[live]]
        if np.any(np.diff(pa[live]) < 0):  # an entry arrived out of time order: renumber
            self.index = None
            self._clear_ids()
            self.sync(np.ascontiguousarray(self._keys_ref), avail)
            return self._ordered_avail(avail)
        self.pos_avail = np.maximum.accumulate(pa) if len(pa) else pa
        self._avail_stale = False
        return self.pos_avail

    def _assign(self, slots: np.ndarray, avail: np.ndarray | None) -> np.ndarray:
        """New ids for ``slots`` (appended after every existing id, in ``available_at`` order)."""
        if avail is not None:
            slots = slots[np.argsort(avail[slots], kind="stable")]
        ids = len(self.pos_slot) + np.arange(len(slots), dtype=np.int64)
        self.pos_slot = np.concatenate([self.pos_slot, slots])
        self.slot_pos[slots] = ids
        self._avail_stale = True
        return slots

    @staticmethod
    def _selector(rng: tuple[int, int] | None):
        if rng is None:
            return None
        import faiss

        return faiss.IDSelectorRange(rng[0], rng[1])

    def sync(self, keys: np.ndarray, avail: np.ndarray | None = None) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _search(self, queries: np.ndarray, kk: int, rng: tuple[int, int] | None = None,
                effort: float = 1.0):  # pragma: no cover - abstract
        raise NotImplementedError


class IVFIndex(_FaissANN):
    """faiss IVF-Flat over the bank's slots (inner product), ids in ``available_at`` order. Changed slots are
    removed and re-added by id, so an add costs O(batch) work in the index, never a rebuild. Trained once,
    on the first search with enough entries (a random sample of the keys)."""

    def __init__(self, dim: int, capacity: int, nlist: int | None, nprobe: int, seed: int):
        super().__init__(dim, capacity)
        self.nlist_cfg, self.nprobe, self.seed = nlist, nprobe, seed
        self._trained = None

    def reset(self) -> None:
        super().reset()
        self._trained = None  # a new memory: train new centroids on it

    def sync(self, keys: np.ndarray, avail: np.ndarray | None = None) -> None:
        import faiss

        n = keys.shape[0]
        self._keys_ref = keys
        if self.index is None:
            if self._trained is None or self._trained[1] != self.dim:
                nlist = self.nlist_cfg or int(max(1, min(4 * np.sqrt(n), n // 39)))
                quantizer = faiss.IndexFlatIP(self.dim)
                index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
                rng = np.random.default_rng(self.seed)
                sample = keys[np.sort(rng.choice(n, size=min(n, 40 * nlist), replace=False))]
                with faiss_blas_threshold():
                    index.train(np.ascontiguousarray(sample))
                self._trained = (index, self.dim, quantizer)
            else:  # renumbering: keep the trained centroids, empty the lists
                index = self._trained[0]
                index.reset()
            order = self._assign(np.arange(n, dtype=np.int64), avail)
            with faiss_blas_threshold():
                index.add_with_ids(np.ascontiguousarray(keys[order]), self.slot_pos[order])
            self.index, self._quantizer = index, self._trained[2]
            self.dirty[:] = False
            return
        slots = np.flatnonzero(self.dirty[:n])
        if not slots.size:
            return
        old = self.slot_pos[slots]
        had = old >= 0
        if had.any():
            self.index.remove_ids(faiss.IDSelectorBatch(old[had]))
        # a key refresh keeps its id (same available_at, same place in time order); others get new ids
        keep = np.zeros_like(had)
        if avail is not None and self.pos_avail is not None and had.any():
            ok = had & (old < len(self.pos_avail))
            keep[ok] = self.pos_avail[old[ok]] == avail[slots[ok]]
        self.pos_slot[old[had & ~keep]] = -1
        self.slot_pos[slots[~keep]] = -1
        fresh = self._assign(slots[~keep], avail)
        ids = np.concatenate([old[keep], self.slot_pos[fresh]])
        rows = np.concatenate([slots[keep], fresh])
        with faiss_blas_threshold():
            self.index.add_with_ids(np.ascontiguousarray(keys[rows]), ids)
        self.dirty[slots] = False
        self._avail_stale = True

    def _search(self, queries: np.ndarray, kk: int, rng: tuple[int, int] | None = None, effort: float = 1.0):
        import faiss

        sel = self._selector(rng)  # held here: faiss keeps only a pointer to it
        nprobe = int(min(self.index.nlist, max(self.nprobe, np.ceil(self.nprobe * effort))))
        params = faiss.SearchParametersIVF(nprobe=nprobe, sel=sel)
        with faiss_blas_threshold():  # the coarse quantizer is a flat index: same slow default as exact
            return self.index.search(queries, kk, params=params)


class HNSWIndex(_FaissANN):
    """faiss HNSW-Flat graph (inner product), nodes inserted in ``available_at`` order. Appends are inserted
    incrementally; a graph cannot forget a node, so after slots are *overwritten* (buffer wrapped, keys
    refreshed) it is rebuilt lazily at the next search. Use it for big, read-mostly memories."""

    max_ef = 2048  # the largest beam a causally filtered query may widen to

    def __init__(self, dim: int, capacity: int, m: int, ef_construction: int, ef_search: int):
        super().__init__(dim, capacity)
        self.m, self.efc, self.efs = m, ef_construction, ef_search

    def _new(self):
        import faiss

        index = faiss.IndexHNSWFlat(self.dim, self.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.efc
        return index

    def sync(self, keys: np.ndarray, avail: np.ndarray | None = None) -> None:
        n = keys.shape[0]
        self._keys_ref = keys
        indexed = self.slot_pos[:n] >= 0
        if self.index is None or (self.dirty[:n] & indexed).any():  # new, or an indexed slot changed: rebuild
            self.index = self._new()
            self._clear_ids()
            new = np.arange(n, dtype=np.int64)
        else:
            new = np.flatnonzero(self.dirty[:n] | ~indexed)
        if new.size:
            order = self._assign(new, avail)
            self.index.add(np.ascontiguousarray(keys[order]))
        self.dirty[:n] = False

    def _search(self, queries: np.ndarray, kk: int, rng: tuple[int, int] | None = None, effort: float = 1.0):
        import faiss

        sel = self._selector(rng)  # held here: faiss keeps only a pointer to it
        ef = int(min(max(self.max_ef, self.efs), max(self.efs, kk) * effort))
        params = faiss.SearchParametersHNSW(efSearch=max(self.efs, kk, ef), sel=sel)
        return self.index.search(queries, kk, params=params)
