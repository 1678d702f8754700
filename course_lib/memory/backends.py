"""Exact search kernels behind the memory bank: numpy / torch / faiss (the approximate IVF / HNSW indexes
are in :mod:`.approximate`).

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

__all__ = ["CausalFilter", "faiss_available", "recall_at_k"]

_NEG = float("-inf")
_BLOCK = 32
_TWO_STAGE_MIN = 32_768  # below this many entries a single top-k is as fast (measured)
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
