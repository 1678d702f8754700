"""A kNN analog memory for direction: "what followed the past windows most like this one?", searched causally.

Lesson 09's studies and the ablation ladder's ``knn_analog`` arm share it. It sits below both (it needs only
the windows and the analog index), so neither has to import the other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .analog_index import AnalogIndex, embed_windows
from .data.windows import WindowSet

__all__ = ["KNNDirection", "count_retrievals", "knn_direction", "recency_weights"]


def _concat(a: Any, b: Any) -> Any:
    """Windows of one series: ``a`` then those of ``b`` that ``a`` does not hold (same end time = same window)."""
    new = ~np.isin(b.end_time_ns(), a.end_time_ns())
    b = b.subset(np.flatnonzero(new))
    return WindowSet(np.concatenate([a.X, b.X]), np.concatenate([a.y, b.y]), a.end_time.append(b.end_time),
                        a.available_at.append(b.available_at), np.concatenate([a.end_pos, b.end_pos]),
                        a.feature_names, a.horizon, a.seq_len)


def recency_weights(similarity: Any, age_bars: Any, temperature: float = 0.05,
                    half_life: float | None = None) -> np.ndarray:
    """Weights over neighbours (last axis): softmax of similarity / temperature, times ``0.5 ** (age / half_life)``.

    ``age_bars`` is how many bars before the query an entry's window ended (never negative: only the past is
    retrieved), so the weights of a query depend on its own time and the past only. ``half_life=None``: no
    decay. NaN similarities (empty slots) get weight 0; a row with no neighbour is all zeros.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    if half_life is not None and not half_life > 0:
        raise ValueError(f"half_life must be > 0 bars (or None for no decay), got {half_life}.")
    s = np.asarray(similarity, dtype=float)
    age = np.broadcast_to(np.asarray(age_bars, dtype=float), s.shape)
    if (age[np.isfinite(s)] < 0).any():
        raise ValueError("an entry younger than its query (age < 0) is look-ahead: search with as_of.")
    logit = s / temperature
    if half_life is not None:
        logit = logit - math.log(2.0) * age / half_life
    logit = np.where(np.isfinite(s), logit, -np.inf)
    peak = np.max(logit, axis=-1, keepdims=True)
    w = np.exp(logit - np.where(np.isfinite(peak), peak, 0.0))
    total = w.sum(axis=-1, keepdims=True)
    return np.divide(w, total, out=np.zeros_like(w), where=total > 0)


@dataclass
class KNNDirection:
    """What :func:`knn_direction` found: ``signal`` (weighted mean outcome of the neighbours, the fallback
    where none was eligible), ``rows`` (n, k) memory rows used (-1: empty), ``weights`` (n, k),
    ``n_neighbors`` per query, and ``memory_size`` (entries the memory held)."""

    signal: np.ndarray
    rows: np.ndarray
    weights: np.ndarray
    n_neighbors: np.ndarray
    memory_size: int


def knn_direction(memory: Any, queries: Any, k: int = 16, temperature: float = 0.05,
                  half_life: float | None = None, lookback: int = 12, online: bool = False,
                  pool: int = 4, fallback: float = 1e-9) -> KNNDirection:
    """A kNN analog memory: "what followed the past windows most like this one?", searched causally.

    ``memory``: labelled past windows (its rows are the entries). ``online=True`` also stores the query
    windows; each becomes retrievable when its own label is known (``available_at``), which is what a live
    system does. Every search passes ``as_of`` = the query's end time. Keys: the last ``lookback`` bars of
    the scaled features (cosine). With ``half_life`` the ``pool * k`` most similar candidates are re-ranked by
    similarity and age (:func:`recency_weights`) and the best ``k`` kept. A query with no eligible neighbour
    gets ``fallback`` (a tiny positive number: "up", the long-run drift of most markets).
    """
    mem = _concat(memory, queries) if online else memory
    n = len(queries)
    if len(mem) == 0:
        return KNNDirection(np.full(n, fallback), np.full((n, k), -1), np.zeros((n, k)), np.zeros(n, int), 0)
    lb = min(lookback, mem.seq_len)
    keys = embed_windows(mem, "raw", lb).vectors
    index = AnalogIndex(keys.shape[1], "cosine")
    index.add(keys, mem.end_time_ns(), mem.available_at_ns(), mem.end_pos, np.asarray(mem.y, float))
    kk = k * pool if half_life is not None else k
    hits = index.search(embed_windows(queries, "raw", lb).vectors, k=kk, as_of=queries.end_time_ns())
    rows = np.where(hits.mask, hits.indices, -1)
    sim = np.where(hits.mask, hits.similarity, np.nan)
    age = np.where(hits.mask, queries.end_pos[:, None] - mem.end_pos[np.maximum(rows, 0)], 0)
    if half_life is not None:  # re-rank the candidates by similarity and age, keep the best k
        logit = np.where(hits.mask, sim / temperature - math.log(2.0) * age / half_life, -np.inf)
        order = np.argsort(-logit, axis=1, kind="stable")[:, :k]
        rows, sim, age = (np.take_along_axis(a, order, axis=1) for a in (rows, sim, age))
    w = recency_weights(sim, age, temperature, half_life)
    outcome = np.where(rows >= 0, np.asarray(mem.y, float)[np.maximum(rows, 0)], 0.0)
    n_nb = (rows >= 0).sum(axis=1)
    signal = np.where(n_nb > 0, (w * outcome).sum(axis=1), fallback)
    return KNNDirection(signal, rows, w, n_nb, len(mem))


def count_retrievals(memory: Any, queries: Any, k: int = 16, lookback: int = 12) -> np.ndarray:
    """How often each memory entry is among a query's ``k`` nearest eligible neighbours (causal: ``as_of``).

    Pass the queries of the period you may look at (training and validation windows): the counts then
    depend on nothing later, so a pruning decision made with them is one you could have made then.
    """
    hit = knn_direction(memory, queries, k=k, lookback=lookback)
    rows = hit.rows[hit.rows >= 0]
    return np.bincount(rows, minlength=len(memory)).astype(np.int64)
