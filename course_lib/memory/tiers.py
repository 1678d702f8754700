"""A hot / warm / cold tiered key store (the hot/warm/cold layout of a K/V cache), searched as one memory.

* hot: float32 in RAM, the entries retrieved most recently (fast, exact);
* warm: int8-quantised in RAM (4x smaller; a per-row scale keeps the rounding error about 0.4% of a
  unit vector's largest component), so scores are approximate: :func:`int8_recall` measures the cost;
* cold: float32 in a memory-mapped file on disk (no RAM, paged in while scanning).

New entries enter hot. When a tier is full, its least recently used entries move one tier down (cold drops
its oldest). :meth:`TieredMemory.manage_tiers` promotes entries that searches keep returning. A search scans
all three tiers with the causal ``as_of`` filter and merges their top-k.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .eviction import lru_order
from .time_filter import query_times, to_ns

__all__ = ["TierConfig", "TieredMemory", "dequantize_int8", "int8_recall", "quantize_int8"]

_NEG = np.float32(-np.inf)


def quantize_int8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row int8 codes and float32 scales: ``x ~= codes * scale[:, None]``."""
    x = np.asarray(x, np.float32)
    scale = np.maximum(np.abs(x).max(axis=1), 1e-12) / 127.0
    codes = np.clip(np.rint(x / scale[:, None]), -127, 127).astype(np.int8)
    return codes, scale.astype(np.float32)


