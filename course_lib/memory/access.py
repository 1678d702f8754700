"""Access statistics of the memory bank: when each slot was last returned by a search, and how often.

LRU eviction forgets the slot unused for longest (:func:`.eviction.lru_order`); tiering keeps often-used
slots in the fast tier. The clock ticks once per add and once per search, so "last used" is an order of
events, not a wall-clock time.
"""

from __future__ import annotations

import numpy as np

__all__ = ["AccessLog"]


class AccessLog:
    """``last[slot]``: the clock at the slot's last write or hit; ``count[slot]``: hits since its write."""

    def __init__(self, capacity: int):
        self.last = np.zeros(capacity, dtype=np.int64)
        self.count = np.zeros(capacity, dtype=np.int64)
        self.clock = 0

    def written(self, slots: np.ndarray) -> None:
        """New entries in ``slots``: fresh counts, last used now."""
        self.clock += 1
        self.last[slots] = self.clock
        self.count[slots] = 0

    def searched(self, hit: np.ndarray, one_query: bool) -> None:
        """Count a search's results (``hit``: their slots): O(q*k), not O(M)."""
        self.clock += 1
        if not hit.size:
            return
        self.last[hit] = self.clock
        if one_query:  # one query's slots are distinct
            self.count[hit] += 1
        else:
            np.add.at(self.count, hit.reshape(-1), 1)

    def reset(self) -> None:
        self.clock = 0
        self.count[:] = 0
        self.last[:] = 0
