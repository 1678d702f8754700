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

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["CausalFilter", "HNSWIndex", "IVFIndex", "faiss_available", "recall_at_k"]

_NEG = float("-inf")
_BLOCK = 32
_TWO_STAGE_MIN = 32_768  # below this many entries a single top-k is as fast (measured)


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

    def __post_init__(self) -> None:
        self.cols = np.flatnonzero(self.available_at > self.as_of.min())
        self._col_avail = self.available_at[self.cols]
        self._sorted = np.sort(self._col_avail)

    @property
    def trivial(self) -> bool:
        return self.cols.size == 0

    def n_ineligible(self) -> np.ndarray:
        """Per query, how many stored entries it may not see (used to size the over-fetch)."""
        return len(self._sorted) - np.searchsorted(self._sorted, self.as_of, side="right")

    def apply_numpy(self, scores: np.ndarray, rows: slice) -> None:
        if self.trivial:
            return
        bad = self._col_avail[None, :] > self.as_of[rows, None]
        sub = scores[:, self.cols]
        sub[bad] = _NEG
        scores[:, self.cols] = sub

    def apply_torch(self, scores: torch.Tensor, rows: slice) -> None:
        if self.trivial:
            return
        dev = scores.device
        cols = torch.from_numpy(self.cols).to(dev)
        bad = torch.from_numpy(self._col_avail[None, :] > self.as_of[rows, None]).to(dev)
        sub = scores.index_select(1, cols).masked_fill_(bad, _NEG)
        scores.index_copy_(1, cols, sub)

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
    """Exact top-k with faiss's brute-force kernel (BLAS for big batches), over-fetching past the filter.

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

    def search(self, keys: np.ndarray, queries: np.ndarray, k: int, filt: CausalFilter | None):
        self.sync(keys)
        extra = int(filt.n_ineligible().max()) if filt is not None and not filt.trivial else 0
        kk = min(k + extra, keys.shape[0])
        d, i = self._search(queries, kk)
        return filter_overfetched(d, i.astype(np.int64), k, filt if extra else None, slice(None))

    def sync(self, keys: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _search(self, queries: np.ndarray, kk: int):  # pragma: no cover - abstract
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

    def _search(self, queries: np.ndarray, kk: int):
        self.index.nprobe = self.nprobe
        return self.index.search(queries, kk)


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

    def _search(self, queries: np.ndarray, kk: int):
        self.index.hnsw.efSearch = max(self.efs, kk)
        return self.index.search(queries, kk)
