"""Which slots to overwrite when the memory is full.

* ``fifo``: the oldest inserts, read off a ring pointer: O(batch).
* ``lru``: the entries retrieved least recently (never retrieved counts as oldest): one vectorised
  ``argpartition`` over the filled slots, O(M) per ``add`` call (not per row).
* ``importance``: entries with a low priority p_i go first. With sampling, victims are drawn without
  replacement with probability proportional to p_i^-alpha (Efraimidis-Spirakis keys, vectorised), so a
  low-priority entry is likely, not certain, to go; rare high-|return| events (crashes) outlive FIFO.
  :func:`sample_by_priority` is the complementary replay sampler, P(i) = p_i^alpha / sum_j p_j^alpha.
"""

from __future__ import annotations

import numpy as np

__all__ = ["sample_by_priority"]

_EPS = 1e-12


def fifo_victims(write_pos: int, capacity: int, count: int) -> np.ndarray:
    return (write_pos + np.arange(count)) % capacity


def lru_victims(last_access: np.ndarray, insert_seq: np.ndarray, count: int) -> np.ndarray:
    """Least recently retrieved first; ties (e.g. never retrieved) broken by insertion order."""
    # one composite key: retrieval clock first, insertion sequence second
    order = np.lexsort((insert_seq, last_access))
    return np.sort(order[:count])


def importance_victims(priority: np.ndarray, count: int, alpha: float, sampling: bool,
                       rng: np.random.Generator) -> np.ndarray:
    p = np.maximum(priority.astype(np.float64), _EPS)
    if not sampling:
        return np.sort(np.argpartition(p, count - 1)[:count]) if count < len(p) else np.arange(len(p))
    # Efraimidis-Spirakis: keep the `count` largest u^(1/w) with w = p^-alpha  <=>  largest log(u) * p^alpha
    keys = np.log(rng.random(len(p))) * p**alpha
    return np.sort(np.argpartition(-keys, count - 1)[:count]) if count < len(p) else np.arange(len(p))


def sample_by_priority(priority: np.ndarray, n: int, alpha: float = 1.0, rng: np.random.Generator | None = None,
                       replace: bool = True) -> np.ndarray:
    """Draw ``n`` indices with P(i) = p_i^alpha / sum_j p_j^alpha (prioritised replay)."""
    rng = rng or np.random.default_rng()
    w = np.maximum(np.asarray(priority, np.float64), _EPS) ** alpha
    return rng.choice(len(w), size=n, replace=replace, p=w / w.sum())
