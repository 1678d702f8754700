"""Decay and the hybrid score: the arithmetic of "what should an agent remember right now?".

Kept apart from the store so a learner can read (and re-implement in the exercises) the three lines that
decide a ranking without any SQL around them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

__all__ = ["DEFAULT_WEIGHTS", "decay", "hybrid_arrays", "hybrid_scores", "minmax"]

NS_PER_DAY = 86_400 * 10**9

#: Weights of the three components of the hybrid score (Park et al., 2023, use all three at 1).
DEFAULT_WEIGHTS: dict[str, float] = {"importance": 1.0, "relevance": 1.0, "recency": 1.0}


def scalar_time_ns(t, what: str = "time") -> int:
    """Any time ``pandas.Timestamp`` accepts -> int64 nanoseconds (UTC for tz-aware times).

    The store keeps every time as an integer so comparisons in SQL are exact; NaT is refused because a
    memory operation without a time is exactly the look-ahead the course forbids.
    """
    if t is None:
        raise ValueError(f"{what} is required (simulation time, e.g. now='2024-01-02'); the store never reads "
                         "the wall clock.")
    if isinstance(t, pd.Timestamp) and t.tzinfo is None:
        return int(t.as_unit("ns").value)
    if isinstance(t, (int, np.integer)) and not isinstance(t, bool):
        return int(t)  # already nanoseconds since the epoch, as pandas.Timestamp(int) reads it
    try:
        ts = pd.Timestamp(t)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}={t!r} is not a time pandas.Timestamp understands.") from exc
    if ts is pd.NaT or pd.isna(ts):
        raise ValueError(f"{what} is NaT; pass a real time.")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return int(ts.as_unit("ns").value)


def decay(age, half_life) -> np.ndarray:
    """``0.5 ** (age / half_life)``: 1 for a new item, 1/2 after one half-life, 1/4 after two.

    ``age`` and ``half_life`` in the same unit (or both Timedeltas). Negative ages (an item from the future)
    are a bug upstream, so they raise instead of giving a recency above 1.
    """
    if isinstance(half_life, (pd.Timedelta, np.timedelta64, str)):
        half_life = pd.Timedelta(half_life).value
        age = (pd.Timedelta(age).value if isinstance(age, (pd.Timedelta, np.timedelta64, str))
               else pd.to_timedelta(np.asarray(age)).asi8)
    a = np.asarray(age, dtype=float)
    h = float(half_life)
    if not h > 0:
        raise ValueError(f"half_life must be > 0, got {half_life}.")
    if (a < 0).any():
        raise ValueError("negative age: an item created after `now` must not be scored (look-ahead).")
    out = np.power(0.5, a / h)
    return float(out) if out.ndim == 0 else out


def minmax(x) -> np.ndarray:
    """Rescale to [0, 1] over the candidates; a constant column becomes all ones (it cannot rank anyone)."""
    v = np.asarray(x, dtype=float)
    if v.size == 0:
        return v
    lo, hi = float(np.min(v)), float(np.max(v))
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        return np.ones_like(v)
    return (v - lo) / (hi - lo)


def hybrid_scores(
    importance, relevance, recency, weights: Mapping[str, float] | None = None
) -> pd.DataFrame:
    """Min-max normalise each component over the candidates, then take the weighted sum.

    ``relevance`` may be None (a search with neither text nor vector): its weight then counts for nothing.
    Returns the normalised columns and ``score`` so a ranking can always be explained.
    """
    return pd.DataFrame(hybrid_arrays(importance, relevance, recency, weights))


def hybrid_arrays(importance, relevance, recency, weights: Mapping[str, float] | None = None) -> dict[str, np.ndarray]:
    """:func:`hybrid_scores` as a dict of arrays (what the store uses on every search)."""
    w = {**DEFAULT_WEIGHTS, **(weights or {})}
    unknown = set(w) - set(DEFAULT_WEIGHTS)
    if unknown:
        raise ValueError(f"unknown weight(s) {sorted(unknown)}; use {sorted(DEFAULT_WEIGHTS)}.")
    if any(not np.isfinite(v) or v < 0 for v in w.values()):
        raise ValueError(f"weights must be finite and >= 0, got {w}.")
    imp_n = minmax(importance)
    rec_n = minmax(recency)
    rel_n = np.zeros_like(imp_n) if relevance is None else minmax(relevance)
    score = w["importance"] * imp_n + w["recency"] * rec_n + (0.0 if relevance is None else w["relevance"]) * rel_n
    return {"importance_n": imp_n, "relevance_n": rel_n, "recency_n": rec_n, "score": score}
