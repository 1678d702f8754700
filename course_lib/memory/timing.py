"""Measure search latency of the bank's backends (used by notebook 02; the full study is
``benchmarks/bench_memory.py``)."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .bank import ExternalMemoryBank
from .config import MemoryConfig
from .time_filter import NO_TIME_FILTER

__all__ = ["jittered_keys", "latency_table"]


def jittered_keys(base: np.ndarray, m: int, noise: float = 0.02, seed: int = 0) -> np.ndarray:
    """``m`` keys resampled from ``base`` rows plus Gaussian noise: a big memory with realistic structure
    from a small data set (only for timing and recall studies, never for trading)."""
    rng = np.random.default_rng(seed)
    base = np.asarray(base, np.float32)
    base = base / np.linalg.norm(base, axis=1, keepdims=True)
    out = base[rng.integers(0, len(base), m)] + rng.normal(0, noise / np.sqrt(base.shape[1]), (m, base.shape[1]))
    return out.astype(np.float32)


def latency_table(keys: np.ndarray, queries: np.ndarray, sizes: Sequence[int], backends: Sequence[str],
                  k: int = 32, reps: int = 3, **config) -> pd.DataFrame:
    """Median search latency (ms per batch of ``len(queries)``) for each memory size and backend.

    Index build time of approximate backends is excluded (a warm-up search builds them); ``recall`` is
    recall@k against exact search.
    """
    from .backends import recall_at_k

    rows = []
    for m in sizes:
        exact = None
        for name in backends:
            bank = ExternalMemoryBank(MemoryConfig(key_dim=keys.shape[1], capacity=m, backend=name, **config))
            bank.add(keys[:m])
            res = bank.search(queries, k=k, as_of=NO_TIME_FILTER)  # warm-up (builds approximate indexes)
            if exact is None and name in ("numpy", "torch", "faiss", "auto"):
                exact = res.indices
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                bank.search(queries, k=k, as_of=NO_TIME_FILTER)
                times.append(time.perf_counter() - t0)
            recall = recall_at_k(res.indices, exact) if exact is not None else np.nan
            rows.append({"M": m, "backend": name, "ms": 1e3 * float(np.median(times)), "recall": recall})
    return pd.DataFrame(rows)
