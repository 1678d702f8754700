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
    usual case (memory of the past, queries now) that is a small set, so the filter costs little.
    """

    available_at: np.ndarray  # (n,) int64 of the filled slots
    as_of: np.ndarray  # (q,) int64
    latest: int | None = None  # an upper bound of available_at, if known: skips the scan when all are visible

    def __post_init__(self) -> None:
        if self.latest is not None and self.latest <= self.as_of.min():
            self.cols = np.zeros(0, np.int64)  # every entry is visible to every query: no O(M) scan
        else:
            self.cols = np.flatnonzero(self.available_at > self.as_of.min())
        self._col_avail = self.available_at[self.cols]

    def subset(self, rows: np.ndarray) -> CausalFilter:
        """The filter for the queries ``rows`` (a bool mask or indices) only."""
        return CausalFilter(self.available_at, self.as_of[rows], self.latest)

    @property
    def trivial(self) -> bool:
        return self.cols.size == 0

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
        if self.trivial:
            return
        if self.dense:
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
    slots = np.where(np.isneginf(scores), -1, slots).astype(np.int64)
    return scores.astype(np.float32, copy=False), slots


def exact_numpy(keys: np.ndarray, queries: np.ndarray, k: int, filt: CausalFilter | None,
                chunk_mb: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by one matrix product and ``argpartition`` (fastest for a few queries)."""
    n = keys.shape[0]
    kk = min(k, n)
    out_s = np.full((len(queries), kk), _NEG, np.float32)
    out_i = np.full((len(queries), kk), -1, np.int64)
    if kk == 0:
        return _pad(out_s, out_i, k)
    step = _rows_per_chunk(n, chunk_mb)
    for start in range(0, len(queries), step):
        rows = slice(start, min(start + step, len(queries)))
        s = queries[rows] @ keys.T
        if filt is not None:
            filt.apply_numpy(s, rows)
        part = np.argpartition(s, n - kk, axis=1)[:, n - kk:] if kk < n else np.broadcast_to(np.arange(n), s.shape)
        top = np.take_along_axis(s, part, axis=1)
        order = np.argsort(-top, axis=1, kind="stable")
        out_s[rows] = np.take_along_axis(top, order, axis=1)
        out_i[rows] = np.take_along_axis(part, order, axis=1)
    return _finish(*_pad(out_s, out_i, k))


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


