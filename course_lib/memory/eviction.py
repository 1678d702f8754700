"""Which slots to overwrite when the memory is full.

* ``fifo``: the oldest inserts, read off a ring pointer: O(batch).
* ``lru``: the entries retrieved least recently. Adding an entry counts as using it (its clock starts at
  the add), so a new entry is as fresh as one just retrieved; ties are broken by insertion order.
* ``importance``: entries with a low priority p_i go first. With sampling, victims are drawn without
  replacement with probability proportional to p_i^-alpha (Efraimidis-Spirakis keys, vectorised), so a
  low-priority entry is likely, not certain, to go; rare high-|return| events (crashes) outlive FIFO.
  Eviction decides with what is known when it runs: the default priority is |future return|, which for an
  entry whose label is not resolved yet (``available_at`` after the eviction's time) is the future. Such
  pending entries are never ranked by it: they are protected until they resolve, and only when no resolved
  entry is left do the oldest pending entries go first (:func:`causal_importance_order`). Otherwise which
  resolved entries a query at t can still see would depend on outcomes known only after t.
  :func:`sample_by_priority` is the complementary replay sampler, P(i) = p_i^alpha / sum_j p_j^alpha.

Choosing lru/importance victims means looking at every entry, O(M). Doing that on every ``add`` made a
stream of one-row adds at M=1e5 cost 0.5 ms (lru) to 4 ms (importance) per row. :class:`VictimQueue` selects
a *block* of victims at once (at least ``capacity // 64``), ordered worst first, and later adds consume it,
so the O(M) pass is shared by many rows. A queued entry whose clock or priority changed since it was
chosen (it was retrieved, or re-prioritised) is skipped, so for lru the consumed victims are exactly the
least recently used entries; entries added after a block was chosen are considered at the next block.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["sample_by_priority"]

_EPS = 1e-12
BLOCK_DIVISOR = 64  # a victim block is at least capacity // BLOCK_DIVISOR slots


def fifo_victims(write_pos: int, capacity: int, count: int) -> np.ndarray:
    return (write_pos + np.arange(count)) % capacity


_INT_MAX = np.iinfo(np.int64).max


def _smallest(key: np.ndarray, count: int, exclude: np.ndarray | None) -> np.ndarray:
    """Positions of the ``count`` smallest of the distinct int64 ``key``, smallest first, never ``exclude``.

    Keys are made distinct by the callers on purpose: numpy's introselect degrades to ~20x its normal cost
    on arrays that are mostly one repeated value (e.g. a whole batch stamped with one clock), which is
    exactly what a memory's clocks and default priorities look like.
    """
    if exclude is not None and exclude.size:
        key = key.copy()
        key[exclude] = _INT_MAX
    count = min(count, len(key) - (0 if exclude is None else len(exclude)))
    if count <= 0:
        return np.zeros(0, np.int64)
    picked = np.argpartition(key, count - 1)[:count] if count < len(key) else np.arange(len(key))
    return picked[np.argsort(key[picked], kind="stable")]


def lru_order(last_access: np.ndarray, insert_seq: np.ndarray, count: int,
              exclude: np.ndarray | None = None) -> np.ndarray:
    """The ``count`` least recently used slots (ties: inserted first), oldest first; O(M).

    One composite key (clock, insertion sequence) when it fits in an int64 (any realistic memory), else a
    full ``lexsort``.
    """
    if not len(last_access):
        return np.zeros(0, np.int64)
    la0, seq0 = int(last_access.min()), int(insert_seq.min())
    span_la, span_seq = int(last_access.max()) - la0 + 1, int(insert_seq.max()) - seq0 + 1
    if span_la * span_seq < 1 << 62:
        return _smallest((last_access - la0) * span_seq + (insert_seq - seq0), count, exclude)
    order = np.lexsort((insert_seq, last_access))  # pragma: no cover - clocks beyond 2^62 combined
    if exclude is not None and exclude.size:  # pragma: no cover
        order = order[~np.isin(order, exclude)]
    return order[:count]  # pragma: no cover


def importance_order(priority: np.ndarray, count: int, alpha: float, sampling: bool, rng: np.random.Generator,
                     exclude: np.ndarray | None = None) -> np.ndarray:
    """``count`` victims by priority, first victim first; O(M).

    Deterministic: the lowest p_i (ties: lowest slot). Sampling: the Efraimidis-Spirakis keys
    log(u) * p^alpha, largest first, i.e. a weighted sample without replacement with weights p^-alpha, in
    the order it was drawn.
    """
    p = np.maximum(priority.astype(np.float32), np.float32(_EPS))
    if sampling:
        key = -np.log(rng.random(len(p))) * p.astype(np.float64) ** alpha  # smaller = evicted first
        key = np.nan_to_num(key, nan=np.inf).view(np.int64)  # positive floats: bit patterns keep the order
    else:  # float32 bits of a positive number (< 2^31) in the high word, the slot breaks ties
        key = (np.nan_to_num(p, nan=np.inf).view(np.int32).astype(np.int64) << 31) | np.arange(len(p))
    return _smallest(key, count, exclude)


def causal_importance_order(priority: np.ndarray, available_at: np.ndarray, insert_seq: np.ndarray, now: int,
                            count: int, alpha: float, sampling: bool, rng: np.random.Generator,
                            exclude: np.ndarray | None = None) -> np.ndarray:
    """:func:`importance_order` over the entries resolved by ``now`` (``available_at <= now``), then the
    oldest pending entries (by insertion) if more victims are needed: a pending entry's priority is never
    read, so the choice depends on nothing unknown at ``now``."""
    ex = np.zeros(0, np.int64) if exclude is None else np.asarray(exclude, np.int64)
    pending = np.flatnonzero(available_at > now)
    first = importance_order(priority, count, alpha, sampling, rng, np.concatenate([ex, pending]))
    if len(first) >= count or not len(pending):
        return first
    resolved = np.flatnonzero(available_at <= now)
    rest = _smallest(insert_seq, count - len(first), np.concatenate([ex, resolved]))
    return np.concatenate([first, rest])


class VictimQueue:
    """Victims selected in blocks and consumed in order by later adds (see the module docstring)."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.slots = np.zeros(0, np.int64)
        self.stamp: np.ndarray = np.zeros(0)
        self.pos = 0

    def __len__(self) -> int:
        return len(self.slots) - self.pos

    def take(self, count: int, block: int, select: Callable[[int, np.ndarray], np.ndarray],
             state: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """``count`` distinct victims.

        Args:
            block: the smallest block to select when the queue runs dry.
            select: ``select(n, exclude)`` -> up to n slots, first victim first, never one of ``exclude``.
            state: the per-slot value whose change since selection makes a queued victim stale
                (lru: last access; importance: priority).
        """
        taken: list[np.ndarray] = []
        got = 0
        while got < count:
            if self.pos >= len(self.slots):
                exclude = np.concatenate(taken) if taken else np.zeros(0, np.int64)
                self.slots = np.asarray(select(max(count - got, block), exclude), np.int64)
                self.stamp, self.pos = state(self.slots).copy(), 0
                if not len(self.slots):
                    raise RuntimeError(f"no eviction victims left: asked for {count}, found {got}")
            stop = min(self.pos + count - got, len(self.slots))
            cand = self.slots[self.pos:stop]
            now, then = state(cand), self.stamp[self.pos:stop]
            fresh = (now == then) | (now != now) & (then != then)  # NaN priorities compare equal here
            self.pos = stop
            taken.append(cand[fresh])
            got += int(fresh.sum())
        return np.concatenate(taken)


def victim_block(capacity: int, count: int) -> int:
    return max(count, capacity // BLOCK_DIVISOR)


def sample_by_priority(priority: np.ndarray, n: int, alpha: float = 1.0, rng: np.random.Generator | None = None,
                       replace: bool = True) -> np.ndarray:
    """Draw ``n`` indices with P(i) = p_i^alpha / sum_j p_j^alpha (prioritised replay)."""
    rng = rng or np.random.default_rng()
    w = np.maximum(np.asarray(priority, np.float64), _EPS) ** alpha
    return rng.choice(len(w), size=n, replace=replace, p=w / w.sum())
