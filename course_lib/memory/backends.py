"""Search kernels behind the memory bank: exact numpy / torch / faiss and approximate IVF / HNSW.

Every kernel answers the same question: for each query row, the ``k`` stored keys with the largest inner
product (keys and queries are unit vectors, so this is cosine similarity), skipping entries the causal
filter forbids. They return ``(scores, slots)`` with shape ``(q, k)``; a slot of ``-1`` (score ``-inf``)
means "no eligible entry left".

Why several kernels? On a CPU the fastest exact search depends on the batch size (see
``benchmarks/bench_memory.py``): a plain numpy product wins for a handful of queries, a torch product with a
*two-stage top-k* wins for mid-size batches, and faiss's blocked BLAS search wins for thousands of queries.
faiss's own ``IndexFlatIP.search`` is slow for mid-size batches, which is why the bank does not just call it.

Two-stage top-k: split each score row into blocks of ``B`` and take each block's maximum. The true top-k
entries live in at most k blocks, and those blocks are among the k blocks with the largest maxima, so an
exact top-k over those ``k*B`` candidates is exact overall, at a fraction of the cost of a full top-k.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch

# faiss (imported lazily below) brings its own OpenMP runtime next to torch's. With OpenMP's default
# wait policy, each runtime's idle threads keep spinning after a parallel region, and on a small CPU the
# two pools starve each other: on 2 cores a faiss search of 256 queries over 1e5 keys took ~1.5 s right
# after a torch matmul instead of ~25 ms. A passive policy for faiss's runtime (read once, when faiss
# loads; torch is already loaded here, so its own setting is untouched) removes the stall. A value the
# user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__all__ = ["CausalFilter", "HNSWIndex", "IVFIndex", "faiss_available", "recall_at_k"]

_NEG = float("-inf")
_BLOCK = 32
_TWO_STAGE_MIN = 32_768  # below this many entries a single top-k is as fast (measured)
_TIME_BLOCKS = 32  # causal ANN: the index ids are cut into this many time blocks (see _FaissANN.search)
_TIME_BLOCK_MIN = 4096  # ... of at least this many ids (the partial block is searched exactly)
_MAX_OVERFETCH = 1024  # faiss rows that must skip more entries than this go to a matmul kernel
_NUMPY_MAX_SCORES = 1 << 20  # auto uses numpy when batch * M is at most this (about a millisecond of work)
_FAISS_BLAS_MIN_BATCH = 16  # faiss's own default switches to BLAS only at 20 (faiss < 1.8) or 128,000 queries


@contextmanager
def faiss_blas_threshold(batch: int = _FAISS_BLAS_MIN_BATCH) -> Iterator[None]:
    """Make faiss's brute-force search use its blocked BLAS (matrix-multiply) path from ``batch`` queries.

    faiss decides per call: fewer queries than ``faiss.cvar.distance_compute_blas_threshold`` take a
    one-query-at-a-time SIMD loop, which is several times slower for mid-size batches (at M=1e5, batch 256
    on 2 cores: ~70 ms against ~20 ms; ``benchmarks/bench_memory.py``). faiss 1.15 sets it to 128,000, so
    without this every realistic batch takes the slow path. The setting is process-wide in faiss, so it is
    changed only for the duration of a call and restored afterwards.
    """
    import faiss

    old = faiss.cvar.distance_compute_blas_threshold
    faiss.cvar.distance_compute_blas_threshold = batch
    try:
        yield
    finally:
        faiss.cvar.distance_compute_blas_threshold = old


def faiss_available(gpu: bool = False) -> bool:
    """Whether faiss (and, with ``gpu=True``, a faiss build with GPUs) can be used."""
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss-cpu is a core dependency
        return False
    if not gpu:
        return True
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Share of the exact top-k slots that the approximate search also returned (``-1`` ignored)."""
    approx, exact = np.asarray(approx), np.asarray(exact)
    if approx.shape[0] != exact.shape[0]:
        raise ValueError(f"different numbers of queries: {approx.shape[0]} vs {exact.shape[0]}")
    hits = total = 0
    for a, e in zip(approx, exact):  # one row per query; sets are tiny (k), the loop is over queries only
        e = e[e >= 0]
        hits += len(np.intersect1d(a[a >= 0], e))
        total += len(e)
    return hits / total if total else 1.0