class _FaissANN:
    """Shared bookkeeping of the approximate indexes: which slots changed since the index last saw them."""

    def __init__(self, dim: int, capacity: int):
        self.dim = dim
        self.dirty = np.zeros(capacity, dtype=bool)
        self.index = None

    def mark(self, slots: np.ndarray) -> None:
        self.dirty[slots] = True

    def reset(self) -> None:
        self.dirty[:] = False
        self.index = None

    def search(self, keys: np.ndarray, queries: np.ndarray, k: int, filt: CausalFilter | None,
               max_overfetch: int = 1024):
        """Approximate top-k that respects the causal filter for any mix of query times.

        Queries that may not see only a few entries (the usual "memory of the past, query now") are answered
        in one call, over-fetching past the forbidden entries. Queries far back in time (walk-forward,
        training) are sorted by ``as_of`` and cut into groups whose times span at most ``max_overfetch``
        entries; each group searches with a faiss ID selector that admits only entries available by the
        group's latest time, then over-fetches past the few that some of its queries still may not see.
        """
        self.sync(keys)
        n = keys.shape[0]
        if filt is None or filt.trivial:
            d, i = self._search(queries, min(k, n))
            return filter_overfetched(d, i.astype(np.int64), k, None, slice(None))
        scores = np.empty((len(queries), k), np.float32)
        slots = np.empty((len(queries), k), np.int64)
        n_bad = filt.n_ineligible()
        few = np.flatnonzero(n_bad <= max_overfetch)
        if few.size:
            kk = min(k + int(n_bad[few].max()), n)
            d, i = self._search(np.ascontiguousarray(queries[few]), kk)
            scores[few], slots[few] = filter_overfetched(d, i.astype(np.int64), k, filt, few)
        many = np.flatnonzero(n_bad > max_overfetch)
        if many.size:
            avail_sorted = np.sort(filt.available_at)
            many = many[np.argsort(filt.as_of[many], kind="stable")]
            rank = np.searchsorted(avail_sorted, filt.as_of[many], side="right")  # entries visible per query
            start = 0
            while start < many.size:
                stop = int(np.searchsorted(rank, rank[start] + max_overfetch, side="right"))
                rows = many[start:stop]
                latest = filt.as_of[rows].max()
                allowed = np.packbits(filt.available_at <= latest, bitorder="little")
                kk = min(k + int(rank[stop - 1] - rank[start]), n)
                d, i = self._search(np.ascontiguousarray(queries[rows]), kk, allowed)
                scores[rows], slots[rows] = filter_overfetched(d, i.astype(np.int64), k, filt, rows)
                start = stop
        return scores, slots

    @staticmethod
    def _selector(allowed: np.ndarray | None):
        """A faiss ID selector over a packed little-endian bitmap (the caller keeps ``allowed`` alive)."""
        if allowed is None:
            return None
        import faiss

        return faiss.IDSelectorBitmap(len(allowed) * 8, faiss.swig_ptr(allowed))

    def sync(self, keys: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _search(self, queries: np.ndarray, kk: int, allowed: np.ndarray | None = None):  # pragma: no cover
        raise NotImplementedError


class IVFIndex(_FaissANN):
    """faiss IVF-Flat over the bank's slots (inner product). Changed slots are removed and re-added by id,
    so an add costs O(batch) work in the index, never a rebuild. Trained once, on the first search with
    enough entries (a random sample of the keys)."""

    def __init__(self, dim: int, capacity: int, nlist: int | None, nprobe: int, seed: int):
        super().__init__(dim, capacity)
        self.nlist_cfg, self.nprobe, self.seed = nlist, nprobe, seed

    def sync(self, keys: np.ndarray) -> None:
        import faiss

        n = keys.shape[0]
        if self.index is None:
            nlist = self.nlist_cfg or int(max(1, min(4 * np.sqrt(n), n // 39)))
            quantizer = faiss.IndexFlatIP(self.dim)
            index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(self.seed)
            sample = keys[np.sort(rng.choice(n, size=min(n, 40 * nlist), replace=False))]
            index.train(np.ascontiguousarray(sample))
            index.add_with_ids(keys, np.arange(n, dtype=np.int64))
            self.index, self._quantizer = index, quantizer
            self.dirty[:] = False
            return
        slots = np.flatnonzero(self.dirty[:n])
        if slots.size:
            self.index.remove_ids(faiss.IDSelectorBatch(slots.astype(np.int64)))
            self.index.add_with_ids(np.ascontiguousarray(keys[slots]), slots.astype(np.int64))
            self.dirty[slots] = False

    def _search(self, queries: np.ndarray, kk: int, allowed: np.ndarray | None = None):
        import faiss

        sel = self._selector(allowed)  # held here: faiss keeps only a pointer to it
        params = faiss.SearchParametersIVF(nprobe=self.nprobe, sel=sel)
        with faiss_blas_threshold():  # the coarse quantizer is a flat index: same slow default as exact
            return self.index.search(queries, kk, params=params)


class HNSWIndex(_FaissANN):
    """faiss HNSW-Flat graph (inner product). Appends are inserted incrementally; a graph cannot forget a
    node, so after slots are *overwritten* (buffer wrapped, keys refreshed) it is rebuilt lazily at the
    next search. Use it for big, read-mostly memories."""

    def __init__(self, dim: int, capacity: int, m: int, ef_construction: int, ef_search: int):
        super().__init__(dim, capacity)
        self.m, self.efc, self.efs = m, ef_construction, ef_search

    def _new(self):
        import faiss

        index = faiss.IndexHNSWFlat(self.dim, self.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.efc
        return index

    def sync(self, keys: np.ndarray) -> None:
        n = keys.shape[0]
        if self.index is None:
            self.index = self._new()
        have = self.index.ntotal
        if self.dirty[:have].any():  # an indexed slot changed: rebuild
            self.index = self._new()
            have = 0
        if n > have:
            self.index.add(np.ascontiguousarray(keys[have:n]))
        self.dirty[:n] = False

    def _search(self, queries: np.ndarray, kk: int, allowed: np.ndarray | None = None):
        import faiss

        sel = self._selector(allowed)  # held here: faiss keeps only a pointer to it
        params = faiss.SearchParametersHNSW(efSearch=max(self.efs, kk), sel=sel)
        return self.index.search(queries, kk, params=params)