def dequantize_int8(codes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return codes.astype(np.float32) * scale[:, None]


def _unit(x: Any, d: int) -> np.ndarray:
    x = np.asarray(x, np.float32)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[1] != d:
        raise ValueError(f"expected shape (n, {d}), got {x.shape}")
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    n = scores.shape[1]
    if n == 0:
        return np.full((len(scores), k), _NEG, np.float32), np.full((len(scores), k), -1, np.int64)
    kk = min(k, n)
    part = np.argpartition(scores, n - kk, axis=1)[:, n - kk:]
    top = np.take_along_axis(scores, part, 1)
    if kk < k:
        top = np.pad(top, ((0, 0), (0, k - kk)), constant_values=-np.inf)
        part = np.pad(part, ((0, 0), (0, k - kk)), constant_values=-1)
    return top.astype(np.float32), part.astype(np.int64)


def int8_recall(keys: np.ndarray, queries: np.ndarray, k: int = 32) -> float:
    """recall@k of searching int8-quantised keys instead of float32 ones (1.0 = no loss)."""
    from .backends import recall_at_k

    keys, queries = _unit(keys, keys.shape[1]), _unit(queries, keys.shape[1])
    _, exact = _topk(queries @ keys.T, k)
    _, approx = _topk(queries @ dequantize_int8(*quantize_int8(keys)).T, k)
    return recall_at_k(approx, exact)


@dataclass
class TierConfig:
    """Capacities of the three tiers, where the cold file lives and when to promote."""

    key_dim: int = 64
    hot_capacity: int = 1_000
    warm_capacity: int = 10_000
    cold_capacity: int = 100_000
    cold_path: str | None = None  # None: a temporary file, removed by close()
    promote_after: int = 2  # hits since the last tier move that earn a move up
    chunk_rows: int = 65_536  # rows of the cold/warm tier scored at once


class _Tier:
    """One tier: keys (float32 array, int8 codes + scales, or a memmap), entry ids, times and usage."""

    def __init__(self, cap: int, d: int, kind: str, path: Path | None = None):
        self.cap, self.d, self.kind, self.n = cap, d, kind, 0
        if kind == "warm":
            self.codes = np.zeros((cap, d), np.int8)
            self.scale = np.zeros(cap, np.float32)
        elif kind == "cold":
            self.store = np.memmap(path, dtype=np.float32, mode="w+", shape=(cap, d))
        else:
            self.store = np.zeros((cap, d), np.float32)
        self.ids = np.full(cap, -1, np.int64)
        self.avail = np.zeros(cap, np.int64)
        self.hits = np.zeros(cap, np.int64)
        self.last = np.zeros(cap, np.int64)

    def get(self, rows: np.ndarray) -> np.ndarray:
        if self.kind == "warm":
            return dequantize_int8(self.codes[rows], self.scale[rows])
        return np.asarray(self.store[rows])

    def put(self, keys: np.ndarray, ids: np.ndarray, avail: np.ndarray, last: np.ndarray) -> None:
        m = len(ids)
        rows = slice(self.n, self.n + m)
        if self.kind == "warm":
            self.codes[rows], self.scale[rows] = quantize_int8(keys)
        else:
            self.store[rows] = keys
        self.ids[rows], self.avail[rows], self.last[rows], self.hits[rows] = ids, avail, last, 0
        self.n += m

    def _arrays(self) -> list[np.ndarray]:
        return [self.ids, self.avail, self.hits, self.last] + (
            [self.codes, self.scale] if self.kind == "warm" else [self.store])

    def take(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Remove ``rows`` and return their (keys, ids, avail, last).

        The holes they leave below the new end are filled with the surviving rows from the end (swap-remove):
        O(len(rows)) moves instead of compacting the whole tier on every overflow. Row order carries no
        meaning (victims are chosen by clock, ties by entry id).
        """
        rows = np.asarray(rows, np.int64)
        out = (self.get(rows), self.ids[rows].copy(), self.avail[rows].copy(), self.last[rows].copy())
        rows = np.unique(rows)
        m = self.n - len(rows)
        holes = rows[rows < m]
        tail = np.arange(m, self.n)
        movers = tail[~np.isin(tail, rows)]  # as many survivors above the new end as holes below it
        if holes.size:
            for a in self._arrays():
                a[holes] = a[movers]
        self.n = m
        return out

    def oldest(self, count: int) -> np.ndarray:
        """The ``count`` least recently used rows (ties: lowest entry id, i.e. inserted first); O(n)."""
        return lru_order(self.last[: self.n], self.ids[: self.n], count)

    def topk(self, q: np.ndarray, as_of: np.ndarray | None, k: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, rows) of this tier for each query, ``-inf``/-1 where fewer qualify.

        Scored ``chunk`` rows at a time with a running top-k, so memory stays at (q, chunk + 2k) whatever
        the tier's size (a cold tier of millions of rows is paged in chunk by chunk, never held as scores).
        """
        best_s = np.full((len(q), k), _NEG, np.float32)
        best_r = np.full((len(q), k), -1, np.int64)
        for s in range(0, self.n, chunk):
            e = min(s + chunk, self.n)
            if self.kind == "warm":
                sc = (q @ self.codes[s:e].T.astype(np.float32)) * self.scale[s:e]
            else:
                sc = q @ np.asarray(self.store[s:e]).T
            sc = sc.astype(np.float32, copy=False)
            if as_of is not None:
                sc[self.avail[None, s:e] > as_of[:, None]] = _NEG
            cs, cr = _topk(sc, k)
            both_s = np.concatenate([best_s, cs], axis=1)
            both_r = np.concatenate([best_r, np.where(cr >= 0, cr + s, -1)], axis=1)
            keep = np.argpartition(-both_s, k - 1, axis=1)[:, :k]
            best_s, best_r = np.take_along_axis(both_s, keep, 1), np.take_along_axis(both_r, keep, 1)
        return best_s, best_r


class TieredMemory:
    """Keys in hot (float32), warm (int8) and cold (memory-mapped) tiers, searched together.

    >>> tm = TieredMemory(TierConfig(key_dim=8, hot_capacity=10, warm_capacity=20, cold_capacity=50))
    >>> ids = tm.add(np.random.default_rng(0).normal(size=(40, 8)))
    >>> tm.tier_sizes()
    {'hot': 10, 'warm': 20, 'cold': 10}
    """

    TIERS = ("hot", "warm", "cold")

    def __init__(self, config: TierConfig | None = None, **overrides: Any):
        self.config = cfg = config or TierConfig(**overrides)
        self._own_file = cfg.cold_path is None
        if self._own_file:
            fd, name = tempfile.mkstemp(prefix="course_cold_", suffix=".f32")
            os.close(fd)
            self.cold_path = Path(name)
        else:
            self.cold_path = Path(cfg.cold_path)
            self.cold_path.parent.mkdir(parents=True, exist_ok=True)
        d = cfg.key_dim
        self.tiers = {
            "hot": _Tier(cfg.hot_capacity, d, "hot"),
            "warm": _Tier(cfg.warm_capacity, d, "warm"),
            "cold": _Tier(cfg.cold_capacity, d, "cold", self.cold_path),
        }
        self._next_id = 0
        self._clock = 0
        self.dropped = 0

    def __len__(self) -> int:
        return sum(t.n for t in self.tiers.values())

    def tier_sizes(self) -> dict[str, int]:
        return {name: t.n for name, t in self.tiers.items()}

    def nbytes(self) -> dict[str, int]:
        """RAM per tier (cold: bytes on disk) for the filled rows."""
        h, w, c = (self.tiers[n] for n in self.TIERS)
        return {"hot": h.n * h.d * 4, "warm": w.n * (w.d + 4), "cold": c.n * c.d * 4}

    def tier_of(self, ids: Any) -> np.ndarray:
        """Tier name of each entry id ("" if dropped)."""
        ids = np.asarray(ids, np.int64).reshape(-1)
        out = np.full(len(ids), "", dtype="<U4")
        for name, t in self.tiers.items():
            out[np.isin(ids, t.ids[: t.n])] = name
        return out

    def add(self, keys: Any, available_at: Any = None) -> np.ndarray:
        """Insert unit-normalised keys into the hot tier (demoting as needed); returns their entry ids."""
        k = _unit(keys, self.config.key_dim)
        n = len(k)
        avail = to_ns(available_at, n) if available_at is not None else np.zeros(n, np.int64)
        ids = self._next_id + np.arange(n, dtype=np.int64)
        self._next_id += n
        self._clock += 1
        self._push("hot", k, ids, avail, np.full(n, self._clock))
        return ids

    def _push(self, name: str, keys, ids, avail, last) -> None:
        """Put rows into tier ``name``, first moving its least recently used rows one tier down."""
        t = self.tiers[name]
        lower = None if name == "cold" else self.TIERS[self.TIERS.index(name) + 1]
        if len(ids) > t.cap:  # more rows than the tier holds: the oldest of them go straight down
            cut = len(ids) - t.cap
            if lower is None:
                self.dropped += cut
            else:
                self._push(lower, keys[:cut], ids[:cut], avail[:cut], last[:cut])
            keys, ids, avail, last = keys[cut:], ids[cut:], avail[cut:], last[cut:]
        overflow = t.n + len(ids) - t.cap
        if overflow > 0:
            victims = t.oldest(overflow)
            out = t.take(victims)
            if lower is None:
                self.dropped += len(victims)
            else:
                self._push(lower, *out)
        t.put(keys, ids, avail, last)

    def search(self, queries: Any, k: int = 32, as_of: Any = None) -> dict[str, np.ndarray]:
        """Exact search of hot and cold, int8-approximate search of warm, merged into one top-k.

        Returns a dict of (q, k) arrays: ``ids`` (-1 invalid), ``scores``, ``tier`` (0 hot, 1 warm, 2 cold,
        -1 invalid) and ``mask``.
        """
        q = _unit(queries, self.config.key_dim)
        times = query_times(as_of, len(q), "TieredMemory.search")
        self._clock += 1
        parts_s, parts_r, parts_t = [], [], []
        for ti, name in enumerate(self.TIERS):
            s, r = self.tiers[name].topk(q, times, k, self.config.chunk_rows)
            parts_s.append(s)
            parts_r.append(r)
            parts_t.append(np.where(r >= 0, ti, -1))
        s, r, t = (np.concatenate(p, axis=1) for p in (parts_s, parts_r, parts_t))
        order = np.argsort(-s, axis=1, kind="stable")[:, :k]
        s, r, t = (np.take_along_axis(a, order, 1) for a in (s, r, t))
        mask = np.isfinite(s) & (r >= 0)
        ids = np.full(r.shape, -1, np.int64)
        for ti, name in enumerate(self.TIERS):
            tier = self.tiers[name]
            sel = mask & (t == ti)
            rows = r[sel]
            ids[sel] = tier.ids[rows]
            np.add.at(tier.hits, rows, 1)
            tier.last[rows] = self._clock
        return {"ids": ids, "scores": np.where(mask, s, 0.0).astype(np.float32), "tier": np.where(mask, t, -1),
                "mask": mask}

    def manage_tiers(self) -> dict[str, int]:
        """Promote entries with ``promote_after`` or more hits one tier up (cold->warm, warm->hot).

        Returns how many moved. A promoted entry pushes the least recently used entries of the target tier
        down, so the hot tier converges to what searches actually use.
        """
        moved = {}
        for lower, upper in (("warm", "hot"), ("cold", "warm")):
            t = self.tiers[lower]
            rows = np.flatnonzero(t.hits[: t.n] >= self.config.promote_after)
            rows = rows[np.argsort(-t.hits[rows], kind="stable")][: self.tiers[upper].cap]
            if rows.size:
                self._push(upper, *t.take(rows))
            moved[f"{lower}->{upper}"] = int(rows.size)
        return moved

    def close(self) -> None:
        """Release the memory map and delete the cold file if this object created it."""
        cold = self.tiers["cold"]
        if isinstance(cold.store, np.memmap):
            cold.store.flush()
        cold.store = np.zeros((0, self.config.key_dim), np.float32)
        cold.n = 0
        if self._own_file and self.cold_path.exists():
            self.cold_path.unlink()

    def __del__(self) -> None:  # best effort: temporary cold files should not pile up
        try:
            if getattr(self, "_own_file", False) and self.cold_path.exists():
                self.close()
        except Exception:  # noqa: BLE001
            pass