@dataclass
class CausalFilter:
    """Which stored entries each query may see: ``available_at[slot] <= as_of[query]``.

    Only entries that some query cannot see need work, i.e. those with ``available_at > min(as_of)``; in the
    usual case (memory of the past, queries now) that is a small set, so the filter costs little. That set
    (``cols``) is found on first use: a single query masks its score row in one pass and never needs it.
    """

    available_at: np.ndarray  # (n,) int64 of the filled slots
    as_of: np.ndarray  # (q,) int64
    latest: int | None = None  # an upper bound of available_at, if known: skips the scan when all are visible
    time_ordered: bool = False  # available_at is non-decreasing: a query sees a prefix of the slots

    def __post_init__(self) -> None:
        # every entry visible to every query: no O(M) scan at all
        self._all_visible = self.latest is not None and self.latest <= self.as_of.min()

    @cached_property
    def cols(self) -> np.ndarray:
        """The slots hidden from at least one query."""
        if self._all_visible:
            return np.zeros(0, np.int64)
        return np.flatnonzero(self.available_at > self.as_of.min())

    @cached_property
    def _col_avail(self) -> np.ndarray:
        return self.available_at[self.cols]

    def subset(self, rows: np.ndarray) -> CausalFilter:
        """The filter for the queries ``rows`` (a bool mask or indices) only."""
        return CausalFilter(self.available_at, self.as_of[rows], self.latest, self.time_ordered)

    def visible_prefix(self, row: int) -> int | None:
        """How many leading slots query ``row`` may see, when that is all it may see (time-ordered slots:
        the hidden entries are the tail); ``None`` when the slots are in no time order."""
        if self._all_visible:
            return self.available_at.size
        if not self.time_ordered:
            return None
        return int(np.searchsorted(self.available_at, self.as_of[row], side="right"))

    @property
    def trivial(self) -> bool:
        return self._all_visible or self.cols.size == 0

    def n_ineligible(self) -> np.ndarray:
        """Per query, how many stored entries it may not see (used to size the over-fetch)."""
        if "_sorted" not in self.__dict__:  # sorted once, on first use (exact kernels never ask)
            self._sorted = np.sort(self._col_avail)
        return len(self._sorted) - np.searchsorted(self._sorted, self.as_of, side="right")

    @property
    def dense(self) -> bool:
        """Whether most entries are hidden from some query (e.g. training: queries from the whole stored
        period). Then one comparison over the full score matrix beats gathering and scattering those
        columns (measured: 1.5 ms of a 5 ms search of 128 queries over 3,442 entries went to the scatter)."""
        return self.cols.size * 4 > self.available_at.size

    def apply_numpy(self, scores: np.ndarray, rows: slice) -> None:
        """Mask forbidden scores of the query chunk ``rows`` in place (``-inf``)."""
        if self._all_visible:
            return
        one = scores.shape[0] == 1  # one query: a single comparison over its row, no column bookkeeping
        if not one and self.trivial:
            return
        if one or self.dense:
            n = self.available_at.size
            np.putmask(scores[:, :n], self.available_at[None, :] > self.as_of[rows, None], _NEG)
            return
        bad = self._col_avail[None, :] > self.as_of[rows, None]
        sub = scores[:, self.cols]
        sub[bad] = _NEG
        scores[:, self.cols] = sub

    def apply_torch(self, scores: torch.Tensor, rows: slice) -> None:
        """Mask forbidden scores of the query chunk ``rows`` in place, on the scores' device.

        The filter's arrays are moved to the device once per search (not per chunk) and the mask is built
        there, so a GPU search copies O(#forbidden + q) numbers, never a (chunk, #forbidden) mask. On the
        CPU ``torch.from_numpy`` shares memory: nothing is copied.
        """
        if self.trivial:
            return
        if self.dense:
            avail, as_of = self._on(scores.device, dense=True)
            scores[:, : avail.shape[0]].masked_fill_(avail[None, :] > as_of[rows, None], _NEG)
            return
        cols, col_avail, as_of = self._on(scores.device)
        bad = col_avail[None, :] > as_of[rows, None]
        sub = scores.index_select(1, cols).masked_fill_(bad, _NEG)
        scores.index_copy_(1, cols, sub)

    def _on(self, device: torch.device, dense: bool = False) -> tuple[torch.Tensor, ...]:
        """(cols, their available_at, as_of) as int64 tensors on ``device``, or with ``dense`` (every
        entry's available_at, as_of); cached per device."""
        cache = self.__dict__.setdefault("_device_arrays", {})
        key = (str(device), dense)
        if key not in cache:
            arrays = (self.available_at, self.as_of) if dense else (self.cols, self._col_avail, self.as_of)
            cache[key] = tuple(torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)).to(device) for a in arrays)
        return cache[key]

    def eligible(self, slots: np.ndarray, rows: slice | np.ndarray) -> np.ndarray:
        """Bool mask over ``slots`` (q, m): which results pass the filter (``-1`` never passes)."""
        safe = np.where(slots >= 0, slots, 0)
        ok = self.available_at[safe] <= self.as_of[rows, None]
        return ok & (slots >= 0)


