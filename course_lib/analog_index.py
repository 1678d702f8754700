"""Window embeddings and the causal analog index: the two pieces every analog search is built on.

:func:`embed_windows` turns each window into a vector stamped with its end time; :class:`AnalogIndex` stores
those vectors with the time each one's outcome becomes known and searches them causally, optionally as
distinct episodes. Lesson 06's studies (:mod:`course_lib.similarity`, which re-exports both) and the kNN
analog strategies (:mod:`course_lib.backtest.strategies`) import them from here, so neither of those two
modules needs the other to be read first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .data.loaders import DataError
from .data.windows import WindowSet
from .memory.time_filter import query_times, to_ns

__all__ = ["EMBEDDING_DESCRIPTIONS", "AnalogHits", "AnalogIndex", "WindowEmbedding", "embed_windows"]

#: What each window description keeps and what it throws away (the lesson's table).
EMBEDDING_DESCRIPTIONS: dict[str, str] = {
    "raw": "the last `lookback` bars of scaled features, flattened: keeps level, amplitude (hence volatility) "
    "and shape; two calm windows look alike even if their paths differ",
    "shape": "each feature z-normalised over the window (mean 0, std 1), flattened: keeps only the shape; "
    "discards level and amplitude, so a calm and a violent market with the same path match",
    "stats": "per feature: mean, std, min, max and last value over the window: keeps level and volatility, "
    "discards the order of the bars (a fall then a rise equals a rise then a fall)",
    "memory_keys": "the trained transformer's memory keys: what the model learned to compare; opaque, and "
    "only as good as the training period it was fitted on",
}


# ----------------------------------------------------------------------------------------- embeddings
@dataclass(frozen=True)
class WindowEmbedding:
    """One vector per window, stamped with the window's times.

    Attributes:
        vectors: ``(n, d)`` float32.
        end_time: the window's last bar (the moment it describes).
        available_at: when the window's own label (``windows.horizon`` bars later) is known.
        end_pos: bar position of ``end_time`` in the window set's feature frame.
        method, lookback: how the vectors were made (see :data:`EMBEDDING_DESCRIPTIONS`).
    """

    vectors: np.ndarray
    end_time: pd.DatetimeIndex
    available_at: pd.DatetimeIndex
    end_pos: np.ndarray
    method: str
    lookback: int

    def __len__(self) -> int:
        return len(self.vectors)


def _memory_keys(windows: WindowSet, trainer: Any, batch_size: int = 512) -> np.ndarray:
    import torch

    model = trainer.model
    c = trainer.model_config
    if windows.seq_len != c.seq_len or windows.n_features != c.input_dim:
        raise ValueError(
            f"the trainer expects windows of {c.seq_len} bars x {c.input_dim} features, got "
            f"{windows.seq_len} x {windows.n_features}; build the windows with the trainer's seq_len and scaler."
        )
    was = model.training
    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(windows), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(windows.X[i : i + batch_size])).to(trainer.device)
            out.append(model.memory_keys(xb).float().cpu().numpy())
    model.train(was)
    return np.concatenate(out) if out else np.zeros((0, c.key_dim), np.float32)


def embed_windows(
    windows: WindowSet, method: str = "raw", lookback: int | None = None, trainer: Any = None
) -> WindowEmbedding:
    """Describe each window by a vector (see :data:`EMBEDDING_DESCRIPTIONS` for what each keeps and loses).

    Args:
        windows: scaled windows (:func:`course_lib.make_windows` on scaler-transformed features).
        method: ``"raw"``, ``"shape"``, ``"stats"`` or ``"memory_keys"`` (needs ``trainer``).
        lookback: compare only the last ``lookback`` bars (default: the whole window). Ignored by
            ``memory_keys``, which reads the whole window the model was trained on.
        trainer: a fitted :class:`course_lib.MemoryTransformerTrainer` for ``memory_keys``.

    Each vector depends on its own window's bars only, so it is as causal as the features it is made of.
    """
    L = windows.seq_len if lookback is None else int(lookback)
    if not 1 <= L <= windows.seq_len:
        raise ValueError(f"lookback must be in 1..{windows.seq_len} (the window length), got {lookback}.")
    x = np.asarray(windows.X[:, -L:, :], dtype=np.float32)
    if method == "raw":
        vec = x.reshape(len(windows), -1)
    elif method == "shape":
        mu = x.mean(axis=1, keepdims=True)
        sd = x.std(axis=1, keepdims=True)
        vec = np.where(sd > 1e-8, (x - mu) / np.where(sd > 1e-8, sd, 1.0), 0.0).reshape(len(windows), -1)
    elif method == "stats":
        vec = np.concatenate([x.mean(axis=1), x.std(axis=1), x.min(axis=1), x.max(axis=1), x[:, -1, :]], axis=1)
    elif method == "memory_keys":
        if trainer is None:
            raise ValueError("method='memory_keys' needs trainer=<a fitted MemoryTransformerTrainer>.")
        vec = _memory_keys(windows, trainer)
        L = windows.seq_len
    else:
        raise ValueError(f"unknown method {method!r}; choose from {sorted(EMBEDDING_DESCRIPTIONS)}.")
    return WindowEmbedding(
        vectors=np.ascontiguousarray(vec, dtype=np.float32),
        end_time=pd.DatetimeIndex(windows.end_time),
        available_at=pd.DatetimeIndex(windows.available_at),
        end_pos=np.asarray(windows.end_pos, dtype=np.int64),
        method=method,
        lookback=L,
    )


# -------------------------------------------------------------------------------------------- index
@dataclass(frozen=True)
class AnalogHits:
    """Result of :meth:`AnalogIndex.search`: ``(n, k)`` arrays, best first; ``mask`` marks real neighbours
    (a small or young memory leaves the tail of a row empty: index -1, similarity 0, distance inf)."""

    indices: np.ndarray
    similarity: np.ndarray
    distance: np.ndarray
    mask: np.ndarray


class AnalogIndex:
    """A growing store of window vectors with the time each one's outcome becomes known, searched causally.

    ``metric="cosine"``: similarity = cosine of the angle (the memory bank's measure; only the direction of
    the vector counts), distance = chord distance ``sqrt(2 - 2 cos)``. ``metric="euclidean"``: distance =
    Euclidean (level and size count too), similarity = ``1 / (1 + d / sqrt(dim))``: 1 for a twin, 0.5 when
    the root-mean-square difference per component is one (one standard deviation of a scaled feature).

    Every entry carries ``ready_ns`` (when its outcome is known) and ``pos`` (its end bar's position on one
    bar axis, for the exclusion zone). :meth:`search` requires ``as_of``, like every memory in the course.
    """

    def __init__(self, dim: int, metric: str = "cosine"):
        if metric not in ("cosine", "euclidean"):
            raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}.")
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}.")
        self.dim = int(dim)
        self.metric = metric
        self._vec = np.zeros((0, dim), np.float32)
        self._sq = np.zeros(0, np.float32)
        self.end_ns = np.zeros(0, np.int64)
        self.ready_ns = np.zeros(0, np.int64)
        self.pos = np.zeros(0, np.int64)
        self.outcome = np.zeros(0, np.float64)

    def __len__(self) -> int:
        return len(self._vec)

    def __repr__(self) -> str:
        return f"AnalogIndex({len(self)} entries, dim={self.dim}, metric={self.metric!r})"

    def _prep(self, vectors: Any) -> np.ndarray:
        v = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32).reshape(-1, self.dim))
        if not np.isfinite(v).all():
            raise DataError("analog vectors contain NaN or inf; check the features the windows were cut from.")
        if self.metric == "cosine":
            v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        return v

    def add(self, vectors: Any, end_ns: Any, ready_ns: Any, pos: Any, outcome: Any = None) -> np.ndarray:
        """Append entries; returns their ids (row numbers). ``ready_ns``: when each outcome is known
        (``WindowSet.available_at_ns()`` for the window's own label; int64 max for never)."""
        v = self._prep(vectors)
        n = len(v)
        end = to_ns(end_ns, n)
        ready = to_ns(ready_ns, n)
        p = np.asarray(pos, dtype=np.int64).reshape(-1)
        out = np.full(n, np.nan) if outcome is None else np.asarray(outcome, dtype=np.float64).reshape(-1)
        if not (len(end) == len(ready) == len(p) == len(out) == n):
            raise ValueError("vectors, end_ns, ready_ns, pos and outcome need one row per entry.")
        if (ready < end).any():
            raise ValueError("an entry's outcome cannot be known before its window ends (ready_ns < end_ns).")
        start = len(self)
        self._vec = np.concatenate([self._vec, v])
        self._sq = np.concatenate([self._sq, np.einsum("ij,ij->i", v, v)])
        self.end_ns = np.concatenate([self.end_ns, end])
        self.ready_ns = np.concatenate([self.ready_ns, ready])
        self.pos = np.concatenate([self.pos, p])
        self.outcome = np.concatenate([self.outcome, out])
        return np.arange(start, len(self), dtype=np.int64)

    def _scores(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dots = (self._vec @ q.T).T  # (M, d) x (d, n): a matrix-vector product for one query
        if self.metric == "cosine":
            sim = np.clip(dots, -1.0, 1.0)
            return sim, np.sqrt(np.maximum(2.0 - 2.0 * sim, 0.0))
        qq = np.einsum("ij,ij->i", q, q)[:, None]
        d2 = np.maximum(qq - 2.0 * dots + self._sq[None, :], 0.0)
        d = np.sqrt(d2)
        return 1.0 / (1.0 + d / math.sqrt(self.dim)), d

    def search(
        self, queries: Any, k: int = 5, as_of: Any = None, query_pos: Any = None, exclusion: int = 0
    ) -> AnalogHits:
        """The ``k`` most similar entries per query whose outcome was known at ``as_of``.

        Args:
            as_of: one time for all queries or one per query (required; :data:`course_lib.NO_TIME_FILTER`
                to opt out, for studies only).
            query_pos: each query's bar position on the entries' bar axis (needed when ``exclusion > 0``).
            exclusion: distinct episodes: no two returned entries, and no entry and the query, end fewer
                than ``exclusion`` bars apart (0: plain k nearest neighbours, overlapping windows and all).
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}.")
        if exclusion < 0:
            raise ValueError(f"exclusion must be >= 0 bars, got {exclusion}.")
        q = self._prep(queries)
        n, m = len(q), len(self)
        t = query_times(as_of, n, where="AnalogIndex.search")
        qpos = None
        if exclusion > 0:
            if query_pos is None:
                raise ValueError("exclusion > 0 needs query_pos (each query's bar position) to keep neighbours "
                                 "away from the query itself.")  # fmt: skip
            qpos = np.broadcast_to(np.asarray(query_pos, dtype=np.int64).reshape(-1), (n,))
        idx = np.full((n, k), -1, dtype=np.int64)
        sim = np.zeros((n, k))
        dist = np.full((n, k), np.inf)
        if m == 0 or n == 0:
            return AnalogHits(idx, sim, dist, idx >= 0)
        chunk = max(1, 2_000_000 // m)
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            s, d = self._scores(q[lo:hi])
            ok = np.ones_like(s, dtype=bool) if t is None else self.ready_ns[None, :] <= t[lo:hi, None]
            if qpos is not None:
                ok &= np.abs(self.pos[None, :] - qpos[lo:hi, None]) >= exclusion
            s_masked = np.where(ok, s, -np.inf)
            if exclusion == 0:
                kk = min(k, m)
                part = np.argpartition(-s_masked, kk - 1, axis=1)[:, :kk]
                top = np.take_along_axis(s_masked, part, axis=1)
                order = np.argsort(-top, axis=1, kind="stable")
                part = np.take_along_axis(part, order, axis=1)
                good = np.isfinite(np.take_along_axis(s_masked, part, axis=1))
                idx[lo:hi, :kk] = np.where(good, part, -1)
                sim[lo:hi, :kk] = np.where(good, np.take_along_axis(s, part, axis=1), 0.0)
                dist[lo:hi, :kk] = np.where(good, np.take_along_axis(d, part, axis=1), np.inf)
                continue
            for r in range(hi - lo):
                chosen = _distinct_top(s_masked[r], self.pos, k, exclusion)
                j = len(chosen)
                idx[lo + r, :j] = chosen
                sim[lo + r, :j] = s[r, chosen]
                dist[lo + r, :j] = d[r, chosen]
        return AnalogHits(idx, sim, dist, idx >= 0)


def _distinct_top(scores: np.ndarray, pos: np.ndarray, k: int, exclusion: int) -> np.ndarray:
    """Greedy: best candidate first, skip any that ends within ``exclusion`` bars of one already taken.

    Taking an episode blocks the bars ``(p - exclusion, p + exclusion)`` on a boolean line, so each candidate
    costs one lookup whatever ``k`` is.
    """
    n_ok = int(np.isfinite(scores).sum())
    if n_ok == 0:
        return np.zeros(0, dtype=np.int64)
    lo = int(pos.min())
    blocked = np.zeros(int(pos.max()) - lo + 2 * exclusion + 1, dtype=bool)
    want = min(n_ok, k * (2 * exclusion + 1))
    taken: list[int] = []
    seen = 0
    while True:
        if want >= n_ok:
            cand = np.argsort(-scores, kind="stable")[:n_ok]
        else:
            part = np.argpartition(-scores, want - 1)[:want]
            cand = part[np.argsort(-scores[part], kind="stable")]
        # candidates already examined in a narrower pass keep their verdicts: resume after them
        for c, p in zip(cand[seen:].tolist(), (pos[cand[seen:]] - lo + exclusion).tolist()):
            if blocked[p]:
                continue
            taken.append(c)
            if len(taken) == k:
                return np.asarray(taken, dtype=np.int64)
            blocked[p - exclusion + 1 : p + exclusion] = True
        if want >= n_ok:
            return np.asarray(taken, dtype=np.int64)
        seen = len(cand)
        want = min(n_ok, want * 4)