def _rows_per_chunk(n: int, chunk_mb: int) -> int:
    return max(1, (chunk_mb << 20) // max(1, 4 * n))


def _pad(scores: np.ndarray, slots: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if scores.shape[1] >= k:
        return scores, slots
    extra = k - scores.shape[1]
    scores = np.pad(scores, ((0, 0), (0, extra)), constant_values=_NEG)
    slots = np.pad(slots, ((0, 0), (0, extra)), constant_values=-1)
    return scores, slots


def _finish(scores: np.ndarray, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 scores and int64 slots, with slot -1 wherever no eligible entry was left (score -inf)."""
    empty = scores == _NEG
    if empty.any():
        slots = np.where(empty, -1, slots)
    return scores.astype(np.float32, copy=False), slots.astype(np.int64, copy=False)


def exact_numpy(keys: np.ndarray, queries: np.ndarray, k: int, filt: CausalFilter | None,
                chunk_mb: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by one matrix product and ``argpartition`` (fastest for a few queries)."""
    n, q = keys.shape[0], len(queries)
    kk = min(k, n)
    if kk == 0 or q == 0:
        return _pad(np.full((q, kk), _NEG, np.float32), np.full((q, kk), -1, np.int64), k)
    if q == 1:
        return _finish(*_pad(*_one_query_topk(keys, queries[0], kk, filt), k))
    step = _rows_per_chunk(n, chunk_mb)
    parts = [_numpy_topk(keys, queries, kk, filt, slice(lo, min(lo + step, q))) for lo in range(0, q, step)]
    scores, slots = parts[0] if len(parts) == 1 else (np.concatenate(p) for p in zip(*parts))
    return _finish(*_pad(scores, slots, k))


def _numpy_topk(keys: np.ndarray, queries: np.ndarray, kk: int, filt: CausalFilter | None,
                rows: slice) -> tuple[np.ndarray, np.ndarray]:
    """The best ``kk`` (scores, slots) of the query chunk ``rows``, best first."""
    n = keys.shape[0]
    s = queries[rows] @ keys.T
    if filt is not None:
        filt.apply_numpy(s, rows)
    part = np.argpartition(s, n - kk, axis=1)[:, n - kk:] if kk < n else np.broadcast_to(np.arange(n), s.shape)
    top = np.take_along_axis(s, part, axis=1)
    order = np.argsort(-top, axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1), np.take_along_axis(part, order, axis=1)


def _one_query_topk(keys: np.ndarray, query: np.ndarray, kk: int,
                    filt: CausalFilter | None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_numpy_topk` for one query on 1-d arrays (the same numbers, fewer calls: the per-bar case).

    When the filter hides a tail of the slots (entries stored in time order), only the visible prefix of
    the scores is ranked: nothing to mask, less to partition. (The product still covers every key: BLAS's
    rounding depends on the matrix's height, and the scores must not depend on the query's time.)"""
    s = keys @ query
    visible = filt.visible_prefix(0) if filt is not None else None
    if visible is not None:
        s, filt, kk = s[:visible], None, min(kk, visible)
        if kk == 0:
            return np.zeros((1, 0), np.float32), np.zeros((1, 0), np.int64)
    n = s.shape[0]
    if filt is not None:
        filt.apply_numpy(s[None], slice(0, 1))  # a view: masks s in place
    part = np.argpartition(s, n - kk)[n - kk:] if kk < n else np.arange(n)
    top = s[part]
    order = np.argsort(-top, kind="stable")
    return top[order][None], part[order][None]


def _two_stage_topk(s: torch.Tensor, n: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k of each row of ``s`` (rows, n_padded) via block maxima (see the module docstring)."""
    rows, npad = s.shape
    nb = npad // _BLOCK
    if nb <= k or n < _TWO_STAGE_MIN:  # small rows: one plain top-k is cheaper than three steps
        v, i = torch.topk(s[:, :n], min(k, n), dim=1)
        return v, i
    block_max = s.view(rows, nb, _BLOCK).amax(dim=2)
    _, best_blocks = torch.topk(block_max, k, dim=1, sorted=False)
    cand = (best_blocks.unsqueeze(2) * _BLOCK + torch.arange(_BLOCK, device=s.device)).reshape(rows, -1)
    v, j = torch.topk(torch.gather(s, 1, cand), k, dim=1)
    return v, torch.gather(cand, 1, j)


def exact_torch(keys: torch.Tensor, queries: torch.Tensor, k: int, filt: CausalFilter | None,
                chunk_mb: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by a torch matrix product and a two-stage top-k (CPU or GPU)."""
    n = keys.shape[0]
    kk = min(k, n)
    q = len(queries)
    if kk == 0:
        return _pad(np.full((q, 0), _NEG, np.float32), np.full((q, 0), -1, np.int64), k)
    npad = -(-n // _BLOCK) * _BLOCK
    step = _rows_per_chunk(npad, chunk_mb)
    out_s, out_i = [], []
    with torch.no_grad():
        for start in range(0, q, step):
            rows = slice(start, min(start + step, q))
            s = torch.empty((rows.stop - rows.start, npad), dtype=torch.float32, device=keys.device)
            torch.mm(queries[rows], keys.T, out=s[:, :n])
            if npad > n:
                s[:, n:] = _NEG
            if filt is not None:
                filt.apply_torch(s, rows)
            v, i = _two_stage_topk(s, n, kk)
            out_s.append(v)
            out_i.append(i)
    scores = torch.cat(out_s).cpu().numpy()
    slots = torch.cat(out_i).cpu().numpy().astype(np.int64)
    return _finish(*_pad(scores, slots, k))


def filter_overfetched(scores: np.ndarray, slots: np.ndarray, k: int, filt: CausalFilter | None,
                       rows: slice | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop results the causal filter forbids from an over-fetched ``(q, k')`` answer and keep the best k."""
    scores = scores.astype(np.float32, copy=True)
    ok = slots >= 0
    if filt is not None:
        ok &= filt.eligible(slots, rows)
    scores[~ok] = _NEG
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return _finish(*_pad(np.take_along_axis(scores, order, 1), np.take_along_axis(slots, order, 1), k))


def exact_faiss(keys: np.ndarray, queries: np.ndarray, k: int, filt: CausalFilter | None,
                gpu_resources=None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k with faiss's brute-force kernel (BLAS from 16 queries on), over-fetching past the filter.

    Over-fetching by the largest number of entries a query may not see makes the filtered answer exact.
    Callers send rows with a large number of forbidden entries to a matmul kernel instead.
    """
    import faiss

    n = keys.shape[0]
    extra = int(filt.n_ineligible().max()) if filt is not None and not filt.trivial else 0
    kk = min(k + extra, n)
    if kk == 0:
        return _pad(np.full((len(queries), 0), _NEG, np.float32), np.full((len(queries), 0), -1, np.int64), k)
    if gpu_resources is not None:  # pragma: no cover - needs faiss-gpu
        d, i = faiss.knn_gpu(gpu_resources, queries, keys, kk, metric=faiss.METRIC_INNER_PRODUCT)
    else:
        with faiss_blas_threshold():
            d, i = faiss.knn(queries, keys, kk, metric=faiss.METRIC_INNER_PRODUCT)
    return filter_overfetched(d, i, k, filt if extra else None, slice(None))


def choose_exact_kernel(device_type: str, batch: int, n: int, filt: CausalFilter | None,
                        numpy_max_batch: int, faiss_min_batch: int) -> str:
    """The exact kernel for ``batch`` queries over ``n`` entries (what ``backend="auto"`` runs).

    Measured on 2 CPU cores (benchmarks/bench_memory.py): numpy's matmul + argpartition has the lowest call
    overhead, so it wins small jobs; faiss's BLAS path wins large batches, unless the causal filter hides
    many entries from some query (faiss cannot skip them inside its top-k); torch covers the rest and every
    GPU.
    """
    if device_type != "cpu":
        return "torch"
    if batch <= numpy_max_batch or batch * n <= _NUMPY_MAX_SCORES:
        return "numpy"
    if batch >= faiss_min_batch and faiss_available():
        if filt is None or filt.trivial or filt.n_ineligible().max() <= _MAX_OVERFETCH:
            return "faiss"
    return "torch"


def exact_faiss_causal(keys: np.ndarray, queries: np.ndarray, k: int, filt: CausalFilter | None,
                       gpu_res: Any = None, chunk_mb: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """faiss's exact search for the rows it can filter cheaply (at most ``_MAX_OVERFETCH`` hidden entries),
    torch's matmul kernel for the rows that must skip more."""
    nq = queries.shape[0]
    many = filt.n_ineligible() > _MAX_OVERFETCH if filt is not None and not filt.trivial else np.zeros(nq, bool)
    s = np.empty((nq, k), np.float32)
    i = np.empty((nq, k), np.int64)
    ok = ~many
    if ok.any():
        sub = None if filt is None else filt.subset(ok)
        s[ok], i[ok] = exact_faiss(keys, np.ascontiguousarray(queries[ok]), k, sub, gpu_res)
    if many.any():
        s[many], i[many] = exact_torch(torch.from_numpy(keys), torch.from_numpy(np.ascontiguousarray(queries[many])),
                                       k, filt.subset(many), chunk_mb)
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
